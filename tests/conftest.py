"""Fixtures the Cache tests share: a FakeClock, and a Cache on the emulated device of
tests.test_cache.cfg that runs on it. Defined here so that a test module takes them as
arguments rather than importing them (tests/test_cache_api.py did, which redefines them).
And the crash tests' figures in pytest's terminal summary."""
from __future__ import annotations

import pytest

import flashcache
from tests.clock import FakeClock
from tests.test_cache import cfg


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def cache(tmp_path, clock):
    c = flashcache.Cache(cfg(tmp_path), clock=clock)
    yield c
    c.close()


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    from tests.engines.crash_harness import REPORT
    if REPORT:
        terminalreporter.section("crash figures")
        for line in REPORT:
            terminalreporter.write_line(line)
