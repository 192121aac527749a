"""Validation of the emulated SSD against the analytical WAF of docs/waf-model.md: the
experiments behind ``flashcache waf validate`` and the emulator's tests.

Owns workload drivers and the comparison only (no formulas: model.py; no FTL: ftl.py).
The surprise: the expected value uses alpha *corrected* for spare that holds no data
(the GC reserve, and on average half of each open frontier); without that correction
the measured WAF sits 1-15 % above the textbook value on a realistic RU count.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np

from . import model
from .ftl import Ftl
from .geometry import PAGE_BYTES, Geometry

GRID_OPS = (0.07, 0.12, 0.28, 0.50)
GRID_RU_PAGES = (64, 256)


def uniform_random_waf(ftl: Ftl, span: int, *, warm: int, window: int, seed: int) -> float:
    """Fill ``span`` pages, warm up with ``warm`` device writes of uniform random
    single-page overwrites, then return WAF over ``window`` more (dMBMW / dHBMW, as two
    reads of the FDP Statistics log would give it)."""
    rng = np.random.default_rng(seed)
    ftl.write(0, span)
    for _ in range(warm):
        ftl.write_pages(rng.integers(0, span, span, dtype=np.uint32))
    h0, m0, _ = ftl.counters()
    for _ in range(window):
        ftl.write_pages(rng.integers(0, span, span, dtype=np.uint32))
    h1, m1, _ = ftl.counters()
    return (m1 - m0) / (h1 - h0)


def idle_rus(g: Geometry, open_frontiers: int = 2) -> float:
    """RUs that hold no data on average: the GC reserve, and half of each open frontier
    (by default one host and one GC frontier)."""
    return g.gc_reserve_rus + open_frontiers / 2


def formula_for(g: Geometry) -> Callable[[float], float]:
    if g.gc_policy == "fifo":
        return model.waf_fifo
    return lambda a: model.waf_greedy(a, g.ru_pages)


def expected_waf(g: Geometry, span: int) -> float:
    """The formula's WAF for uniform random overwrites of ``span`` pages on ``g``."""
    return formula_for(g)(model.effective_alpha(g.physical_pages, span, g.ru_pages, idle_rus(g)))


@dataclass(frozen=True)
class Row:
    op: float
    ru_pages: int
    policy: str
    measured: float
    expected: float
    textbook: float          # the formula at the nominal alpha, no correction
    seconds: float

    @property
    def error(self) -> float:
        return self.measured / self.expected - 1


def grid(pages: int = 1 << 18, ops=GRID_OPS, ru_pages=GRID_RU_PAGES, policies=("greedy",),
         warm: int = 8, window: int = 4, seed: int = 7) -> Iterator[Row]:
    """Uniform random overwrites on a conventional SSD of ``pages`` exported pages, for
    each OP, RU size and policy."""
    for policy in policies:
        for op in ops:
            for np_ in ru_pages:
                g = Geometry(capacity_bytes=pages * PAGE_BYTES, op=op, ru_bytes=np_ * PAGE_BYTES,
                             fdp=False, gc_policy=policy)
                t = time.perf_counter()
                waf = uniform_random_waf(Ftl(g), pages, warm=warm, window=window, seed=seed)
                yield Row(op, np_, policy, waf, expected_waf(g, pages),
                          formula_for(g)(g.physical_pages / pages), time.perf_counter() - t)
