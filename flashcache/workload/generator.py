"""The cachebench-like generator: a WorkloadSpec into batches of operations.

Owns drawing (numpy, a batch at a time, from one seeded generator) and the per-key
properties; it touches no cache (driver.py does). The surprise: a key's size and its
value's size are functions of the key (a hash of its number and the seed), not draws per
operation, so a get after a set, or a cache-aside set after a miss, sees the size the
key always has, as an object in a real cache does; only the op, the key and the TTL are
drawn per operation.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np

from .spec import Dist, WorkloadSpec

GET, SET, DELETE = 0, 1, 2
_M64 = np.uint64(0xFFFFFFFFFFFFFFFF)


@dataclass
class Batch:
    """Operations to apply in order. ``sizes`` are value bytes (used by sets and by the
    cache-aside set after a miss); ``ttls`` seconds (0: none); ``time`` the virtual clock,
    in seconds, while the batch runs (a batch is a few milliseconds of a workload, so
    TTLs keep their meaning)."""

    ops: list[int]
    keys: list[bytes]
    sizes: list[int]
    ttls: list[float]
    time: float


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: 64 well-mixed bits per input (uint64 arrays, wrapping)."""
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def _unit(ids: np.ndarray, salt: int) -> np.ndarray:
    """A uniform [0, 1) per id, fixed by (id, salt)."""
    with np.errstate(over="ignore"):
        h = _mix(ids.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15) + np.uint64(salt & 0xFFFFFFFFFFFFFFFF))
    return (h >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def draw(d: Dist, u_part: np.ndarray, u_value: np.ndarray) -> np.ndarray:
    """Whole numbers from ``d``: ``u_part`` picks the component by weight, ``u_value`` the
    value in its range (both uniform [0, 1))."""
    w = np.array([p[0] for p in d.parts])
    lo = np.array([p[1] for p in d.parts])
    hi = np.array([p[2] for p in d.parts])
    if len(w) == 1:
        i = np.zeros(len(u_part), dtype=np.intp)
    else:
        cum = np.cumsum(w) / w.sum()
        i = np.minimum(np.searchsorted(cum, u_part, side="right"), len(w) - 1)
    lo_i, hi_i = lo[i], hi[i]
    return np.minimum(np.floor(lo_i + u_value * (hi_i - lo_i + 1)), hi_i)


class Generator:
    """Batches of operations for a bound spec (``spec.keys`` > 0)::

        gen = Generator(spec.bind(cache_bytes))
        for batch in gen.batches(1 << 12):
            ...
    """

    def __init__(self, spec: WorkloadSpec):
        if spec.keys < 1:
            raise ValueError("workload: bind the spec to a cache size first (spec.bind(cache_bytes))")
        self.spec = spec
        self.rng = np.random.default_rng(spec.seed)
        self._seed = spec.seed * 0x100000001B3
        n = spec.keys
        if spec.popularity == "zipf" and spec.zipf_alpha > 0:
            p = np.arange(1, n + 1, dtype=np.float64) ** -spec.zipf_alpha
            self._cdf = np.cumsum(p)
            self._cdf /= self._cdf[-1]
        else:
            self._cdf = None
        self._op_cdf = np.cumsum(spec.ops)
        self._t = 0.0
        self._step = 1.0 / spec.rate

    # -- per key -----------------------------------------------------------------------------
    def key_sizes(self, ids: np.ndarray) -> np.ndarray:
        return draw(self.spec.key_size, _unit(ids, self._seed + 1), _unit(ids, self._seed + 2)).astype(np.int64)

    def value_sizes(self, ids: np.ndarray) -> np.ndarray:
        return draw(self.spec.value_size, _unit(ids, self._seed + 3), _unit(ids, self._seed + 4)).astype(np.int64)

    @staticmethod
    def key_bytes(i: int, size: int) -> bytes:
        """Key number ``i`` as ``size`` bytes (hex, zero-padded; longer when ``size`` is too
        short to tell the keys apart)."""
        return b"%0*x" % (size, i)

    # -- per operation -----------------------------------------------------------------------
    def ids(self, n: int) -> np.ndarray:
        """``n`` key numbers drawn by popularity (0 is the most popular under Zipf)."""
        if self._cdf is None:
            return self.rng.integers(0, self.spec.keys, n)
        return np.minimum(np.searchsorted(self._cdf, self.rng.random(n), side="right"), self.spec.keys - 1)

    def batch(self, n: int) -> Batch:
        ids = self.ids(n)
        ops = np.searchsorted(self._op_cdf, self.rng.random(n) * self._op_cdf[-1], side="right")
        ops = np.minimum(ops, DELETE)
        ks = self.key_sizes(ids)
        vs = self.value_sizes(ids)
        if self.spec.ttl.max > 0:
            ttls = draw(self.spec.ttl, self.rng.random(n), self.rng.random(n)).tolist()
        else:
            ttls = [0.0] * n
        kb = self.key_bytes
        b = Batch(ops.tolist(), [kb(i, s) for i, s in zip(ids.tolist(), ks.tolist())], vs.tolist(), ttls,
                  self._t)
        self._t += n * self._step
        return b

    def batches(self, n: int = 4096) -> Iterator[Batch]:
        while True:
            yield self.batch(n)
