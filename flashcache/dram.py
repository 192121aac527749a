"""The DRAM item tier: an LRU of items under a byte budget, charged honestly.

Owns the in-memory items and their recency; it does no I/O and knows nothing of flash.
Items pushed out by the budget are *returned* to the caller (the Cache offers them to the
flash engines through admission). The surprise: the budget counts what Python really
spends per item (key and value objects plus dict, list-node and tuple overhead, measured
in tests/test_dram.py), not just len(key) + len(value).
"""
from __future__ import annotations

import sys
from typing import Callable, Iterable, NamedTuple

from ._hot_c import EVICTED_FIELDS, Lru

# The C node (key and value pointers, expiry, recency links) + its dict entry: measured
# well under this on CPython 3.11 x86_64; tests/test_dram.py checks the charge covers reality.
ITEM_OVERHEAD = 200


class Evicted(NamedTuple):
    """An item the budget pushed out (a tuple: cheap to make on the hot path)."""

    key: bytes
    value: bytes
    expiry: float  # absolute, seconds since the epoch; 0 = never
    clean: bool = False  # flash already holds this very item (it was promoted from there)


def _check_evicted_fields(c_fields: tuple, py_fields: tuple) -> None:
    """C builds ``Evicted`` by position (flashcache/_hot.h, EV_*): its field order must be
    Python's. Raises ImportError naming the first field that differs."""
    for i in range(max(len(c_fields), len(py_fields))):
        c = c_fields[i] if i < len(c_fields) else None
        p = py_fields[i] if i < len(py_fields) else None
        if c != p:
            raise ImportError(f"flashcache.dram.Evicted: field {i} is {p!r} in Python but {c!r} in flashcache/_hot.h "
                              "(EV_*); make them agree and rebuild (make setup)")


_check_evicted_fields(EVICTED_FIELDS, Evicted._fields)

# keys and values are bytes: sys.getsizeof(b) == len(b) + the bytes header, so the charge
# is plain arithmetic on the hot path
_FIXED = 2 * sys.getsizeof(b"") + ITEM_OVERHEAD


def item_charge(key: bytes, value: bytes) -> int:
    """Bytes of DRAM one item costs the tier (key and value are bytes)."""
    return len(key) + len(value) + _FIXED


class DramTier(Lru):
    """LRU with a byte budget. Thread-safe; no method does I/O or waits.

    ``set`` returns the items the budget pushed out, oldest first, so the caller can demote
    them. Expired items are dropped (not demoted) when met. Until the caller has written
    a dirty evicted item to flash and ``settle``d it, the tier keeps it *in flight*: not
    held (``get`` misses it, it costs no budget), but ``latest`` returns it, so a
    read-modify-write of the key under its lock (Cache) finds the newest value even in
    the moment when neither DRAM nor flash holds it. Any later insert, removal or touch of
    the key in the tier forgets it.

    The structure and the hot methods are C (``flashcache/_dram.c``: a dict from key to
    node and an intrusive recency list); keys must be bytes, values bytes-like bytes. The
    methods, all in C unless said:

    * ``get(key)``: the value, most recent now; None if absent or expired (an expired item
      is dropped).
    * ``set(key, value, expiry, clean=False)``: store an item (replacing any), most recent.
      ``clean``: flash holds this very item already, so evicting it needs no flash write.
      Returns what the budget pushed out, oldest first, as ``Evicted`` (an item too big for
      the whole budget comes straight back).
    * ``add(key, value, expiry, clean=True)``: store only if the key is absent (a promotion
      from flash must not overwrite a newer set that raced it). Returns (added, evicted).
    * ``delete(key)``: drop ``key`` (and its copy in flight, below); True if either was there.
    * ``touch(key, expiry)``: give a live item a new expiry (it becomes dirty: flash's copy
      has the old one); False if absent or expired.
    * ``peek_expiry(key)``: the item's absolute expiry (0 = never) without touching
      recency; None if absent.
    * ``latest(key)``: ``(value, expiry)`` of the key's newest item, expired or not,
      without touching recency: the one held, else the one in flight (below); None if
      neither.
    * ``settle(key, value, expiry)``: the demotion of this evicted item is over (written
      or dropped): True if it was still in flight (no event of the key in the tier since
      its eviction), and it no longer is. A later eviction of the key stays in flight.
    * ``in_flight()``: how many evicted items wait to be settled.
    * ``clear()``: drop every item, and forget those in flight (none is returned).
    * ``snapshot()``: every item held (expired ones too) as ``Evicted``, least recent
      first, changing nothing (for tests and inspection).
    * ``capacity``, ``used_bytes`` (bytes charged for the items held, never above
      ``capacity``), ``hits``, ``misses``, ``evictions``, ``expired``, ``len()``.
    """

    __slots__ = ()

    def __init__(self, capacity_bytes: int, clock: Callable[[], float]):
        super().__init__(capacity_bytes, clock, _FIXED, Evicted)

    def drain(self) -> Iterable[Evicted]:
        """Remove every item and return the live ones, least recent first (for a clean
        shutdown)."""
        return iter(self._drain())

    def stats(self) -> dict:
        """items, bytes, capacity_bytes, hits, misses, evictions, expired."""
        return {"items": len(self), "bytes": self.used_bytes, "capacity_bytes": self.capacity,
                "hits": self.hits, "misses": self.misses, "evictions": self.evictions,
                "expired": self.expired}
