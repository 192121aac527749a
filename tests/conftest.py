"""Shared pytest hooks: the crash tests' figures in the terminal summary."""
from __future__ import annotations


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    from tests.engines.crash_harness import REPORT
    if REPORT:
        terminalreporter.section("crash figures")
        for line in REPORT:
            terminalreporter.write_line(line)
