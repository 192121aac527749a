"""Applying a workload to a cache through its public API (get, set, delete), as an
application would: the experiment measures the whole stack, not an engine.

Owns the per-operation loop, cache-aside (a get that misses is followed by a set of the
key's value), the virtual clock the cache runs on, and the counters of what was done.
The surprise: the cache's clock is the workload's (``VirtualClock``), not the wall's, so
a TTL of 5 minutes means 5 minutes of workload however fast or slow the replay runs.
"""
from __future__ import annotations

from dataclasses import dataclass, fields

from .generator import DELETE, GET, SET, Batch


class VirtualClock:
    """A clock the driver moves: pass it as ``Cache(config, clock=clock)``."""

    __slots__ = ("t",)

    def __init__(self, t: float = 0.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


@dataclass
class Counts:
    ops: int = 0
    gets: int = 0
    hits: int = 0
    sets: int = 0             # sets the workload asked for
    aside_sets: int = 0       # sets after a miss (cache-aside)
    deletes: int = 0
    item_bytes_set: int = 0   # key + value bytes of every set
    too_large: int = 0        # sets the cache refused (item larger than flash takes)
    wrong_size: int = 0       # hits whose value had not the key's size (must stay 0)

    def minus(self, other: "Counts") -> "Counts":
        return Counts(*(getattr(self, f.name) - getattr(other, f.name) for f in fields(self)))

    def copy(self) -> "Counts":
        return Counts(*(getattr(self, f.name) for f in fields(self)))

    @property
    def hit_ratio(self) -> float | None:
        return self.hits / self.gets if self.gets else None


class Driver:
    """Runs batches on ``cache``. ``check_sizes``: a hit's value must have the size the
    batch gives for its key (true of the generator, whose sizes are per key; not of
    traces, where a key's size may change)."""

    def __init__(self, cache, clock: VirtualClock, *, cache_aside: bool = True, check_sizes: bool = False):
        self.cache = cache
        self.clock = clock
        self.cache_aside = cache_aside
        self.check_sizes = check_sizes
        self.counts = Counts()
        self._max = cache.max_value_size
        self._buf = (bytes(range(251)) * (self._max // 251 + 1))[:self._max]

    def _set(self, key: bytes, size: int, ttl: float) -> bool:
        if size > self._max:
            self.counts.too_large += 1
            return False
        try:
            if ttl:
                self.cache.set(key, self._buf[:size], ttl)
            else:
                self.cache.set(key, self._buf[:size])
        except ValueError:              # larger than the flash engines take, or the key too long
            self.counts.too_large += 1
            return False
        self.counts.item_bytes_set += len(key) + size
        return True

    def apply(self, b: Batch) -> None:
        self.clock.t = b.time
        c = self.counts
        get, delete, put = self.cache.get, self.cache.delete, self._set
        aside, check = self.cache_aside, self.check_sizes
        gets = hits = sets = aside_sets = deletes = wrong = 0
        for op, key, size, ttl in zip(b.ops, b.keys, b.sizes, b.ttls):
            if op == GET:
                gets += 1
                v = get(key)
                if v is not None:
                    hits += 1
                    if check and len(v) != size:
                        wrong += 1
                elif aside and put(key, size, ttl):
                    aside_sets += 1
            elif op == SET:
                if put(key, size, ttl):
                    sets += 1
            elif op == DELETE:
                deletes += 1
                delete(key)
        c.ops += len(b.ops)
        c.gets += gets
        c.hits += hits
        c.sets += sets
        c.aside_sets += aside_sets
        c.deletes += deletes
        c.wrong_size += wrong
