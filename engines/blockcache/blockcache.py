"""BlockCache: the large-item engine, a log of equal regions with a DRAM index.

Owns its extent, the index (``index.py``), the regions and their buffer (``regions.py``),
the eviction order (``eviction.py``) and reinsertion (``reinsertion.py``); the entry
format is in ``entry.py``. Operations are sans-I/O generators (see ``engines.device``).
The surprise: an insert is acknowledged from DRAM. Items are appended to the open
region's buffer and reach flash only when the buffer fills (one whole-region Write) or on
``flush()``; until then lookups are served from the buffer with no I/O.

Reclaiming: after each region write the next clean region opens; when fewer than
``clean_regions`` are left clean, the eviction policy picks a sealed region, its index
entries are found by one vectorised scan of the index (no per-region key lists, no I/O),
the items reinsertion keeps are read back (one whole-region Read, only if any qualify)
and appended to the fresh buffer, the rest are dropped from the index, and the region is
optionally trimmed and joins the clean pool.

Crash recovery and no resurrection (under a router that checkpoints: ``engines.navy``).
The log is the sequence of entries in the order they were appended; every entry (item,
TOMBSTONE, MARKER) carries ``seq``, which strictly increases along it (a reinserted copy
is stamped anew: a copy of the live version is the newest in log order). A checkpoint is
``persist()``'s state taken with ``checkpoint_seq`` = C, the seq of the first entry not
yet on flash: the index it holds is the result of applying every entry below C. Replay
(``replay()``) rebuilds the index at the crash from it: it reads the first block of every
region (the seq there says whether the region was rewritten since C), drops the
checkpoint's entries in every region whose first seq is >= C (reclaimed since: a reclaim
writes a MARKER with a fresh seq at the region's start before the region is reused),
then applies, in seq order, each valid entry with seq >= C found in those regions and in
the tail of the region open at C (valid: magic, version, checksum, the generation, the
key's hash; a region's walk stops at the first entry that is not, or whose seq does not
increase: the end of what was written there). An item entry puts its key, a TOMBSTONE
drops it. So the index after replay is the index at the crash restricted to what reached
flash, *provided every index change is an entry on flash*. The three that are not
entries are made so:

* a remove (a delete, or the router moving the key to another engine) writes a
  tombstone (its seq and the key's hash) to the journal, a ring of blocks in the
  router's metadata area, before it returns: one block, off the engine's stream, and no
  rewrite of region data (a TOMBSTONE entry in the log, with the tail written, only if
  no checkpoint can be saved to empty a full journal). The journal holds the tombstones
  since the last checkpoint (its epoch, in the checkpoint, tells them from older ones);
  replay merges them with the log's entries by seq. A checkpoint restarts the journal, so
  it carries the tombstones at or above its checkpoint_seq itself (``tombstones``): one
  may shadow an entry still in the buffer, which reaches flash, and a replay, later;
* an insert is an entry; with ``durable`` it writes the tail before it returns. Without,
  an overwrite still in the buffer at a crash is lost and the older copy, if one is on
  flash, is what comes back: the default mode's contract ("what is on flash survives,
  nothing older than it"); the Cache never relies on more, since its set removes the
  flash copy (a tombstone, written at once) before the new value goes anywhere;
* an eviction drops a region's entries: its MARKER makes replay drop them too.

What a replay applies must outlive what it shadows: a region written since the last
checkpoint is never reclaimed before a new checkpoint is taken (the router's
``checkpoint_hook``, asked at the start of ``_reclaim``: else a newer copy evicted with it
would let the checkpoint's older one back), the journal restarts only after a checkpoint,
and the router checkpoints right after a replay. Across engines the router removes before it inserts (navy.py), so the
older copy's tombstone is on flash before the newer copy anywhere else. Hence after a
crash a key is served only with the newest of its values that reached flash, and never
with one that a delete, or a later set that reached flash, superseded. What a crash can lose: the
DRAM buffer's items not yet written (default mode), nothing acknowledged with
``durable``. This engine makes writes reach stable media (fdatasync) at checkpoints and
close only: a power loss can also lose, or reorder, what was written after the last
checkpoint, unless the Cache flushes the device after each operation (write_through =
"sync", flashcache/core.py's ``change``).

Threads: every operation holds ``lock`` (one re-entrant lock: the engine's state is one
structure) across its I/O, except that a lookup the index rules out takes no lock in its
C form. The C (``_core.c``) owns what its lookup touches: the generation, the open
region's buffer and cursor (through ``Regions``), the index table in use and the counters
of its own steps; this module reads and sets them there.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable, Mapping, NamedTuple, Sequence

import numpy as np

from ..device import Device, Op, Read, Trim, Write, as_bytes, expiry_seconds, run
from ..engine import Engine, core_field, merged_counters
from . import eviction as eviction_mod
from ._core_c import Core
from .entry import (FORMAT_VERSION, HEADER_SIZE, MARKER, MAX_KEY_LEN, TOMBSTONE, CorruptEntry, decode, encode_into,
                    journal_block, journal_records, key_hash, restamp)
from .index import MAX_ADDR, SLOT_BYTES, Index
from .regions import CLEAN, LENT, OPEN, SEALED, Regions
from .reinsertion import MAX_HITS_THRESHOLD, Reinsertion

log = logging.getLogger(__name__)

DEFAULT_REGION_SIZE = 16 << 20
MIN_ALIGNMENT = 512
MAX_ALIGNMENT = 4096
MIN_REGION_UNITS = 8
MAX_REGION_SIZE = 256 << 20
MAX_SEGMENTS = 8
_M64 = (1 << 64) - 1

_COUNTERS = (
    "lookups", "hits", "misses", "buffer_hits", "collision_misses", "expired_misses", "stale_misses",
    "checksum_failures", "inserts", "replaced", "inserted_bytes", "removes", "removed",
    "evicted_regions", "evicted_items", "reinsertions", "reinsertion_reads", "reinsertion_dropped",
    "region_writes", "flushes", "bytes_written", "entry_reads", "bytes_read", "trims",
    "tail_writes", "tombstones", "markers", "checkpoints_due", "recovery_bytes_written",
)
DEFAULT_CHECKPOINT_REGIONS = 4
DEFAULT_CHECKPOINT_SECONDS = 60.0


def _head_seq(data: bytes, generation: int) -> int | None:
    """The seq of the entry header at the start of ``data`` if it is one of ``generation``."""
    try:
        h = decode(data, 0, 1 << 62, verify=False)
    except CorruptEntry:
        return None
    return h.seq if h.generation == generation else None


def _check_bytes(what: str, x: object):
    return as_bytes("BlockCache", what, x)


class InsertResult(NamedTuple):
    """What an insert did. Always truthy (a non-empty tuple)."""

    replaced: bool  # the key's tag already had an index entry (now garbage on flash)
    evicted: int  # items dropped from the index by region reclaims this insert caused
    reinserted: int  # items those reclaims re-appended instead


class BlockCache(Engine):
    """The large-item engine over ``[offset, offset + size)`` of a device.

    ``region_size``: bytes per region, the unit of writes and evictions (16 MiB default,
    up to 256 MiB, a multiple of ``alignment``). ``alignment``: entries start on these
    boundaries (a power of two from 512 to 4096). ``offset`` and ``size`` are multiples of ``region_size``, with at least
    ``clean_regions + 2`` regions. ``clean_regions``: regions kept clean and ready.
    ``eviction``: "fifo", "lru" or "sfifo" (segments sized by ``segment_ratio``, lowest
    first; see ``engines.blockcache.eviction``). ``reinsertion_hits`` (0 = off) and
    ``reinsertion_percent`` (0 to 100) choose items of an evicted region to re-append
    (``reinsertion_seed`` seeds the percentage draw). ``trim_on_reclaim``: TRIM each
    reclaimed region. ``stream`` is passed back on every Write; ``clock`` gives the time
    in seconds that ``expiry`` is measured in; ``generation`` is the one the entries were
    written with (what ``persist()`` saved; 0 for an engine never ``reset()``).
    ``io_alignment``: the device's block size when it is larger than ``alignment``; entry
    reads are widened to whole blocks (default: ``alignment``). ``durable`` (write_through):
    every insert writes the buffer's new tail before it returns. ``checkpoint_regions`` and
    ``checkpoint_seconds``: how often, at a seal, to ask ``checkpoint_hook`` (set by the
    router) for a checkpoint (0 turns either off; see the module docstring). ``limit``:
    the regions in use, ``[0, limit)`` (default: all); the router's moving split lends the
    last ones to BigHash (``lend``), so the addresses of the rest never change.

    Every operation holds ``lock`` (re-entrant: one thread may drive several lookups
    together), so threads may share the engine.

    Example, with any ``engines.device.Device`` as ``dev``::

        bc = BlockCache(offset=0, size=64 << 20, region_size=4 << 20)
        run(bc.insert(b"k", b"v" * 100_000), dev)
        run(bc.lookup(b"k"), dev)   # -> the value, from the DRAM buffer
        run(bc.flush(), dev)        # the buffer's region is on flash
    """

    name = "blockcache"

    def __init__(
        self,
        offset: int,
        size: int,
        region_size: int = DEFAULT_REGION_SIZE,
        alignment: int = 512,
        clean_regions: int = 1,
        eviction: str = "fifo",
        reinsertion_hits: int = 0,
        reinsertion_percent: float = 0,
        trim_on_reclaim: bool = False,
        stream: Any = None,
        clock: Callable[[], float] = time.time,
        *,
        generation: int = 0,
        segment_ratio: Sequence[int] = (1, 1),
        reinsertion_seed: int = 0,
        io_alignment: int | None = None,
        durable: bool = False,
        checkpoint_regions: int = DEFAULT_CHECKPOINT_REGIONS,
        checkpoint_seconds: float = DEFAULT_CHECKPOINT_SECONDS,
        limit: int | None = None,
    ) -> None:
        if not isinstance(alignment, int) or not (
            MIN_ALIGNMENT <= alignment <= MAX_ALIGNMENT and alignment & (alignment - 1) == 0
        ):
            raise ValueError(
                f"BlockCache: alignment = {alignment!r}: use a power of two from {MIN_ALIGNMENT} to "
                f"{MAX_ALIGNMENT} bytes (512 is the usual; at least the device's block size)"
            )
        if not isinstance(region_size, int) or not (
            MIN_REGION_UNITS * alignment <= region_size <= MAX_REGION_SIZE and region_size % alignment == 0
        ):
            raise ValueError(
                f"BlockCache: region_size = {region_size!r}: use a multiple of alignment ({alignment}) "
                f"from {MIN_REGION_UNITS * alignment} to {MAX_REGION_SIZE} bytes (16 MiB is the usual)"
            )
        if io_alignment is None:
            io_alignment = alignment
        if not isinstance(io_alignment, int) or not (
            MIN_ALIGNMENT <= io_alignment <= region_size and io_alignment & (io_alignment - 1) == 0
            and region_size % io_alignment == 0
        ):
            raise ValueError(
                f"BlockCache: io_alignment = {io_alignment!r}: use the device's block size, a power of two "
                f"from {MIN_ALIGNMENT} that divides region_size ({region_size})"
            )
        if not isinstance(offset, int) or offset < 0 or offset % region_size:
            raise ValueError(
                f"BlockCache: offset = {offset!r}: use a non-negative multiple of region_size ({region_size})"
            )
        if not isinstance(clean_regions, int) or clean_regions < 1:
            raise ValueError(f"BlockCache: clean_regions = {clean_regions!r}: use an int of at least 1 (1 is the usual)")
        if not isinstance(size, int) or size <= 0 or size % region_size:
            raise ValueError(f"BlockCache: size = {size!r}: use a positive multiple of region_size ({region_size})")
        nregions = size // region_size
        if nregions < clean_regions + 2:
            raise ValueError(
                f"BlockCache: size = {size} holds {nregions} regions of {region_size} bytes: need at least "
                f"clean_regions + 2 = {clean_regions + 2} (one open, {clean_regions} clean, one to evict); "
                "use a larger size, a smaller region_size or fewer clean_regions"
            )
        if size // alignment > MAX_ADDR:
            raise ValueError(
                f"BlockCache: size = {size} is {size // alignment} alignment units: the index addresses at most "
                f"{MAX_ADDR}; use a larger alignment or a smaller size"
            )
        if eviction not in eviction_mod.POLICIES:
            raise ValueError(f"BlockCache: eviction = {eviction!r}: use one of {', '.join(map(repr, eviction_mod.POLICIES))}")
        ratio = tuple(segment_ratio) if isinstance(segment_ratio, (list, tuple)) else None
        if not ratio or not 1 <= len(ratio) <= MAX_SEGMENTS or not all(
            isinstance(r, int) and not isinstance(r, bool) and r >= 1 for r in ratio
        ):
            raise ValueError(
                f"BlockCache: segment_ratio = {segment_ratio!r}: use 1 to {MAX_SEGMENTS} positive ints, "
                "lowest segment first, like (1, 1)"
            )
        if not isinstance(reinsertion_hits, int) or isinstance(reinsertion_hits, bool) or not (
            0 <= reinsertion_hits <= MAX_HITS_THRESHOLD
        ):
            raise ValueError(
                f"BlockCache: reinsertion_hits = {reinsertion_hits!r}: use an int from 0 (off) to {MAX_HITS_THRESHOLD}"
            )
        if not isinstance(reinsertion_percent, (int, float)) or isinstance(reinsertion_percent, bool) or not (
            0 <= reinsertion_percent <= 100
        ):
            raise ValueError(
                f"BlockCache: reinsertion_percent = {reinsertion_percent!r}: use a number from 0 (off) to 100"
            )
        if not isinstance(reinsertion_seed, int) or reinsertion_seed < 0:
            raise ValueError(f"BlockCache: reinsertion_seed = {reinsertion_seed!r}: use a non-negative int")
        if not isinstance(trim_on_reclaim, bool):
            raise ValueError(f"BlockCache: trim_on_reclaim = {trim_on_reclaim!r}: use True or False")
        if not isinstance(generation, int) or not 0 <= generation <= _M64:
            raise ValueError(f"BlockCache: generation = {generation!r}: use an int from 0 to 2**64 - 1")
        if not isinstance(checkpoint_regions, int) or isinstance(checkpoint_regions, bool) or checkpoint_regions < 0:
            raise ValueError(f"BlockCache: checkpoint_regions = {checkpoint_regions!r}: use a whole number of sealed "
                             f"regions between index checkpoints, 0 for none but at close "
                             f"({DEFAULT_CHECKPOINT_REGIONS} is the default)")
        if (not isinstance(checkpoint_seconds, (int, float)) or isinstance(checkpoint_seconds, bool)
                or not checkpoint_seconds >= 0):
            raise ValueError(f"BlockCache: checkpoint_seconds = {checkpoint_seconds!r}: use seconds >= 0 between "
                             f"index checkpoints while regions are sealed, 0 for none "
                             f"({DEFAULT_CHECKPOINT_SECONDS:g} is the default)")
        if not callable(clock):
            raise ValueError(f"BlockCache: clock = {clock!r}: use a callable returning seconds, like time.time")
        if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool)
                                  or not self.min_regions(clean_regions) <= limit <= nregions):
            raise ValueError(f"BlockCache: limit = {limit!r}: use a number of regions in use from "
                             f"{self.min_regions(clean_regions)} to the {nregions} the extent holds")
        self.offset = offset
        self.size = size
        self.region_size = region_size
        self.alignment = alignment
        self.io_alignment = io_alignment
        self.nregions = nregions
        self.clean_regions = clean_regions
        self.eviction_name = eviction
        self.segment_ratio = ratio
        self.trim_on_reclaim = trim_on_reclaim
        self.stream = stream
        self.clock = clock
        self.max_item_size = region_size - HEADER_SIZE
        """Largest key + value (bytes) one entry can hold: a region minus the entry header."""
        self._upr = region_size // alignment  # alignment units per region
        self.lock = threading.RLock()
        """Held by every operation (see the class docstring)."""
        # The lookup's C core (_core.c): it owns the generation, the open region's buffer
        # and cursor, the index table in use and the counters of its own steps.
        self._core = Core(offset=offset, region_size=region_size, alignment=alignment, io_alignment=io_alignment,
                          clock=clock, lock=self.lock, forget=self._forget, corrupt=self._log_corrupt)
        self._core.generation = generation
        self._core_lookup = self._core.lookup
        self._core_may_hold = self._core.may_hold
        self.regions = Regions(nregions, region_size, alignment, self._core, limit)
        self._use_index(Index())
        self._use_eviction(eviction_mod.make(eviction, nregions, ratio))
        self.reinsertion = Reinsertion(reinsertion_hits, reinsertion_percent, reinsertion_seed)
        self._counters = dict.fromkeys(_COUNTERS, 0)
        self.durable = bool(durable)
        """write_through: every insert and remove reaches the device before it returns."""
        self.checkpoint_regions = checkpoint_regions
        self.checkpoint_seconds = float(checkpoint_seconds)
        self.checkpoint_hook: Callable[[], Any] | None = None
        """Called (blocking, under ``lock``) when a checkpoint is due; the router sets it."""
        self.seq = 1
        """The log sequence number the next appended entry takes."""
        self._flushed_seq = 1     # every entry with a lower seq is on flash (or gone)
        self._seals_since = 0
        self._checkpoint_at = clock()
        self._saved_ckpt = 0      # the checkpoint_seq of the last checkpoint the router saved
        self._sealed_at = np.zeros(nregions, np.uint64)   # self.seq when each region was sealed
        self.journal: tuple[int, int, int] | None = None
        """(offset, blocks, block size) of the tombstone journal on the device (the router
        sets it beside ``checkpoint_hook``); None: removes are index-only."""
        self._journal_epoch = 1
        self._journal_next = 0
        # (seq, key hash) of the journal's tombstones that a checkpoint must carry: those at
        # or above the first seq not yet on flash. A checkpoint restarts the journal, and
        # such a tombstone may shadow an entry still in the buffer (seq above the
        # checkpoint's), which a replay would otherwise apply once it reached flash.
        self._pending: list[tuple[int, int]] = []

    generation = core_field("_core.generation", "The generation entries are written with; any other reads as "
                                                "a stale miss.")

    def _use_index(self, index: Index) -> None:
        self.index = index
        self._core.index = index.table

    def _use_eviction(self, policy: eviction_mod.Eviction) -> None:
        self.eviction = policy
        self._core.on_hit = policy.touch if policy.hears_hits else None

    def _counts(self) -> dict[str, int]:
        """Every counter: the Python forms' plus the C core's."""
        return merged_counters(self._counters, self._core.counters())

    # ------------------------------------------------------------------ geometry

    @staticmethod
    def min_regions(clean_regions: int) -> int:
        """The fewest regions in use ``lend`` leaves: one open, ``clean_regions`` clean,
        two sealed."""
        return clean_regions + 3

    @property
    def limit(self) -> int:
        """The regions in use, ``[0, limit)``; the rest are lent (see ``lend``)."""
        return self.regions.limit

    def set_limit(self, limit: int) -> None:
        """Before a recovery (the router's, from its checkpoint), on an engine that holds
        nothing yet: ``limit`` regions in use (the generation stays). ValueError if out of
        range."""
        if not self.min_regions(self.clean_regions) <= limit <= self.nregions:
            raise ValueError(f"BlockCache: limit {limit} out of range {self.min_regions(self.clean_regions)}.."
                             f"{self.nregions}")
        self.regions.limit = limit
        self.regions.reset()

    def lend(self) -> Op[bool]:
        """Give the last region in use to another engine (the router's moving split): its
        items are evicted (no I/O: the index forgets them) and it leaves the rotation, so
        the other regions keep their addresses. False (nothing changed) when it is the open
        region (try again after the next seal) or only ``min_regions`` are left. The
        caller checkpoints (``persist()`` holds the new limit) before anything else writes
        there: until then a crash recovers the region as BlockCache's."""
        with self.lock:
            regions = self.regions
            r = regions.limit - 1
            if regions.limit <= self.min_regions(self.clean_regions) or regions.state[r] == OPEN:
                return False
            if regions.state[r] == SEALED:
                self.eviction.forget(r)
                slots = self.index.slots_in(r * self._upr, (r + 1) * self._upr)
                self.index.drop(slots)
                self._counters["evicted_items"] += len(slots)
                self._counters["evicted_regions"] += 1
                regions.state[r] = CLEAN
                regions.pool.append(r)
            regions.lend()
            while len(regions.pool) < self.clean_regions:
                yield from self._reclaim()
            return True

    def take_back(self) -> bool:
        """The inverse of ``lend``: the first lent region comes back into use, clean, at
        the end of the clean pool. False (nothing changed) when none is lent. The caller
        does this only once the other engine no longer uses the region durably, and
        checkpoints (``persist()`` holds the new limit) before this engine writes there
        (holding ``held()`` across both); undo with ``lend``."""
        with self.lock:
            if self.regions.limit >= self.nregions:
                return False
            self.regions.unlend()
            return True

    def region_offset(self, region: int) -> int:
        """Device offset of ``region``."""
        return self.offset + region * self.region_size

    def region_of(self, key: bytes) -> int | None:
        """The region the index places ``key``'s entry in, or None (for tests and tools)."""
        slot = self.index.find(key_hash(key) >> 32)
        return None if slot < 0 else self.index.addr_of(slot) // self._upr

    # ------------------------------------------------------------------ the Engine interface

    @classmethod
    def extent_unit(cls, options: Mapping[str, Any]) -> int:
        return options.get("region_size", DEFAULT_REGION_SIZE)

    @classmethod
    def build(cls, offset: int, size: int, *, stream: Any, clock: Callable[[], float], block_size: int,
              options: Mapping[str, Any]) -> "BlockCache":
        io = max(options.get("alignment", MIN_ALIGNMENT), block_size)
        return cls(offset, size, stream=stream, clock=clock, io_alignment=io, **options)

    def layout(self) -> dict[str, Any]:
        # the entry format too: a cache written with another resets once, and says so
        return {"region_size": self.region_size, "alignment": self.alignment, "entry_format": FORMAT_VERSION}

    def c_ops(self) -> Any:
        return self._core.engine_ops()

    def may_hold(self, key: bytes | bytearray | memoryview) -> bool:
        """Whether the index holds ``key``'s tag (no I/O, no lock)."""
        if key.__class__ is bytes:
            return self._core_may_hold(key)
        return self.index.find(key_hash(_check_bytes("key", key)) >> 32) >= 0

    def start_cold(self) -> str:
        self.reset()       # its index is gone: the regions' contents cannot be found
        return "BlockCache starts empty"

    # ------------------------------------------------------------------ operations

    def lookup(self, key: bytes | bytearray | memoryview) -> Op[bytes | None]:
        """The value stored for ``key``, or None (missing, evicted, expired, another key with
        the same tag, or corrupt). An index miss or an item in the buffer costs no I/O;
        otherwise one Read of the entry's aligned extent."""
        item = yield from self.lookup_item(key)
        return None if item is None else item[0]

    def lookup_item(self, key: bytes | bytearray | memoryview) -> Op[tuple[bytes, int] | None]:
        """Like ``lookup``, but returns ``(value, expiry)`` (expiry 0 = never), so a cache
        that promotes the item to DRAM keeps its time to live."""
        key = _check_bytes("key", key)
        return self._lookup(key)

    def lookup_item_now(self, device: Device, key: bytes | bytearray | memoryview) -> tuple[bytes, float] | None:
        """``lookup_item`` done at once with a blocking ``device.read``: for a bytes key the
        same steps and counters in one C call (``_core.c``), else the generator driven."""
        if key.__class__ is bytes:
            return self._core_lookup(device, key)
        return run(self.lookup_item(key), device)

    def _lookup(self, key) -> Op[tuple[bytes, int] | None]:
        with self.lock:
            plan = self._lookup_plan(key)
            if plan is None:
                return None
            return self._lookup_found(plan, None if plan[5] is None else (yield Read(plan[5], plan[6])))

    def _lookup_plan(self, key):
        """What a lookup reads: (key, key hash, tag, addr, pos, start, length), start None
        when the entry is in the open region's DRAM buffer; None on an index miss."""
        c = self._counters
        c["lookups"] += 1
        kh = key_hash(key)
        tag = kh >> 32
        idx = self.index
        slot = idx.find(tag)
        if slot < 0:
            c["misses"] += 1
            return None
        addr, units, _ = idx.get(slot)
        region, unit = divmod(addr, self._upr)
        cur = self._core                # the open region's cursor lives there
        if region == cur.open_region and cur.loaded:
            return (key, kh, tag, addr, unit * self.alignment, None, 0)
        start = self.offset + addr * self.alignment
        end = start + min(units, self._upr - unit) * self.alignment
        io = self.io_alignment
        if io > self.alignment:  # widen to the device's blocks (regions are whole blocks)
            pos = start % io
            start -= pos
            end = -(-end // io) * io
        else:
            pos = 0
        return (key, kh, tag, addr, pos, start, end - start)

    def _lookup_found(self, plan, data) -> tuple[bytes, int] | None:
        """The lookup's answer from the entry as read (data None: the open region's buffer,
        which the plan found it in, with nothing run in between)."""
        key, kh, tag, addr, pos, start, _ = plan
        c = self._counters
        region = addr // self._upr
        if data is None:
            data = self.regions.view
            end = self._core.fill * self.alignment
            verify = False  # DRAM: nothing can have rotted
            from_buffer = True
        else:
            c["entry_reads"] += 1
            c["bytes_read"] += plan[6]
            end, verify, from_buffer = len(data), True, False
        idx = self.index
        try:
            h = decode(data, pos, end, verify)
        except CorruptEntry as exc:
            c["checksum_failures"] += 1
            c["misses"] += 1
            self._log_corrupt(self.offset + addr * self.alignment, region, str(exc))
            self._forget(tag, addr)
            return None
        if h.generation != self._core.generation:
            c["stale_misses"] += 1
            c["misses"] += 1
            self._forget(tag, addr)
            return None
        kstart = pos + HEADER_SIZE
        if h.key_hash != kh or h.key_len != len(key) or data[kstart:kstart + h.key_len] != key:
            c["collision_misses"] += 1  # the slot belongs to another key with the same tag
            c["misses"] += 1
            return None
        if h.expiry and h.expiry <= self.clock():
            c["expired_misses"] += 1
            c["misses"] += 1
            self._forget(tag, addr)
            return None
        vstart = kstart + h.key_len
        value = bytes(data[vstart:vstart + h.value_len])
        c["hits"] += 1
        if from_buffer:
            c["buffer_hits"] += 1
        slot = idx.find(tag)
        if slot >= 0 and idx.addr_of(slot) == addr:
            idx.hit(slot)
            self.eviction.touch(region)
        return value, h.expiry

    def _log_corrupt(self, offset: int, region: int, why: str) -> None:
        log.warning("BlockCache: entry at offset %d (region %d) is corrupt (%s); a miss", offset, region, why)

    def _forget(self, tag: int, addr: int) -> None:
        """Drop ``tag``'s index entry if it still points at ``addr``."""
        slot = self.index.find(tag)
        if slot >= 0 and self.index.addr_of(slot) == addr:
            self.index.delete(slot)

    def insert(self, key: bytes | bytearray | memoryview, value: bytes | bytearray | memoryview,
               expiry: float = 0) -> Op[InsertResult]:
        """Store ``value`` under ``key``: appended to the region buffer, replacing any index
        entry of the key. Yields I/O only when the buffer is full: one whole-region Write,
        then, if the clean pool ran low, a reclaim (a region Read if reinsertion keeps
        something, a Trim with ``trim_on_reclaim``); and once after ``recover()``, a Read
        of the open region to bring back what ``flush()`` wrote of it. ``expiry`` is an absolute time in
        seconds of ``clock`` (0 = never), rounded up to a whole second. ValueError if the
        item is larger than ``max_item_size``."""
        key = _check_bytes("key", key)
        value = _check_bytes("value", value)
        klen, vlen = len(key), len(value)
        if klen > MAX_KEY_LEN:
            raise ValueError(f"BlockCache: key of {klen} bytes: keys are at most {MAX_KEY_LEN} bytes")
        if klen + vlen > self.max_item_size:
            raise ValueError(
                f"BlockCache: item of {klen + vlen} bytes (key {klen} + value {vlen}) exceeds max_item_size "
                f"{self.max_item_size} (region_size {self.region_size} - entry header {HEADER_SIZE}); "
                "use a larger region_size"
            )
        expiry = expiry_seconds("BlockCache", expiry)
        return self._insert(key, value, expiry)

    def _insert(self, key, value, expiry: int) -> Op[InsertResult]:
        with self.lock:
            c = self._counters
            evicted0, reinserted0 = c["evicted_items"], c["reinsertions"]
            klen, vlen = len(key), len(value)
            units = -(-(HEADER_SIZE + klen + vlen) // self.alignment)
            kh = key_hash(key)
            unit = yield from self._append(units, kh, expiry, key, value, 0)
            old = self.index.put(kh >> 32, self.regions.open * self._upr + unit, units)
            c["inserts"] += 1
            c["inserted_bytes"] += klen + vlen
            c["replaced"] += old is not None
            if self.durable:
                yield from self._write_tail()
            return InsertResult(old is not None, c["evicted_items"] - evicted0, c["reinsertions"] - reinserted0)

    def _append(self, units: int, kh: int, expiry: int, key, value, flags: int) -> Op[int]:
        """Make room for ``units`` (reading the open region back after ``recover()``,
        sealing a full one) and encode an entry there with the next ``seq``; its unit."""
        regions = self.regions
        if not regions.loaded:  # after recover(): what flush() wrote of the open region
            data = yield Read(self.region_offset(regions.open), self.region_size)
            self._counters["bytes_read"] += self.region_size
            if not regions.loaded:
                regions.load_buffer(data)
        if regions.room() < units:
            yield from self._seal(reserve=units)
        unit = regions.take(units)
        encode_into(regions.buf, unit * self.alignment, kh, self.generation, expiry, key, value, self.seq, flags)
        self.seq += 1
        return unit

    def _write_tail(self) -> Op[None]:
        """Write what the open region's buffer holds beyond what is on flash: from the
        block holding the first unwritten unit to the block holding the last one
        (rewriting a partial block is fine: its written part is the same bytes)."""
        regions = self.regions
        if not regions.dirty:
            return
        io, align = self.io_alignment, self.alignment
        start = regions.flushed * align // io * io
        end = -(-(regions.fill * align) // io) * io
        fill, seq = regions.fill, self.seq
        yield Write(self.region_offset(regions.open) + start, bytes(regions.view[start:end]), self.stream)
        regions.flushed = fill
        self._flushed_seq = seq
        self._counters["tail_writes"] += 1
        self._counters["bytes_written"] += end - start

    def _write_open(self) -> Op[None]:
        regions = self.regions
        fill = regions.fill
        seq = self.seq
        yield Write(self.region_offset(regions.open), regions.buf, self.stream)
        regions.flushed = fill
        self._flushed_seq = seq
        self._counters["region_writes"] += 1
        self._counters["bytes_written"] += self.region_size

    def _seal(self, reserve: int = 0) -> Op[None]:
        """Write the open region (unless flush() already did), open the next clean one,
        and reclaim regions until ``clean_regions`` are clean again."""
        regions = self.regions
        if regions.dirty:
            yield from self._write_open()
        sealed = regions.seal_open()
        self._flushed_seq = self.seq      # the new open region is empty
        self._sealed_at[sealed] = self.seq
        self.eviction.track(sealed)
        while len(regions.pool) < self.clean_regions:
            yield from self._reclaim(reserve)
        self._seals_since += 1
        now = self.clock()
        if ((self.checkpoint_regions and self._seals_since >= self.checkpoint_regions)
                or (self.checkpoint_seconds and now - self._checkpoint_at >= self.checkpoint_seconds)):
            self._counters["checkpoints_due"] += 1
            if self.checkpoint_hook is not None:
                self.checkpoint_hook()

    def checkpointed(self, state: dict) -> None:
        """The router saved ``state`` (``persist()``'s) as a checkpoint: restart the period
        and the tombstone journal (the checkpoint covers every tombstone before it)."""
        self._seals_since = 0
        self._checkpoint_at = self.clock()
        self._saved_ckpt = state["checkpoint_seq"]
        self._journal_epoch = state["journal_epoch"]
        self._journal_next = 0
        self._pending = [t for t in self._pending if t[0] >= state["checkpoint_seq"]]

    def _reclaim(self, reserve: int = 0) -> Op[None]:
        """Evict one sealed region: reinsert what qualifies, drop the rest, trim, release."""
        c = self._counters
        idx, regions = self.index, self.regions
        victim = self.eviction.victim()
        if self.checkpoint_hook is not None and self._sealed_at[victim] > self._saved_ckpt:
            # written since the last checkpoint: its tombstones may still be needed by a
            # replay, which after a checkpoint starts past them
            self._counters["checkpoints_due"] += 1
            self.checkpoint_hook()
        self.eviction.forget(victim)
        lo = victim * self._upr
        hi = lo + self._upr
        if self.reinsertion.enabled:
            slots = idx.slots_in(lo, hi)
            chosen = slots[self.reinsertion.select(idx.hits[slots])] if len(slots) else slots
            if len(chosen):
                tags = idx.tag[chosen].tolist()
                addrs = idx.addr[chosen].tolist()
                data = yield Read(self.region_offset(victim), self.region_size)
                c["reinsertion_reads"] += 1
                c["bytes_read"] += self.region_size
                self._reinsert(victim, data, tags, addrs, reserve)
        slots = idx.slots_in(lo, hi)  # again: the index may have changed during the Read
        idx.drop(slots)
        c["evicted_items"] += len(slots)
        c["evicted_regions"] += 1
        if self.trim_on_reclaim:
            yield Trim(self.region_offset(victim), self.region_size)
            c["trims"] += 1
        if regions.dirty and self.durable:
            yield from self._write_tail()   # reinserted copies first, then the originals go
        if self.checkpoint_hook is not None:   # under a router that checkpoints: crash-safe
            yield from self._write_marker(victim)
        regions.release(victim)

    def _write_marker(self, region: int) -> Op[None]:
        """Mark ``region`` reclaimed on flash (its first block: a MARKER entry with the
        next seq, then zeros), so a crash recovery drops the checkpoint's entries in it."""
        block = bytearray(self.io_alignment)
        encode_into(block, 0, 0, self.generation, 0, b"", b"", self.seq, MARKER)
        self.seq += 1
        # not on the engine's stream: a block there would shift every later region off its
        # reclaim-unit boundary on an FDP device (the region's rewrite overwrites it anyway)
        yield Write(self.region_offset(region), bytes(block), None)
        self._counters["markers"] += 1
        self._counters["recovery_bytes_written"] += len(block)

    def _reinsert(self, victim: int, data: bytes, tags: list[int], addrs: list[int], reserve: int) -> None:
        """Append the chosen entries, verbatim, to the buffer, keeping ``reserve`` units
        free (for the insert that caused the reclaim)."""
        c = self._counters
        idx, regions, align = self.index, self.regions, self.alignment
        mv = memoryview(data)
        lo = victim * self._upr
        now = self.clock()
        for tag, addr in zip(tags, addrs):
            slot = idx.find(tag)
            if slot < 0 or idx.addr_of(slot) != addr:
                continue  # removed or overwritten while the region was read
            pos = (addr - lo) * align
            try:
                h = decode(mv, pos, self.region_size)
            except CorruptEntry as exc:
                c["checksum_failures"] += 1
                log.warning("BlockCache: entry at offset %d (region %d) is corrupt (%s); not reinserted",
                            self.offset + addr * align, victim, exc)
                continue
            if h.generation != self.generation or h.key_hash >> 32 != tag or (h.expiry and h.expiry <= now):
                continue
            units = -(-h.length // align)
            if regions.room() - reserve < units:
                c["reinsertion_dropped"] += 1
                continue
            unit = regions.take(units)
            start = unit * align
            regions.view[start:start + h.length] = mv[pos:pos + h.length]
            restamp(regions.view, start, h.length, self.seq)   # a copy is the newest in log order
            self.seq += 1
            idx.move(slot, regions.open * self._upr + unit)
            c["reinsertions"] += 1

    def remove(self, key: bytes | bytearray | memoryview) -> Op[bool]:
        """Drop ``key`` from the index. True if an index entry with the key's tag was there
        (it may have been another key's: dropping it is always safe). Under a router
        (``journal`` set) a tombstone for the key is then written to the journal before
        this returns (one block Write), so that no crash recovery replays an older copy.
        No I/O when the index did not hold the tag."""
        key = _check_bytes("key", key)
        return self._remove(key)

    def _remove(self, key) -> Op[bool]:
        with self.lock:
            c = self._counters
            c["removes"] += 1
            kh = key_hash(key)
            slot = self.index.find(kh >> 32)
            if slot < 0:
                return False
            self.index.delete(slot)
            c["removed"] += 1
            if self.journal is None:
                return True
            c["tombstones"] += 1
            offset, blocks, bsize = self.journal
            if self._journal_next >= blocks and self.checkpoint_hook is not None:
                c["checkpoints_due"] += 1
                self.checkpoint_hook()          # the journal is full: a checkpoint covers it, it restarts
            if self._journal_next < blocks:
                at = self._journal_next
                self._journal_next += 1
                data = journal_block(bsize, self._journal_epoch, self.generation, [(self.seq, kh)])
                self._pending.append((self.seq, kh))
                self.seq += 1
                yield Write(offset + at * bsize, data, None)
                c["recovery_bytes_written"] += bsize     # off the stream: not in bytes_written
                return True
            # no checkpoint could be saved: the tombstone goes in the log, written at once
            yield from self._append(-(-(HEADER_SIZE + len(key)) // self.alignment), kh, 0, key, b"", TOMBSTONE)
            yield from self._write_tail()
            return True

    # ------------------------------------------------------------------ lifecycle

    def flush(self) -> Op[bool]:
        """Write the open region's buffer (the whole region) if it holds anything not yet
        on flash, so a clean shutdown loses nothing. True if it wrote. Later inserts keep
        filling the same region, which is written again when full."""
        return self._flush()

    def _flush(self) -> Op[bool]:
        with self.lock:
            if not self.regions.dirty:
                return False
            yield from self._write_open()
            self._counters["flushes"] += 1
            return True

    def held(self) -> threading.RLock:
        """The engine's one lock (see ``Engine.held``)."""
        return self.lock

    def reset(self) -> None:
        """Empty the engine without I/O: an empty index, every region clean, and a new
        generation so that nothing written before can be read back as current.

        The new ``generation`` must be made durable by the owner (``persist()`` or its
        superblock) and passed back on construction.
        """
        self.generation = (self.generation + 1) & _M64
        self.index.clear()
        self.regions.reset()
        self._sealed_at[:] = 0
        self._flushed_seq = self.seq
        self._use_eviction(eviction_mod.make(self.eviction_name, self.nregions, self.segment_ratio))

    def persist(self) -> dict:
        """The DRAM state as msgpack-friendly plain types (geometry, generation, counters,
        index arrays, region states and eviction order), for ``recover()`` after a clean
        restart. Call ``flush()`` first: items still only in the buffer are left out."""
        regions = self.regions
        exclude = None
        if regions.dirty:  # entries past what flush() wrote are not on flash
            lo = regions.open * self._upr
            exclude = (lo + regions.flushed, lo + self._upr)
        state = {
            "engine": "blockcache",
            "format_version": FORMAT_VERSION,
            "offset": self.offset,
            "size": self.size,
            "region_size": self.region_size,
            "alignment": self.alignment,
            "generation": self.generation,
            "seq": self.seq,
            "checkpoint_seq": self._flushed_seq,
            "journal_epoch": self._journal_epoch + 1,   # the tombstones written after this state
            "counters": self._counts(),
            "index": self.index.to_state(exclude),
            "regions": regions.to_state(),
            "eviction": self.eviction.to_state(),
        }
        carried = [[q, kh] for q, kh in self._pending if q >= self._flushed_seq]
        if carried:                 # (only when there are some: a state without them reads as before)
            state["tombstones"] = carried
        return state

    def recover(self, state: dict | None) -> bool:
        """Restore what ``persist()`` saved. False (and nothing changed) if the state is
        missing, malformed, or saved with another geometry or format.

        The buffer's bytes are not in the state: the open region stays open with what
        ``flush()`` wrote of it, served from flash until the next insert reads it back."""
        parsed = self._parse_state(state)
        if parsed is None:
            return False
        assert state is not None                  # _parse_state(None) is None
        generation, index, regions, eviction, restored, seq, _ = parsed
        self._journal_epoch, self._journal_next = state["journal_epoch"], 0
        self._pending = []
        self.regions.load_state(regions)
        self.generation = generation
        self._use_index(index)
        self._use_eviction(eviction)
        self._counters = restored
        self._core.reset_counters()
        self.seq = self._flushed_seq = seq
        return True

    def _parse_state(self, state: dict | None):
        """``persist()``'s state checked and parsed, or None (logged) if it does not fit."""
        try:
            if not isinstance(state, dict) or state.get("engine") != "blockcache":
                return None
            same = (
                state["format_version"] == FORMAT_VERSION
                and state["offset"] == self.offset
                and state["size"] == self.size
                and state["region_size"] == self.region_size
                and state["alignment"] == self.alignment
            )
            if not same:
                log.info("BlockCache: saved state has another geometry or format; starting cold")
                return None
            generation = state["generation"]
            if not isinstance(generation, int) or not 0 <= generation <= _M64:
                return None
            index = Index.from_state(state["index"], self.nregions * self._upr)
            parsed = self.regions.parse_state(state["regions"])
            eviction = eviction_mod.make(self.eviction_name, self.nregions, self.segment_ratio)
            eviction.load_state(state["eviction"])
            # Every indexed entry sits in a sealed region or in the flushed part of the open one.
            rstates, _, opened, flushed = parsed
            _, addr, _, _ = index.entries()
            regs = addr // self._upr
            bad = (rstates[regs] != SEALED) & ((regs != opened) | (addr >= opened * self._upr + flushed))
            if bad.any():
                raise ValueError("index points outside the sealed regions and the flushed buffer")
            if (eviction.tracked != (rstates == SEALED)).any():
                raise ValueError("eviction order does not match the sealed regions")
            counters = state.get("counters") or {}
            restored = {k: int(counters.get(k, 0)) for k in _COUNTERS}
            seq, ckpt, epoch = state["seq"], state["checkpoint_seq"], state["journal_epoch"]
            if not isinstance(epoch, int) or not 1 <= epoch <= _M64:
                raise ValueError(f"bad journal epoch {epoch!r}")
            tombstones = state.get("tombstones") or []
            if not isinstance(tombstones, list) or not all(
                    isinstance(t, list) and len(t) == 2 and all(isinstance(x, int) and 0 <= x <= _M64 for x in t)
                    for t in tombstones):
                raise ValueError("bad carried tombstones")
            if not (isinstance(seq, int) and isinstance(ckpt, int) and 1 <= ckpt <= seq <= _M64):
                raise ValueError(f"bad log sequence numbers {seq!r}, {ckpt!r}")
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            log.info("BlockCache: saved state unreadable (%s); starting cold", exc)
            return None
        return generation, index, parsed, eviction, restored, seq, ckpt

    def replay(self, state: dict | None) -> Op[dict | None]:
        """Crash recovery: start from a checkpoint (``persist()``'s state, saved while
        running), then replay the log written after it. None (nothing changed) if the
        state does not fit; else what it read: ``bytes_read``, ``regions_replayed``,
        ``entries_replayed``, ``tombstones``, ``dropped`` (checkpoint entries in regions
        reclaimed since). Reads one block per region (its first entry's seq says whether
        it was rewritten since the checkpoint) and the regions written since, never the
        rest. See the module docstring for why nothing older than the newest copy on flash
        comes back."""
        parsed = self._parse_state(state)
        if parsed is None:
            return None
        assert state is not None                  # _parse_state(None) is None
        generation, index, (rstates, _, open0, flushed0), _, restored, seq, ckpt = parsed
        if generation != self.generation:
            log.info("BlockCache: checkpoint of generation %d, the superblock says %d; starting cold",
                     generation, self.generation)
            return None
        align, io, upr = self.alignment, self.io_alignment, self._upr
        nread = 0
        first: list[int | None] = []          # each region's first entry's seq (None: no valid header)
        for r in range(self.nregions):
            if rstates[r] == LENT:             # another engine's now: never read
                first.append(None)
                continue
            data = yield Read(self.region_offset(r), io)
            nread += io
            first.append(_head_seq(data, generation))
        cont0 = flushed0 > 0 and (first[open0] is None or first[open0] < ckpt)  # open0 continued
        replay = sorted((r for r in range(self.nregions)
                         if rstates[r] != LENT and ((r == open0 and cont0) or (first[r] or 0) >= ckpt)),
                        key=lambda r: -1 if r == open0 and cont0 else (first[r] or 0))
        entries = []
        dropped = 0
        top = seq
        kinds: dict[int, int] = {}
        for r in replay:
            cont = r == open0 and cont0
            start = flushed0 * align // io * io if cont else 0
            if not cont:
                slots = index.slots_in(r * upr, (r + 1) * upr)
                dropped += len(slots)
                index.drop(slots)
            if start >= self.region_size:
                continue
            data = yield Read(self.region_offset(r) + start, self.region_size - start)
            nread += self.region_size - start
            mv = memoryview(data)
            pos = flushed0 * align - start if cont else 0
            prev = 0
            while pos + HEADER_SIZE <= len(mv):
                try:
                    h = decode(mv, pos, len(mv))
                except CorruptEntry:
                    break
                if h.generation != generation or h.seq <= prev:
                    break                              # the end of what was written here
                kstart = pos + HEADER_SIZE
                if h.flags != MARKER and key_hash(mv[kstart:kstart + h.key_len]) != h.key_hash:
                    break
                prev = h.seq
                units = -(-h.length // align)
                if h.seq >= ckpt:
                    entries.append((h.seq, h.flags, h.key_hash >> 32, r * upr + (start + pos) // align, units))
                    kinds[r] = kinds.get(r, 0) | (1 << h.flags)
                top = max(top, h.seq + 1)
                pos += units * align
        if self.journal is not None:        # the tombstones written since the checkpoint
            offset, blocks, bsize = self.journal
            data = yield Read(offset, blocks * bsize)
            nread += blocks * bsize
            for b in range(blocks):
                for s, kh in journal_records(memoryview(data)[b * bsize:(b + 1) * bsize], state["journal_epoch"],
                                             generation):
                    if s >= ckpt:
                        entries.append((s, TOMBSTONE, kh >> 32, 0, 0))
                        top = max(top, s + 1)
        for s, kh in state.get("tombstones") or ():   # carried by the checkpoint (see _pending)
            if s >= ckpt:
                entries.append((s, TOMBSTONE, kh >> 32, 0, 0))
                top = max(top, s + 1)
        entries.sort()
        tombs = 0
        for _, flags, tag, addr, units in entries:
            if flags == TOMBSTONE:
                tombs += 1
                slot = index.find(tag)
                if slot >= 0:
                    index.delete(slot)
            elif flags == 0:
                index.put(tag, addr, units)
        # Regions: what holds entries is sealed, oldest first in the eviction order; a new
        # open region from the clean ones (reclaiming the oldest if none is left).
        st = rstates.copy()
        for r in replay:
            holds = (r == open0 and cont0) or bool(kinds.get(r, 0) & 0b11)
            st[r] = SEALED if holds else CLEAN
        st[st == OPEN] = SEALED if flushed0 else CLEAN
        for r in range(self.nregions):
            top = max(top, (first[r] or 0) + 1)
        sealed = sorted((r for r in range(self.nregions) if st[r] == SEALED), key=lambda r: first[r] or 0)
        self.generation = generation
        self.seq = self._flushed_seq = top
        self._journal_epoch, self._journal_next = state["journal_epoch"], 0
        self._pending = []        # replayed: the checkpoint right after covers them
        self._sealed_at[:] = 0    # the router checkpoints at once after a replay
        self._use_index(index)
        while int((st == CLEAN).sum()) < self.clean_regions + 1:
            victim = sealed.pop(0)
            slots = index.slots_in(victim * upr, (victim + 1) * upr)
            index.drop(slots)
            restored["evicted_items"] += len(slots)
            restored["evicted_regions"] += 1
            yield from self._write_marker(victim)
            st[victim] = CLEAN
        pool = [int(r) for r in np.flatnonzero(st == CLEAN)]
        opened = pool.pop(0)
        st[opened] = OPEN
        self.regions.load_state((st, pool, opened, 0))
        eviction = eviction_mod.make(self.eviction_name, self.nregions, self.segment_ratio)
        for r in sealed:
            eviction.track(r)
        self._use_eviction(eviction)
        restored["bytes_read"] += nread
        self._counters = restored
        self._core.reset_counters()
        return {"bytes_read": nread, "regions_replayed": len(replay), "entries_replayed": len(entries),
                "tombstones": tombs, "dropped": dropped, "checkpoint_seq": ckpt, "items": len(index)}

    def stats(self) -> dict:
        """Counters since creation (kept across ``recover``), plus geometry, the index's
        DRAM use, regions by state and ``items``: the index's entries, so exact
        (``items_exact``), expired entries not yet evicted included."""
        s: dict[str, Any] = self._counts()
        items = len(self.index)
        dram = self.index.dram_bytes
        st = self.regions.state
        s.update(
            evictions=s["evicted_items"],
            items=items,
            items_exact=True,
            index_dram_bytes=dram,
            index_bytes_per_item=dram / items if items else None,
            index_capacity=self.index.capacity,
            index_load=items / self.index.capacity,
            index_slot_bytes=SLOT_BYTES,
            nregions=self.nregions,
            limit=self.limit,
            clean=int((st == 0).sum()),
            sealed=int((st == SEALED).sum()),
            buffer_bytes=self.regions.fill * self.alignment,
            region_size=self.region_size,
            alignment=self.alignment,
            max_item_size=self.max_item_size,
            eviction=self.eviction_name,
            generation=self.generation,
        )
        return s

    def __repr__(self) -> str:
        return (f"BlockCache(offset={self.offset}, size={self.size}, region_size={self.region_size}, "
                f"alignment={self.alignment}, nregions={self.nregions}, eviction={self.eviction_name!r})")
