"""The DRAM item tier: an LRU of items under a byte budget, charged honestly.

Owns the in-memory items and their recency; it does no I/O and knows nothing of flash.
Items pushed out by the budget are *returned* to the caller (the Cache offers them to the
flash engines through admission). The surprise: the budget counts what Python really
spends per item (key and value objects plus dict, list-node and tuple overhead, measured
in tests/test_dram.py), not just len(key) + len(value).
"""
from __future__ import annotations

import sys
import threading
from collections import OrderedDict
from typing import Callable, Iterable, NamedTuple

# OrderedDict entry + linked-list node + the (value, expiry) tuple + a float: measured at
# ~185 B on CPython 3.11 x86_64; tests/test_dram.py checks the charge covers reality.
ITEM_OVERHEAD = 200


class Evicted(NamedTuple):
    """An item the budget pushed out (a tuple: cheap to make on the hot path)."""

    key: bytes
    value: bytes
    expiry: float  # absolute, seconds since the epoch; 0 = never
    clean: bool = False  # flash already holds this very item (it was promoted from there)


# keys and values are bytes: sys.getsizeof(b) == len(b) + the bytes header, so the charge
# is plain arithmetic on the hot path
_FIXED = 2 * sys.getsizeof(b"") + ITEM_OVERHEAD


def item_charge(key: bytes, value: bytes) -> int:
    """Bytes of DRAM one item costs the tier (key and value are bytes)."""
    return len(key) + len(value) + _FIXED


class DramTier:
    """LRU with a byte budget. Thread-safe; no method does I/O or waits.

    ``set`` returns the items the budget pushed out, oldest first, so the caller can demote
    them. Expired items are dropped (not demoted) when met.
    """

    def __init__(self, capacity_bytes: int, clock: Callable[[], float]):
        if capacity_bytes < 0:
            raise ValueError(f"DRAM tier capacity {capacity_bytes} must be >= 0")
        self.capacity = capacity_bytes
        self._clock = clock
        self._items: OrderedDict[bytes, tuple[bytes, float, bool]] = OrderedDict()  # value, expiry, clean
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0
        self.evictions = 0
        self.expired = 0

    def __len__(self) -> int:
        return len(self._items)

    @property
    def used_bytes(self) -> int:
        """Bytes charged for the items held (never above ``capacity``)."""
        return self._bytes

    def get(self, key: bytes) -> bytes | None:
        """The value, most recent now; None if absent or expired (an expired item is dropped)."""
        with self._lock:
            ent = self._items.get(key)
            if ent is None:
                self.misses += 1
                return None
            value, expiry, _ = ent
            if expiry and expiry <= self._clock():
                self._drop(key, value)
                self.expired += 1
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return value

    def peek_expiry(self, key: bytes) -> float | None:
        """The item's absolute expiry (0 = never) without touching recency; None if absent."""
        with self._lock:
            ent = self._items.get(key)
            return None if ent is None else ent[1]

    def set(self, key: bytes, value: bytes, expiry: float, clean: bool = False) -> list[Evicted]:
        """Store an item (replacing any), most recent. ``clean``: flash holds this very
        item already, so evicting it needs no flash write. Returns what the budget pushed
        out, oldest first (an item too big for the whole budget comes straight back)."""
        charge = len(key) + len(value) + _FIXED
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._bytes -= len(key) + len(old[0]) + _FIXED
            return self._put(key, value, expiry, clean, charge)

    def add(self, key: bytes, value: bytes, expiry: float, clean: bool = True) -> tuple[bool, list[Evicted]]:
        """Store an item only if the key is absent (a promotion from flash must not
        overwrite a newer set that raced it). Returns (added, evicted)."""
        charge = len(key) + len(value) + _FIXED
        with self._lock:
            if key in self._items:
                return False, []
            return True, self._put(key, value, expiry, clean, charge)

    def _put(self, key: bytes, value: bytes, expiry: float, clean: bool, charge: int) -> list[Evicted]:
        out: list[Evicted] = []
        if charge > self.capacity:
            # Too big for DRAM at all: hand it straight to flash.
            out.append(Evicted(key, value, expiry, clean))
            return out
        items = self._items
        items[key] = (value, expiry, clean)
        self._bytes += charge
        if self._bytes <= self.capacity:
            return out
        now = None
        while self._bytes > self.capacity:
            k, (v, e, cl) = items.popitem(last=False)
            self._bytes -= len(k) + len(v) + _FIXED
            if e:
                now = self._clock() if now is None else now
                if e <= now:
                    self.expired += 1
                    continue
            self.evictions += 1
            out.append(Evicted(k, v, e, cl))
        return out

    def delete(self, key: bytes) -> bool:
        """Drop ``key``; True if it was held."""
        with self._lock:
            ent = self._items.pop(key, None)
            if ent is None:
                return False
            self._bytes -= item_charge(key, ent[0])
            return True

    def touch(self, key: bytes, expiry: float) -> bool:
        """Give a live item a new expiry (it becomes dirty: flash's copy has the old one); False if absent."""
        with self._lock:
            ent = self._items.get(key)
            if ent is None or (ent[1] and ent[1] <= self._clock()):
                return False
            self._items[key] = (ent[0], expiry, False)   # flash's copy has the old expiry
            self._items.move_to_end(key)
            return True

    def drain(self) -> Iterable[Evicted]:
        """Remove and yield every live item, least recent first (for a clean shutdown)."""
        with self._lock:
            items, self._items, self._bytes = self._items, OrderedDict(), 0
        now = self._clock()
        for k, (v, e, cl) in items.items():
            if not e or e > now:
                yield Evicted(k, v, e, cl)

    def _drop(self, key: bytes, value: bytes) -> None:
        del self._items[key]
        self._bytes -= item_charge(key, value)

    def stats(self) -> dict:
        """items, bytes, capacity_bytes, hits, misses, evictions, expired."""
        with self._lock:
            return {"items": len(self._items), "bytes": self._bytes, "capacity_bytes": self.capacity,
                    "hits": self.hits, "misses": self.misses, "evictions": self.evictions,
                    "expired": self.expired}
