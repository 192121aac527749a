"""Admission policies: which items offered to flash are written at all.

Owns the decision only (no I/O, no engines). Each policy answers ``accept(key_hash,
size)`` and may learn from ``record_write(nbytes)`` (device bytes the engines wrote).
The surprise: rejecting is how a flash cache controls device wear; the dynamic policy
trades hit ratio for a write rate the operator sets, as CacheLib's does.
"""
from __future__ import annotations

import random
import time
from typing import Callable, Protocol


class Admission(Protocol):
    """What the router needs of an admission policy: ``accept`` decides for an item of
    ``size`` bytes with this key hash, ``record_write`` hears each device write (only when
    the policy sets ``wants_writes``), ``stats`` describes it."""

    name: str

    def accept(self, key_hash: int, size: int) -> bool: ...
    def record_write(self, nbytes: int) -> None: ...
    def stats(self) -> dict: ...


class AcceptAll:
    """Every item is admitted."""

    name = "accept-all"

    def accept(self, key_hash: int, size: int) -> bool:
        return True

    def record_write(self, nbytes: int) -> None:
        pass

    def stats(self) -> dict:
        return {"policy": self.name}


class RandomAdmission:
    """Admit each item with probability ``probability`` (seedable)."""

    name = "random"

    def __init__(self, probability: float, seed: int | None = None):
        if not 0.0 <= probability <= 1.0:
            raise ValueError(f"random admission: probability = {probability!r}: use a number from 0 to 1")
        self.probability = probability
        self._rng = random.Random(seed)

    def accept(self, key_hash: int, size: int) -> bool:
        return self._rng.random() < self.probability

    def record_write(self, nbytes: int) -> None:
        pass

    def stats(self) -> dict:
        return {"policy": self.name, "probability": self.probability}


class DynamicRandomAdmission:
    """Random admission whose probability follows a target device write rate.

    Every ``window_s`` seconds the probability is scaled by target / observed rate, by at
    most ``max_step`` (25 %) per window, as CacheLib's dynamic random policy does; larger
    items are admitted less often (probability scaled by ``(base_size / size) **
    size_bias`` for items above ``base_size``).
    """

    name = "dynamic-random"
    wants_writes = True        # the router reports every device write to record_write

    def __init__(self, target_bytes_per_s: float, *, window_s: float = 60.0, max_step: float = 0.25,
                 base_size: int = 4096, size_bias: float = 0.5, seed: int | None = None,
                 clock: Callable[[], float] = time.monotonic):
        if target_bytes_per_s <= 0:
            raise ValueError(f"dynamic random admission: target write rate {target_bytes_per_s!r} B/s: use a "
                             "positive rate, e.g. 100MiB per second")
        if window_s <= 0:
            raise ValueError(f"dynamic random admission: window {window_s!r} s: use a positive duration")
        if not 0 < max_step < 1:
            raise ValueError(f"dynamic random admission: max_step {max_step!r}: use a fraction between 0 and 1")
        self.target = float(target_bytes_per_s)
        self.window_s = window_s
        self.max_step = max_step
        self.base_size = base_size
        self.size_bias = size_bias
        self.probability = 1.0
        self._clock = clock
        self._rng = random.Random(seed)
        self._window_start = clock()
        self._window_bytes = 0
        self.last_rate: float | None = None

    def _roll(self) -> None:
        now = self._clock()
        elapsed = now - self._window_start
        if elapsed < self.window_s:
            return
        rate = self._window_bytes / elapsed
        self.last_rate = rate
        if rate > 0:
            factor = self.target / rate
            factor = min(1 + self.max_step, max(1 - self.max_step, factor))
            self.probability = min(1.0, max(1e-6, self.probability * factor))
        else:
            self.probability = min(1.0, self.probability * (1 + self.max_step))
        self._window_start = now
        self._window_bytes = 0

    def accept(self, key_hash: int, size: int) -> bool:
        self._roll()
        p = self.probability
        if size > self.base_size:
            p *= (self.base_size / size) ** self.size_bias
        return self._rng.random() < p

    def record_write(self, nbytes: int) -> None:
        self._window_bytes += nbytes

    def stats(self) -> dict:
        return {"policy": self.name, "probability": self.probability, "target_bytes_per_s": self.target,
                "last_rate_bytes_per_s": self.last_rate}


class RejectFirstAdmission:
    """Admit a key only on its second offer within a window: one-hit wonders never reach
    flash. Keys seen are tracked by hash in two generations of ``window_keys`` each (a
    key stays "seen" for between one and two windows), so memory is bounded."""

    name = "reject-first"

    def __init__(self, window_keys: int = 1 << 20):
        if window_keys < 1:
            raise ValueError(f"reject-first admission: window_keys = {window_keys!r}: use at least 1")
        self.window_keys = window_keys
        self._current: set[int] = set()
        self._previous: set[int] = set()

    def accept(self, key_hash: int, size: int) -> bool:
        if key_hash in self._current or key_hash in self._previous:
            self._current.discard(key_hash)
            self._previous.discard(key_hash)
            return True
        self._current.add(key_hash)
        if len(self._current) >= self.window_keys:
            self._previous, self._current = self._current, set()
        return False

    def record_write(self, nbytes: int) -> None:
        pass

    def stats(self) -> dict:
        return {"policy": self.name, "window_keys": self.window_keys,
                "tracked_keys": len(self._current) + len(self._previous)}


def make(policy: str, *, probability: float = 1.0, target_bytes_per_s: float = 0.0,
         window_keys: int = 1 << 20, seed: int | None = None,
         clock: Callable[[], float] = time.monotonic) -> Admission:
    """An admission policy by name: accept-all, random, dynamic-random, reject-first."""
    if policy == "accept-all":
        return AcceptAll()
    if policy == "random":
        return RandomAdmission(probability, seed)
    if policy == "dynamic-random":
        return DynamicRandomAdmission(target_bytes_per_s, seed=seed, clock=clock)
    if policy == "reject-first":
        return RejectFirstAdmission(window_keys)
    raise ValueError(f'admission policy "{policy}": use accept-all, random, dynamic-random or reject-first')
