"""Reinsertion: which items of an evicted region BlockCache re-appends instead of dropping.

Owns the decision only, from the index's hit counters and a seeded RNG; the engine does
the reading and appending. The surprise: the decision is made *before* any I/O, so a
region none of whose items qualify is evicted with no read at all.

* ``hits`` (N > 0): keep items looked up at least N times since they were inserted or
  last reinserted (a reinserted item's count restarts at 0, so it must stay hot).
* ``percent`` (0 < p <= 100): keep each other item with probability p / 100, drawn from
  a numpy PCG64 generator seeded with ``seed`` (same seed, same choices).
Either, both (an item qualifying by either is kept) or neither (0 and 0: off).
"""
from __future__ import annotations

import numpy as np

MAX_HITS_THRESHOLD = 0xFF      # the index's u8 hit count saturates there


class Reinsertion:
    def __init__(self, hits: int = 0, percent: float = 0, seed: int = 0) -> None:
        self.hits = hits
        self.percent = percent
        self.seed = seed
        self.rng = np.random.default_rng(seed)

    @property
    def enabled(self) -> bool:
        return bool(self.hits or self.percent)

    def select(self, hits: np.ndarray) -> np.ndarray:
        """A boolean mask over items with these hit counts: True = reinsert."""
        keep = np.zeros(len(hits), bool)
        if self.hits:
            keep |= hits >= self.hits
        if self.percent:
            keep |= self.rng.random(len(hits)) * 100.0 < self.percent
        return keep

    def __repr__(self) -> str:
        return f"Reinsertion(hits={self.hits}, percent={self.percent}, seed={self.seed})"
