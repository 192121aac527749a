"""BlockCache's DRAM index: key tag -> entry address, size hint and hit count, in numpy.

Owns an open-addressing hash table (linear probing, tombstones) held in four parallel
numpy arrays: no Python object per item. Knows nothing of flash or regions; an address is
just a number of alignment units. The surprise: it is keyed by a 32-bit *tag* (the high
half of the 64-bit key hash), so two keys with the same tag share a slot and the later
insert makes the earlier look evicted, as in CacheLib. The entry on flash carries the
full key, so such a lookup is a miss, never another key's bytes.

Slot layout, 11 B (element ``i`` of each array)::

    tag   u32  key_hash >> 32; the home slot is tag * capacity >> 32
    addr  u32  entry address in alignment units from the start of the extent;
               EMPTY (2**32 - 1) and TOMB (2**32 - 2) mark free slots
    size  u16  size hint: the entry's length in alignment units (``size_code``)
    hits  u8   lookup hits since insert or reinsertion, saturating at 255 (CacheLib's
               index keeps a u8 too; reinsertion thresholds go up to it)

Sizing: an insert that would take live + tombstone slots past MAX_LOAD (80 %) of the
table first rebuilds it with ``ceil((live + 1) / REBUILD_LOAD)`` slots (70 % full, at
least MIN_CAPACITY): it grows, purges tombstones or shrinks, whichever that means. Any
capacity works (the home slot is a multiply-shift, not a mask). A rebuild is vectorised
(sort by home slot, place runs with a running maximum); evicting a region tombstones its
entries in one numpy pass; so no Python loop runs per item on either path.

DRAM per item: 11 B / 0.8 = 13.75 B at the table's maximum load and 11 B / 0.7 = 15.7 B
just after a rebuild, so at most 15.7 B at any fill level (the target is 16 B; with a u16
hit count the slot was 12 B and the worst 17.1 B). ``tools/bench_engines.py --index-only``
measures the worst and the mean over fill levels and in steady churn. CacheLib's index is
about 12 B per item.
"""
from __future__ import annotations

import math

import numpy as np

from ._core_c import IndexTable

EMPTY = 0xFFFFFFFF
TOMB = 0xFFFFFFFE
MAX_ADDR = TOMB - 1
MAX_LOAD = 0.8
REBUILD_LOAD = 0.7
MIN_CAPACITY = 64
MAX_HITS = 0xFF
SLOT_BYTES = 4 + 4 + 2 + 1
# Size hint: lengths up to 32768 units are exact (code = units - 1); longer ones are
# rounded up to 16 units (code = 0x8000 | (ceil(units / 16) - 1)), up to 524288 units.
_EXACT = 0x8000
MAX_SIZE_UNITS = 0x8000 * 16


def size_code(units: int) -> int:
    """The u16 size hint for an entry of ``units`` alignment units (1 .. MAX_SIZE_UNITS)."""
    if units <= _EXACT:
        return units - 1
    return _EXACT | ((units + 15) // 16 - 1)


def code_units(code: int) -> int:
    """The units a size hint stands for: exact, or at most 15 units more than the entry."""
    if code < _EXACT:
        return code + 1
    return ((code & 0x7FFF) + 1) * 16


def _place(homes: np.ndarray, cap: int) -> np.ndarray:
    """Slots for items with these home slots in an empty linear-probing table of ``cap``
    slots (len(homes) < cap), such that each item's probe run from home to slot (wrapping
    round the end) is fully occupied. Returns one slot per item, in the input order."""
    n = len(homes)
    pos = np.empty(n, np.int64)
    if n == 0:
        return pos
    order = np.argsort(homes, kind="stable")
    h = homes[order].astype(np.int64)
    wrapped = np.zeros(n, bool)
    idx = np.arange(n, dtype=np.int64)
    for _ in range(64):
        # Items that ran off the end start again at slot 0, ahead of every item homed there.
        key = np.where(wrapped, -1, h)
        perm = np.argsort(key, kind="stable")
        start = np.maximum(key[perm], 0)
        p = idx + np.maximum.accumulate(start - idx)
        over = p >= cap
        if not over.any():
            pos[order[perm]] = p
            return pos
        if wrapped[perm[over]].any():
            break
        wrapped[perm[over]] = True
    raise AssertionError(f"index: cannot place {n} items in {cap} slots")  # pragma: no cover


class Index:
    """The table (see the module docstring). ``find``/``put``/``delete`` are scalar;
    ``slots_in``/``drop`` work on address ranges and slot arrays, vectorised."""

    def __init__(self, capacity: int = MIN_CAPACITY) -> None:
        self._alloc(capacity)

    def _alloc(self, cap: int, fill: tuple | None = None) -> None:
        """A fresh table of ``cap`` slots (holding the entries ``fill``), swapped in whole.

        Threads: BlockCache's lock covers every change, but ``find`` (and BlockCache's C
        probes) read without it, through ``table`` alone: the new arrays are filled
        before ``table.swap`` takes all four in one C call, so such a reader sees the old
        table or the new one, never a half-built one or a capacity that belongs to other
        arrays."""
        if not MIN_CAPACITY <= cap <= 1 << 31:
            raise ValueError(f"index: capacity = {cap}: use {MIN_CAPACITY} to 2**31 slots")
        tag = np.zeros(cap, np.uint32)
        addr = np.full(cap, EMPTY, np.uint32)
        size = np.zeros(cap, np.uint16)
        hits = np.zeros(cap, np.uint8)
        n = 0
        if fill is not None:
            pos = _place(self.homes(fill[0], cap), cap)
            for arr, vals in zip((tag, addr, size, hits), fill):
                arr[pos] = vals
            n = len(fill[0])
        # ``table``: the arrays as C views (_core.c), one object for this index's life:
        # probed, and a hit counted, from C (BlockCache's core holds it as its ``index``)
        if "table" in self.__dict__:
            self.table.swap(tag, addr, size, hits)
        else:
            self.table = IndexTable(tag, addr, size, hits)
        self._put = self.table.put
        self.capacity = cap
        self.tag, self.addr, self.size, self.hits = tag, addr, size, hits
        # memoryviews index ~3x faster than numpy scalars and give plain ints
        self._t = memoryview(self.tag)
        self._a = memoryview(self.addr)
        self._s = memoryview(self.size)
        self._h = memoryview(self.hits)
        self.live = self.used = n  # used: live + tombstones
        self._limit = int(cap * MAX_LOAD)

    # ------------------------------------------------------------------ scalar

    def find(self, tag: int) -> int:
        """The slot holding ``tag``, or -1 (a C probe: at 80 % load a miss walks ~13 slots)."""
        return self.table.find(tag)

    def get(self, slot: int) -> tuple[int, int, int]:
        """(addr, size hint in units, hits) of a live slot."""
        return self._a[slot], code_units(self._s[slot]), self._h[slot]

    def addr_of(self, slot: int) -> int:
        return self._a[slot]

    def put(self, tag: int, addr: int, units: int) -> int | None:
        """Point ``tag`` at ``addr`` (an entry of ``units`` alignment units) with no hits.
        Returns the address it replaced, or None if the tag was new."""
        if not 0 <= addr <= MAX_ADDR:
            raise ValueError(f"index: address {addr} outside 0..{MAX_ADDR}")
        code = size_code(units)
        r = self._put(tag, addr, code, self.used + 1 <= self._limit)
        if r >= 0:
            return r                   # replaced the tag's old address
        if r == -3:                    # needs an empty slot past the load limit: grow first
            self.rebuild(max(MIN_CAPACITY, math.ceil((self.live + 1) / REBUILD_LOAD)))
            return self.put(tag, addr, units)
        if r == -1:                    # an empty slot (-2: a tombstone, already counted)
            self.used += 1
        self.live += 1
        return None

    def move(self, slot: int, addr: int) -> None:
        """Point a live slot at a new copy of its entry (reinsertion); hits restart at 0."""
        self._a[slot] = addr
        self._h[slot] = 0

    def hit(self, slot: int) -> None:
        h = self._h[slot]
        if h < MAX_HITS:
            self._h[slot] = h + 1

    def delete(self, slot: int) -> None:
        """Free a live slot. A slot followed by an empty one becomes empty (with any
        tombstones just before it), so short tables of removals leave no tombstones."""
        a, cap = self._a, self.capacity
        self.live -= 1
        if a[(slot + 1) % cap] != EMPTY:
            a[slot] = TOMB
            return
        a[slot] = EMPTY
        self.used -= 1
        j = (slot - 1) % cap
        while a[j] == TOMB:
            a[j] = EMPTY
            self.used -= 1
            j = (j - 1) % cap

    # ------------------------------------------------------------------ vectorised

    def slots_in(self, lo: int, hi: int) -> np.ndarray:
        """Live slots whose address is in [lo, hi) (free-slot markers are above any)."""
        return np.flatnonzero((self.addr >= lo) & (self.addr < hi))

    def drop(self, slots: np.ndarray) -> None:
        """Tombstone these live slots (a rebuild purges the tombstones later)."""
        self.addr[slots] = TOMB
        self.live -= len(slots)

    def rebuild(self, capacity: int) -> None:
        """Re-place every live slot into a fresh table of ``capacity`` slots."""
        tag, addr, size, hits = self.entries()
        if len(tag) >= int(capacity * MAX_LOAD) + 1:
            raise ValueError(f"index: {len(tag)} items do not fit {capacity} slots at load {MAX_LOAD}")
        self._alloc(capacity, (tag, addr, size, hits))

    def homes(self, tag: np.ndarray, capacity: int | None = None) -> np.ndarray:
        """Home slots of these tags (``tag * capacity >> 32``; this table's capacity by default)."""
        cap = self.capacity if capacity is None else capacity
        return (tag.astype(np.uint64) * np.uint64(cap)) >> np.uint64(32)

    def entries(self, exclude: tuple[int, int] | None = None):
        """Copies of the live (tag, addr, size code, hits) arrays, optionally leaving out
        addresses in [lo, hi)."""
        live = self.addr < TOMB
        if exclude is not None:
            live &= ~((self.addr >= exclude[0]) & (self.addr < exclude[1]))
        return self.tag[live], self.addr[live], self.size[live], self.hits[live]

    def clear(self) -> None:
        self._alloc(MIN_CAPACITY)

    # ------------------------------------------------------------------ persistence

    def to_state(self, exclude: tuple[int, int] | None = None) -> dict:
        """The live slots as little-endian array bytes (msgpack-friendly)."""
        tag, addr, size, hits = self.entries(exclude)
        return {"capacity": self.capacity, "tag": tag.astype("<u4").tobytes(), "addr": addr.astype("<u4").tobytes(),
                "size": size.astype("<u2").tobytes(), "hits": hits.astype("<u2").tobytes()}

    @classmethod
    def from_state(cls, state: dict, max_addr: int) -> "Index":
        """An index from ``to_state()``; ValueError if it is malformed, names an address
        at or above ``max_addr`` or holds a tag twice."""
        cap = state["capacity"]
        arrays = []
        for name, dt in (("tag", "<u4"), ("addr", "<u4"), ("size", "<u2"), ("hits", "<u2")):
            raw = state[name]
            if not isinstance(raw, (bytes, bytearray)) or len(raw) % np.dtype(dt).itemsize:
                raise ValueError(f"index: {name} is not a {dt} array")
            arrays.append(np.frombuffer(raw, dt).astype(dt[1:]))
        tag, addr, size, hits = arrays
        hits = np.minimum(hits, MAX_HITS)       # kept as u16 in the state (older states: up to 65535)
        n = len(tag)
        if not (len(addr) == len(size) == len(hits) == n):
            raise ValueError("index: arrays of different lengths")
        if not isinstance(cap, int) or not MIN_CAPACITY <= cap <= 1 << 31 or n > cap * MAX_LOAD:
            raise ValueError(f"index: capacity {cap!r} does not hold {n} items")
        if n and int(addr.max()) >= max_addr:
            raise ValueError(f"index: address {int(addr.max())} outside the extent")
        if len(np.unique(tag)) != n:
            raise ValueError("index: a tag appears twice")
        idx = cls.__new__(cls)
        idx._alloc(cap, (tag, addr, size, hits))
        return idx

    # ------------------------------------------------------------------ reporting

    @property
    def dram_bytes(self) -> int:
        return self.tag.nbytes + self.addr.nbytes + self.size.nbytes + self.hits.nbytes

    def __len__(self) -> int:
        return self.live
