"""BlockCache's regions: geometry, life cycle and the one DRAM buffer being filled.

Owns which region is clean, open or sealed, the pool of clean regions (oldest-released
first) and the life cycle of the open region's buffer (a zeroed bytearray of
``region_size`` and its fill mark); does no I/O and knows nothing of items. The open
region, its buffer, fill mark and ``loaded`` flag are kept in BlockCache's C core (the
``cursor``), whose lookups read them: this class reads and writes them there. The
surprise: the open region's bytes live only in DRAM until the engine writes the whole
buffer (when it is full, or on ``flush()``); until then its items are served from the
buffer. After a recovery the open region stays open, and the engine reads its flushed
part back before appending.

Life cycle: CLEAN (in the pool) -> OPEN (the buffer's target) -> SEALED (written, in the
eviction order) -> reclaimed by the engine -> CLEAN again. LENT: one of the last regions,
given to another engine (the router's moving split, ``BlockCache.lend``): the regions in
use are ``[0, limit)``, the lent ones ``[limit, nregions)``.
"""
from __future__ import annotations

from collections import deque
from typing import Any

import numpy as np

from ..engine import core_field

CLEAN, OPEN, SEALED, LENT = 0, 1, 2, 3
STATE_NAMES = ("clean", "open", "sealed", "lent")


class Regions:
    """The regions' states and the open region's buffer. ``cursor`` holds the open region's
    part: ``buffer`` (a bytearray of ``region_size``), ``open_region``, ``fill`` and
    ``loaded`` (BlockCache's C core)."""

    def __init__(self, nregions: int, region_size: int, alignment: int, cursor: Any, limit: int | None = None) -> None:
        self.nregions = nregions
        self.limit = nregions if limit is None else limit
        """The regions in use: ``[0, limit)``; the rest are LENT."""
        self.region_size = region_size
        self.alignment = alignment
        self.units = region_size // alignment  # alignment units per region
        self._cur = cursor
        self.buf = cursor.buffer
        if len(self.buf) != region_size:
            raise ValueError(f"regions: a buffer of {len(self.buf)} bytes for regions of {region_size}")
        self.view = memoryview(self.buf)
        self._bytes = np.frombuffer(self.buf, np.uint8)   # for zeroing: a memset, ~5x a bytes copy
        self.state = np.zeros(nregions, np.int8)
        self.pool: deque[int] = deque()
        self.flushed = 0  # units of the buffer already on flash
        self.reset()

    open = core_field("_cur.open_region", "The region the buffer fills.")
    fill = core_field("_cur.fill", "Units of the buffer in use.")
    loaded = core_field("_cur.loaded", "Whether the buffer holds the open region (False after ``load_state`` "
                                       "until ``load_buffer``).")

    def reset(self) -> None:
        """All regions in use clean; region 0 open with an empty buffer, the rest in the
        pool (the lent ones stay lent)."""
        self.state[:] = CLEAN
        self.state[self.limit:] = LENT
        self.pool = deque(range(1, self.limit))
        self.open = 0
        self.state[0] = OPEN
        self._clear_buffer()
        self.loaded = True

    def _clear_buffer(self) -> None:
        self._bytes[:self.fill * self.alignment] = 0
        self.fill = self.flushed = 0
        self.loaded = True

    # ------------------------------------------------------------------ the buffer

    def room(self) -> int:
        """Free alignment units left in the buffer."""
        return self.units - self._cur.fill

    def take(self, units: int) -> int:
        """Reserve ``units`` of the buffer; returns the unit offset in the region."""
        cur = self._cur
        at = cur.fill
        cur.fill = at + units
        return at

    @property
    def dirty(self) -> bool:
        """The buffer holds units not yet written."""
        return self.fill > self.flushed

    # ------------------------------------------------------------------ life cycle

    def seal_open(self) -> int:
        """The open region was written: mark it sealed and open the oldest clean region
        with an empty buffer. Returns the sealed region. ValueError if none is clean."""
        if not self.pool:
            raise ValueError("regions: no clean region to open")
        old = self.open
        self.state[old] = SEALED
        self.open = self.pool.popleft()
        self.state[self.open] = OPEN
        self._clear_buffer()
        return old

    def lend(self) -> int:
        """The last region in use, clean or already emptied by the engine, leaves use (LENT).
        Returns it. ValueError if it is open, or holds items (sealed: evict it first)."""
        r = self.limit - 1
        if self.state[r] != CLEAN:
            raise ValueError(f"regions: lending region {r}, which is {STATE_NAMES[self.state[r]]}")
        self.pool.remove(r)
        self.state[r] = LENT
        self.limit = r
        return r

    def unlend(self) -> int:
        """The first lent region comes back into use, clean (``limit`` + 1). Returns it.
        ValueError if none is lent."""
        r = self.limit
        if r >= self.nregions or self.state[r] != LENT:
            raise ValueError(f"regions: taking back region {r}, which is not lent")
        self.state[r] = CLEAN
        self.pool.append(r)
        self.limit = r + 1
        return r

    def release(self, region: int) -> None:
        """A sealed region was reclaimed: it joins the clean pool."""
        if self.state[region] != SEALED:
            raise ValueError(f"regions: releasing region {region}, which is {STATE_NAMES[self.state[region]]}")
        self.state[region] = CLEAN
        self.pool.append(region)

    # ------------------------------------------------------------------ persistence

    def to_state(self) -> dict:
        out = {"state": self.state.astype(np.int8).tobytes(), "pool": list(self.pool), "open": self.open,
               "fill": self.fill, "flushed": self.flushed}
        if self.limit < self.nregions:         # (a state with no region lent reads as before)
            out["limit"] = self.limit
        return out

    def parse_state(self, state: dict) -> tuple[np.ndarray, list[int], int, int]:
        """Check ``to_state()`` output without changing anything; returns what
        ``load_state`` installs (the regions in use: those not LENT). ValueError if it is
        malformed, or lends other regions than ``[limit, nregions)``."""
        st = np.frombuffer(state["state"], np.int8).astype(np.int8)
        pool = state["pool"]
        opened, fill, flushed = state["open"], state["fill"], state["flushed"]
        n = self.nregions
        if len(st) != n or st.min(initial=0) < CLEAN or st.max(initial=0) > LENT:
            raise ValueError(f"regions: state is not for {n} regions")
        limit = state.get("limit", n)
        if limit != self.limit or (st[:limit] == LENT).any() or (st[limit:] != LENT).any():
            raise ValueError(f"regions: state lends regions from {limit}, the split says {self.limit}")
        if not isinstance(pool, list) or not all(isinstance(r, int) and 0 <= r < n for r in pool):
            raise ValueError("regions: bad clean pool")
        if len(set(pool)) != len(pool) or sorted(pool) != [int(r) for r in np.flatnonzero(st == CLEAN)]:
            raise ValueError("regions: clean pool does not match the clean regions")
        if not pool:
            raise ValueError("regions: no clean region for the next buffer")
        if not isinstance(opened, int) or not 0 <= opened < n or st[opened] != OPEN or int((st == OPEN).sum()) != 1:
            raise ValueError("regions: bad open region")
        if not (isinstance(fill, int) and isinstance(flushed, int) and 0 <= flushed <= fill <= self.units):
            raise ValueError("regions: bad buffer fill")
        return st, list(pool), opened, flushed

    def load_state(self, parsed: tuple[np.ndarray, list[int], int, int]) -> None:
        """Install what ``parse_state`` returned. The buffer's bytes are gone with the
        DRAM: the open region stays open with what ``flush()`` wrote of it (anything after
        that is dropped), to be read back into the buffer by the next append
        (``loaded`` is False until then)."""
        self._bytes[:self.fill * self.alignment] = 0
        self.state, pool, self.open, flushed = parsed
        self.pool = deque(pool)
        self.fill = self.flushed = flushed
        self.loaded = flushed == 0

    def load_buffer(self, data: bytes | bytearray | memoryview) -> None:
        """The open region as read from flash: its flushed part becomes the buffer."""
        n = self.flushed * self.alignment
        self.view[:n] = memoryview(data)[:n]
        self.loaded = True
