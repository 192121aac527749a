"""The tests' fake clock, defined once: engines, the DRAM tier and the cache all take a
``clock`` callable returning seconds, and the tests move time by setting ``t``."""
from __future__ import annotations


class FakeClock:
    """Returns ``t`` (seconds) when called; a test moves time by setting ``t``."""

    def __init__(self, t: float = 1_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t
