"""The Navy-style router: one device, a superblock, a list of engines by size class,
admission in front, warm restart behind.

Owns the device layout ``| superblock | metadata | engine extents, in list order |``,
routing by size, admission, placement streams (one per engine, from the device), the
superblock (``engines.superblock``) and the clean-shutdown metadata. It knows its engines
only through the Engine interface (``engines.engine``): ``default_engines`` below is the
one place that names the default ones (BlockCache, then BigHash). Item operations are sans-I/O
generators (see ``engines.device``); the blocking forms are one C call each (the Router,
engines/_router.c) over the engines' own C forms. Opening and closing do blocking I/O on
the device they were given.

Checkpoints and crash recovery. The metadata area holds two checkpoint slots
(``engines.superblock``) and, at its end, BlockCache's tombstone journal (``journal_blocks``
blocks: one per remove of a key BlockCache held, since the last checkpoint; a full journal
asks for a checkpoint). BlockCache asks for a checkpoint every ``checkpoint_regions``
sealed regions or ``checkpoint_seconds`` (checked at each seal), and before it reclaims a
region written since the last one; the router then writes BlockCache's ``persist()``
state to the older slot and fdatasyncs. A clean ``close()`` writes every engine's state
as a checkpoint marked clean and names it in the superblock. On open: that clean
checkpoint restores every engine (warm); otherwise (a crash) BlockCache replays the log
written after the newest valid checkpoint (``BlockCache.replay``: one block per region,
then only the regions written since) and the other engines start cold (BigHash keeps its
buckets). The surprise: the superblock's clean mark is cleared right after open, so a
later crash never trusts BigHash's saved bloom filters, while the checkpoint stays valid
for BlockCache; and after a replay the router checkpoints at once, so a second crash
does not replay a log whose tombstones the new run may overwrite.

Ordering against resurrection: an insert drops the key from the other engines *before*
it writes to its own (a BlockCache remove writes its tombstone before returning), so no
crash leaves an older copy in one engine beside a newer one in another; see
engines/blockcache/blockcache.py's docstring for BlockCache alone.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import inspect
import logging
import math
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import msgpack
import xxhash

from . import superblock
from ._router_c import Router
from .admission import AcceptAll, Admission
from .bighash import BigHash
from .blockcache import BlockCache
from .device import Device, Op, Write, run
from .engine import Engine, merged_counters

log = logging.getLogger(__name__)

FORMAT_VERSION = superblock.FORMAT_VERSION
META_FORMAT = 2     # the metadata area as two checkpoint slots (1: one clean-shutdown blob)

# The router's own counters (lifetime: saved in the warm-restart metadata).
COUNTERS = ("lookups", "hits", "misses", "inserts", "admission_rejects", "too_large", "removes",
            "removed")


@dataclass(frozen=True)
class Slot:
    """One engine's place in the router: its class, its ``share`` of the flash after the
    metadata (the first engine with a share takes what the others leave, the last one
    what remains after rounding), the largest key + value its size class takes
    (``max_item``; None: as large as the engine takes) and its own ``options``."""

    engine: type[Engine]
    share: float
    max_item: int | None = None
    options: Mapping[str, Any] = field(default_factory=dict)


def default_engines(*, small_item_max: int = 2048, bighash_fraction: float = 0.1, bucket_size: int = 4096,
            bloom_bytes_per_bucket: int = 8, region_size: int = 16 << 20, alignment: int = 512,
            clean_regions: int = 1, blockcache_options: Mapping[str, Any] | None = None) -> list[Slot]:
    """The default engines, in device and lookup order: BlockCache for large items (its
    index is in DRAM: a lookup it does not hold costs no I/O), BigHash for items up to
    ``small_item_max``. A third engine is one more line here (and its folder)."""
    return [
        Slot(BlockCache, 1.0 - bighash_fraction, None,
             {"region_size": region_size, "alignment": alignment, "clean_regions": clean_regions,
              **(blockcache_options or {})}),
        Slot(BigHash, bighash_fraction, small_item_max,
             {"bucket_size": bucket_size, "bloom_bytes_per_bucket": bloom_bytes_per_bucket}),
    ]


# bighash_fraction = "auto" (README, "The split"): BigHash's share is the small items' share
# of the item bytes the engines took, as the device's superblock has recorded it (decayed:
# halved while it holds more than MIX_WINDOW device sizes), decided when the cache formats;
# before MIX_SAMPLE device sizes of items were seen, AUTO_PRIOR. Rounded to AUTO_STEP so a
# split does not change for noise, within [AUTO_MIN, AUTO_MAX] so neither engine vanishes.
AUTO_PRIOR = 0.25
AUTO_MIN, AUTO_MAX, AUTO_STEP = 0.02, 0.9, 0.01
MIX_SAMPLE, MIX_WINDOW = 0.5, 8.0
# The split moves while the cache runs (README, "The split"): every SPLIT_EVERY inserts
# (``split_every``) the router compares BigHash with the share auto_fraction gives the
# mix seen so far, and grows it by at most one bucket (one read, two bucket writes) or
# shrinks it by at most one (a merge: two reads, two bucket writes). Hysteresis: BigHash
# grows while it has fewer buckets than that share asks for, and shrinks only while it has
# more than the share plus SPLIT_HYSTERESIS asks for, so a mix that wobbles by less than
# that (two AUTO_STEPs) never turns splits into merges and back.
SPLIT_EVERY = 32
SPLIT_HYSTERESIS = 0.02


def auto_fraction(mix: Mapping[str, float], device_size: int, cap: float = 1.0) -> float:
    """BigHash's share for an "auto" split from the observed ``mix`` ({"small": bytes,
    "large": bytes} of items the engines took), at most ``cap`` (``waf_cap``)."""
    small, large = float(mix.get("small", 0.0)), float(mix.get("large", 0.0))
    share = AUTO_PRIOR
    if small + large >= MIX_SAMPLE * device_size:
        share = round(small / (small + large) / AUTO_STEP) * AUTO_STEP
    return round(min(AUTO_MAX, cap, max(AUTO_MIN, share)), 2)


def soc_waf(alpha: float) -> float:
    """Device WAF of uniform random page overwrites over a space of ``alpha`` times the
    live data (Desnoyers 2012, eq. 4: alpha / (alpha + W(-alpha e^-alpha)), W the principal
    Lambert W). BigHash's bucket rewrites behind a placement handle of their own behave so
    with alpha = (BigHash + the device's spare) / BigHash (Allison et al. 2025, Theorem 1;
    docs/waf-model.md); BlockCache's log adds WAF 1."""
    if alpha <= 1.0:
        return math.inf
    x = -alpha * math.exp(-alpha)
    w = -0.5 if alpha > 1.05 else -1.0 + math.sqrt(2 * (1 + math.e * x))   # near the branch point
    for _ in range(60):                      # Newton on w e^w = x, w in (-1, 0)
        ew = math.exp(w)
        step = (w * ew - x) / (ew * (w + 1))
        w -= step
        if abs(step) < 1e-12:
            break
    return alpha / (alpha + w)


def waf_cap(limit: float, spare: int, room: int) -> float:
    """The largest BigHash share (of ``room``, the bytes after the metadata; a multiple of
    AUTO_STEP, at least AUTO_MIN) whose bucket rewrites ``soc_waf`` predicts at most
    ``limit`` on a device with ``spare`` bytes of spare area (its over-provisioning plus
    what the cache leaves unused)."""
    share = AUTO_MAX
    while share > AUTO_MIN + 1e-9 and soc_waf(1 + spare / (share * room)) > limit:
        share = round(share - AUTO_STEP, 2)
    return max(AUTO_MIN, share)


def _class_order(slot: Slot) -> tuple[bool, int]:
    """Smallest size class first; classes without a bound last."""
    return slot.max_item is None, slot.max_item or 0


def _round_up(x: int, unit: int) -> int:
    return -(-x // unit) * unit


class Navy:
    """The engines on one device (see the module docstring).

    ``engines``: the Slots, in device and lookup order (default: ``default_engines(...)`` with
    the keyword arguments it shares with this constructor: ``small_item_max``, key +
    value bytes up to which an item goes to BigHash; ``bighash_fraction``, BigHash's share
    of the space after the metadata (0: none, 1: no BlockCache); ``bucket_size``,
    ``bloom_bytes_per_bucket``, ``region_size``, ``alignment``, ``clean_regions``, and
    ``blockcache_options`` for BlockCache as they are: eviction, reinsertion, ...).
    ``metadata_fraction``: share of the device kept for clean-shutdown metadata (at least
    1 MiB).

    After construction ``start`` says how the cache came up: ``"warm"``, or
    ``"cold: <why>"`` / ``"formatted: <why>"``.
    """

    def __init__(self, device: Device, *, small_item_max: int = 2048, bighash_fraction: float | str = "auto",
                 bucket_size: int = 4096, bloom_bytes_per_bucket: int = 8, region_size: int = 16 << 20,
                 alignment: int = 512, clean_regions: int = 1, metadata_fraction: float = 0.01,
                 blockcache_options: dict[str, Any] | None = None, admission: Admission | None = None,
                 clock: Callable[[], float] = time.time, engines: Sequence[Slot] | None = None,
                 split_waf_limit: float = 0.0, split_every: int = SPLIT_EVERY):
        self.auto = bighash_fraction == "auto" and engines is None
        if engines is None and not self.auto and (isinstance(bighash_fraction, str)
                                                  or not 0.0 <= bighash_fraction <= 1.0):
            raise ValueError(f"navy: bighash_fraction = {bighash_fraction!r}: use a share from 0 to 1, or \"auto\"")
        if not 0.0 < metadata_fraction < 0.5:
            raise ValueError(f"navy: metadata_fraction = {metadata_fraction!r}: use a share above 0, below 0.5")
        if small_item_max < 1:
            raise ValueError(f"navy: small_item_max = {small_item_max!r}: use a positive number of bytes")
        if isinstance(split_every, bool) or not isinstance(split_every, int) or split_every < 0:
            raise ValueError(f"navy: split_every = {split_every!r}: use a whole number of inserts between two steps "
                             f"of the moving split ({SPLIT_EVERY} is the default), or 0 to decide the split only "
                             "when the cache formats")
        self.split_every = split_every
        self.device = device
        self.clock = clock
        self.admission = admission or AcceptAll()
        self.block = max(device.block_size, 4096)
        self._metadata_fraction = metadata_fraction
        self.split_waf_limit = split_waf_limit
        self.split_cap = self._waf_cap(split_waf_limit, metadata_fraction) if self.auto else 1.0
        """The largest share "auto" gives BigHash (1.0: no limit; see ``waf_cap``)."""
        # the mix of item bytes this device has seen (superblock), for an "auto" split
        sb = self._peek()
        self._mix_base = dict(sb.mix) if sb is not None else {}

        def slots(fraction: float) -> list[Slot]:
            return default_engines(small_item_max=small_item_max, bighash_fraction=fraction,
                                   bucket_size=bucket_size, bloom_bytes_per_bucket=bloom_bytes_per_bucket,
                                   region_size=region_size, alignment=alignment, clean_regions=clean_regions,
                                   blockcache_options=blockcache_options)
        if not self.auto:
            self._build(list(engines) if engines is not None else slots(float(bighash_fraction)), None)
        else:
            # the split recorded on the device, kept while the layout holds (warm restart,
            # crash recovery); when the cache formats anyway, the one its mix says
            recorded = ((sb.layout.get("split") or {}).get("auto") if sb is not None else None)
            decided = auto_fraction(self._mix_base, device.size, self.split_cap)
            fraction = recorded if isinstance(recorded, float) else decided
            self._build(slots(fraction), fraction)
            if fraction != decided and (sb is None or sb.fingerprint != self.fingerprint):
                self._build(slots(decided), decided)
        self._counters = dict.fromkeys(COUNTERS, 0)
        self._rejects = dict.fromkeys(self.engines, 0)
        self._closed = False
        self._ckpt: dict[str, Any] = {"seq": 0, "slot": 1, "written": 0, "bytes": 0, "skipped": 0, "last_skip": ""}
        self.recovery: dict[str, Any] | None = None
        """After a crash recovery: what BlockCache's replay read (bytes_read, seconds, ...)."""
        for eng in self.engines.values():
            if hasattr(eng, "journal"):
                eng.journal = (self.journal_at, self.journal_blocks, self.block)
        bc = self.blockcache
        self._limit0 = bc.limit if self.moving and bc is not None else 0     # the format's
        self._durable_limit = self._limit0
        """BlockCache's regions in use as the newest checkpoint records them: BigHash grows
        only below them (see ``step_split``)."""
        self.start = self._open()
        for eng in self.engines.values():
            if hasattr(eng, "checkpoint_hook"):
                eng.checkpoint_hook = functools.partial(self._checkpoint, eng)
                if self.start != "warm" and self.recovery is None:
                    with eng.held():       # a first checkpoint: a crash before the first seal replays
                        self._checkpoint(eng)
        self._inserted_at_open = self._inserted()
        self._since_step = 0
        self.split_errors = 0
        self._step_lock = threading.Lock()
        self.taken_back = 0
        """Regions BlockCache took back from BigHash since this open (``step_split``)."""
        if self.moving and split_every:
            self._router.tick = self._step_now
            self._router.tick_every = split_every
        log.info("%s: flash cache %s", device.path, self.start)

    def _build(self, engines: list[Slot], auto: float | None) -> None:
        """The engines on their extents, the layout and the C Router (``auto``: the split
        "auto" chose, recorded in the layout)."""
        device, clock = self.device, self.clock
        engines = list(engines)
        self.slots = engines
        names = [s.engine.name for s in self.slots]
        if not self.slots or len(set(names)) != len(names):
            raise ValueError(f"navy: engines {names}: name each engine once")
        if any(not 0.0 <= s.share <= 1.0 for s in self.slots):
            raise ValueError(f"navy: engine shares {[s.share for s in self.slots]}: use shares from 0 to 1")
        extents = self._split(self._metadata_fraction)
        self.moving = False
        """Whether the split moves while the cache runs ("auto" with both engines)."""
        if auto is not None:
            engines, extents = self._moving_extents(engines, extents)
            self.slots = engines
        self.engines: dict[str, Engine] = {}
        """The engines that got space, by name, in device and lookup order."""
        # streams open smallest size class first (Navy's order: BigHash takes placement
        # handle 1, BlockCache the next)
        self.streams = {s.engine.name: device.open_stream(s.engine.name)
                        for s, (_, size) in sorted(zip(self.slots, extents), key=lambda x: _class_order(x[0]))
                        if size}
        limits: dict[str, int] = {}
        layouts: dict[str, dict[str, Any]] = {}
        for slot, (offset, size) in zip(self.slots, extents):
            if not size:
                continue
            name = slot.engine.name
            eng = slot.engine.build(offset, size, stream=self.streams[name], clock=clock,
                                    block_size=device.block_size, options=slot.options)
            self.engines[name] = eng
            limits[name] = eng.max_item_size if slot.max_item is None else min(slot.max_item, eng.max_item_size)
            layouts[name] = {"offset": offset, "size": size, "max_item": slot.max_item, **eng.layout()}
        if not self.engines:
            raise ValueError(f"navy: a {device.size}-byte device has room for no engine; use a larger device")
        self._limits = limits
        self._by_size = sorted(self.engines.values(), key=lambda e: limits[e.name])
        self._place_at = {name: i for i, name in enumerate(self.engines)}   # the Router's engine numbers
        bounded = [e for e in self._by_size if self._slot(e.name).max_item is not None]
        self.small_item_max = limits[bounded[0].name] if bounded else 0
        """The largest key + value of the smallest explicit size class (BigHash's), or 0."""
        self.layout = {"version": FORMAT_VERSION, "device_size": device.size, "block": self.block,
                       "meta_end": self.meta_end, "meta_format": META_FORMAT, "engines": layouts}
        if auto is not None:
            self.layout["split"] = {"auto": auto}
        # the metadata area: two checkpoint slots, then BlockCache's tombstone journal
        self.journal_blocks = max(8, min(1024, (self.meta_end - self.block) // 8 // self.block))
        self.journal_at = self.meta_end - self.journal_blocks * self.block
        self.slot_size = (self.journal_at - self.block) // 2 // self.block * self.block
        self.fingerprint = superblock.fingerprint(self.layout)
        # The blocking forms in C: the engines in lookup order, each with its C operations
        # where it has them and its Python forms where not.
        self._router = Router(device)
        for name, eng in self.engines.items():
            self._router.add(eng.c_ops(), limits[name], functools.partial(eng.lookup_item_now, device),
                             eng.may_hold, functools.partial(self._remove_now, eng))
        self._router.accept_all = self._accept_all
        self.lookup_now = self._router.lookup
        """``lookup_item_now(self.device, key)`` for a bytes key, as one C call."""
        self.may_hold_now = self._router.may_hold
        """``may_hold(key)`` for a bytes key, as one C call."""
        self.insert_hook = self._router.insert_hook
        """``insert_hook()``: a capsule "engines.navy.insert" for a C caller (the cache's
        demotions): ``insert_now(self.device, ...)`` for what the C form takes, declining
        the rest (see engines/_router.c)."""

    def _moving_extents(self, engines: list[Slot], extents: list[tuple[int, int]]
                        ) -> tuple[list[Slot], list[tuple[int, int]]]:
        """The extents of a split that moves: BlockCache's from its start up to BigHash's
        end (its regions in use: the split's), BigHash's from the lowest it may grow to
        (AUTO_MAX; BlockCache keeps ``min_regions``; ``split_cap`` bounds the target, not
        the extent, so a changed limit does not reformat) up to its end, its buckets in
        use: the split's (the bloom filters of the others are zeros, mapped lazily). The two overlap; the boundary is BlockCache's
        ``limit`` and BigHash's ``nbuckets``, kept in every checkpoint."""
        names = [s.engine.name for s in engines]
        if sorted(names) != ["bighash", "blockcache"]:
            return engines, extents
        ic, ih = names.index("blockcache"), names.index("bighash")
        (c_off, c_size), (h_off, h_size) = extents[ic], extents[ih]
        if not c_size or not h_size or h_off < c_off:
            return engines, extents
        co, ho = engines[ic].options, engines[ih].options
        region, bucket = co["region_size"], ho["bucket_size"]
        end = h_off + h_size
        nregions = (end - c_off) // region
        room = self.device.size - self.meta_end
        low = end - int(AUTO_MAX * room) // bucket * bucket
        low = max(low, c_off + BlockCache.min_regions(co.get("clean_regions", 1)) * region)
        low = min(_round_up(low, bucket), h_off)
        if nregions * region <= c_size:        # no whole region between them to move
            return engines, extents
        out = list(engines)
        out[ic] = dataclasses.replace(engines[ic], options={**co, "limit": c_size // region})
        out[ih] = dataclasses.replace(engines[ih], options={**ho, "linear": True, "active": h_size // bucket})
        ext = list(extents)
        ext[ic] = (c_off, nregions * region)
        ext[ih] = (low, end - low)
        self.moving = True
        return out, ext

    # -- the moving split ------------------------------------------------------------------
    def split_target(self) -> int:
        """The BigHash buckets the mix seen so far asks for (``auto_fraction`` of the room
        after the metadata, within BigHash's extent): it grows up to them."""
        return self._buckets_for(auto_fraction(self.mix(), self.device.size, self.split_cap))

    def merge_floor(self) -> int:
        """The most BigHash buckets the mix seen so far lets it keep: those of its share
        plus SPLIT_HYSTERESIS. Above them it shrinks (``step_split``), down to them."""
        return self._buckets_for(auto_fraction(self.mix(), self.device.size, self.split_cap) + SPLIT_HYSTERESIS)

    def _buckets_for(self, share: float) -> int:
        bh = self.bighash
        assert bh is not None
        return max(1, min(bh.capacity, int(min(share, 1.0) * (self.device.size - self.meta_end)) // bh.bucket_size))

    def step_split(self) -> Op[int]:
        """One step of the moving split, at most one bucket either way. While BigHash has
        fewer buckets than ``split_target``: one split (a bucket read, two bucket writes);
        when the next bucket reaches into a region BlockCache uses, BlockCache lends it
        first (its items are evicted) and a checkpoint records the new boundary before
        BigHash writes there. While BigHash has more than ``merge_floor``: one merge (two
        bucket reads, two writes: ``BigHash.merge``); once its lowest bucket in use leaves
        BlockCache's first lent region whole, a checkpoint records the count that no longer
        uses it together with BlockCache's limit + 1 and only then may BlockCache write
        there. Returns +1 (a split), -1 (a merge) or 0. One step at a time: a step that
        finds another running does nothing."""
        bh, bc = self.bighash, self.blockcache
        if not self.moving or bh is None or bc is None:
            return 0
        if not self._step_lock.acquire(blocking=False):
            return 0
        try:
            n = bh.nbuckets
            if n < self.split_target():
                return int((yield from self._grow(bh, bc)))
            if n > self.merge_floor():
                if not (yield from bh.merge()):
                    return 0
                yield from self._take_back(bh, bc)
                return -1
            yield from self._take_back(bh, bc)      # (a region a failed take-back left lent)
            return 0
        finally:
            self._step_lock.release()

    def _grow(self, bh: BigHash, bc: BlockCache) -> Op[bool]:
        low = bh.bucket_offset(bh.nbuckets)            # where the next bucket goes
        if low < bc.region_offset(self._durable_limit):
            if low < bc.region_offset(bc.limit) and not (yield from bc.lend()):
                return False                            # the open region, or BlockCache at its least
            with bc.held():
                self._checkpoint(bc)
            if low < bc.region_offset(self._durable_limit):
                return False                            # the checkpoint did not fit: no write there
        return bool((yield from bh.split()))

    def _take_back(self, bh: BigHash, bc: BlockCache) -> Op[bool]:
        """BlockCache's first lent region comes back when no bucket in use lies in it: in
        one checkpoint with the bucket count that does not use it (fdatasync'd with the
        merges' writes), before BlockCache can write there. A checkpoint that did not fit
        lends the region again (nothing was written there)."""
        limit = bc.limit
        if limit >= bc.nregions or bh.bucket_offset(bh.nbuckets - 1) < bc.region_offset(limit + 1):
            return False
        with bc.held():
            if not bc.take_back():
                return False
            self._checkpoint(bc)
            if self._durable_limit == bc.limit:
                self.taken_back += 1
                return True
            yield from bc.lend()                        # undo: the count is not durable
        return False

    def _step_now(self) -> None:
        """The C Router's tick: ``step_split`` with blocking I/O; an error is logged and
        counted (``split_errors``), never raised into the insert that ticked."""
        try:
            self.drive(self.step_split())
        except Exception as e:       # the insert that ticked succeeded: it must not fail
            self.split_errors += 1
            log.warning("%s: a step of the moving split failed (%s); the split stays where it was",
                        self.device.path, e)

    def _split_state(self) -> dict[str, int] | None:
        """The boundary of a moving split, as checkpoints record it."""
        if not self.moving:
            return None
        return {"limit": self.blockcache.limit, "nbuckets": self.bighash.nbuckets}   # type: ignore[union-attr]

    def _restore_split(self, split: Any) -> None:
        """Before the engines recover: the boundary a checkpoint recorded, if it is one
        this layout can hold (else the format's, which never overlaps)."""
        bh, bc = self.bighash, self.blockcache
        if not self.moving or not isinstance(split, dict) or bh is None or bc is None:
            return
        limit, n = split.get("limit"), split.get("nbuckets")
        if (not isinstance(limit, int) or not isinstance(n, int) or not 1 <= n <= bh.capacity
                or not BlockCache.min_regions(bc.clean_regions) <= limit <= bc.nregions
                or bc.region_offset(limit) > bh.bucket_offset(n - 1)):
            log.warning("%s: the checkpoint's split %r does not fit this layout; using the format's",
                        self.device.path, split)
            return
        bc.set_limit(limit)
        bh.use_buckets(n)
        self._durable_limit = limit

    def _waf_cap(self, limit: float, metadata_fraction: float) -> float:
        """``waf_cap`` for this device, or 1.0 with no limit (0). ValueError for a limit
        below 1 or a device that does not report its spare area."""
        if not limit:
            return 1.0
        if isinstance(limit, bool) or not isinstance(limit, (int, float)) or not limit > 1.0:
            raise ValueError(f"navy: split_waf_limit = {limit!r}: use a device WAF above 1 (e.g. 1.1), or 0 for none")
        spare = getattr(self.device, "spare_bytes", None)
        spare = spare() if callable(spare) else None
        if spare is None:
            raise ValueError(f"navy: split_waf_limit = {limit!r} needs the device's spare area, and "
                             f"{getattr(self.device, 'path', 'this device')} does not report it (only the emulated "
                             "SSD does); use 0 (no limit) or a fixed bighash_fraction")
        room = self.device.size - max(1 << 20, int(self.device.size * metadata_fraction)) - self.block
        return waf_cap(float(limit), spare, max(room, 1))

    def _slot(self, name: str) -> Slot:
        return next(s for s in self.slots if s.engine.name == name)

    def _split(self, metadata_fraction: float) -> list[tuple[int, int]]:
        """(offset, size) of each slot's extent (size 0: no room or no share); sets
        ``meta_end``. See ``Slot`` for how the shares are honoured."""
        dev = self.device
        units = [max(s.engine.extent_unit(s.options), 1) for s in self.slots]
        shared = [i for i, s in enumerate(self.slots) if s.share > 0.0]
        if not shared:
            raise ValueError("navy: every engine has a share of 0; give at least one a share")
        first, last = shared[0], shared[-1]
        meta_want = max(1 << 20, int(dev.size * metadata_fraction))
        self.meta_end = _round_up(self.block + meta_want, max(units[first], dev.block_size))
        rest = dev.size - self.meta_end
        if rest <= 0:
            raise ValueError(f"navy: device of {dev.size} bytes leaves no room after {self.meta_end} bytes "
                             "of superblock and metadata; use a larger device or a smaller region_size")
        wants = [int(rest * s.share) // u * u if i in shared and i != first else 0
                 for i, (s, u) in enumerate(zip(self.slots, units))]
        out, at = [], self.meta_end
        for i, unit in enumerate(units):
            if i not in shared:
                out.append((at, 0))
                continue
            at = _round_up(at, unit)
            if i == first and i != last:
                size = max(0, rest - sum(wants)) // unit * unit
            elif i == last:
                size = max(0, dev.size - at) // unit * unit
            else:
                size = wants[i]
            out.append((at, size))
            at += size
        return out

    # -- compatible names for the default engines (flashcache.Cache uses them) -------------
    @property
    def bighash(self) -> BigHash | None:
        return self.engines.get("bighash")        # type: ignore[return-value]

    @property
    def blockcache(self) -> BlockCache | None:
        return self.engines.get("blockcache")     # type: ignore[return-value]

    # -- superblock and metadata ----------------------------------------------------------
    def _peek(self) -> superblock.Superblock | None:
        """The device's superblock as it is before this open, or None if unreadable."""
        try:
            return superblock.Superblock.decode(self.device.read(0, self.block))
        except superblock.Unreadable:
            return None

    def _inserted(self) -> dict[str, float]:
        """Item bytes the engines took in their lifetime, by size class (small: a bounded
        class, BigHash's; large: the rest), from their ``inserted_bytes`` (0 for an engine
        that does not count it)."""
        out = {"small": 0.0, "large": 0.0}
        for name, eng in self.engines.items():
            out["small" if self._slot(name).max_item is not None else "large"] += eng.stats().get("inserted_bytes", 0)
        return out

    def mix(self) -> dict[str, float]:
        """The item bytes this device's engines took, by size class: what the superblock
        had, plus what they took since this open, halved while above MIX_WINDOW device
        sizes (so it follows a mix that shifts)."""
        now = self._inserted()
        at_open = getattr(self, "_inserted_at_open", now)
        out = {k: self._mix_base.get(k, 0.0) + now[k] - at_open[k] for k in now}
        while sum(out.values()) > MIX_WINDOW * self.device.size:
            out = {k: v / 2 for k, v in out.items()}
        return out

    def _write_superblock(self, meta_len: int = 0, meta_sum: int = 0) -> None:
        sb = superblock.Superblock(self.fingerprint, self.layout,
                                   {name: eng.generation for name, eng in self.engines.items()}, meta_len, meta_sum,
                                   self.mix())
        self.device.write(0, sb.encode(self.block))
        self.device.flush()

    def _format(self, why: str) -> str:
        # checkpoints go on numbering past any left on the device (another layout's, or a
        # reset one's), so the newest is always this format's
        for slot in (0, 1):
            head = superblock.CheckpointHead.decode(self.device.read(self._slot_at(slot), self.block))
            if head is not None and head.seq >= self._ckpt["seq"]:
                self._ckpt.update(seq=head.seq, slot=slot)
        gen = int.from_bytes(os.urandom(8), "little")
        for eng in self.engines.values():
            eng.generation = gen
            eng.reset()
        self._write_superblock()
        return f"formatted: {why}"

    def _open(self) -> str:
        try:
            sb = superblock.Superblock.decode(self.device.read(0, self.block))
        except superblock.Unreadable as e:
            return self._format(str(e))
        if sb.fingerprint != self.fingerprint:
            return self._format("layout changed, the cache was reset (was -> now: "
                                + ", ".join(superblock.changes(sb.layout, self.layout)) + ")")
        for name, eng in self.engines.items():
            eng.generation = sb.generations.get(name, 0)
        state, clean, why = self._read_checkpoint(sb)
        self._restore_split((state or {}).get("split"))
        saved = (state or {}).get("engines") or {}
        lost, kept, replayed = [], [], []
        t0 = time.monotonic()
        for eng in self.engines.values():
            if clean and eng.recover(saved.get(eng.name)):
                continue
            if not clean and state is not None and saved.get(eng.name) is not None:
                info = self.drive(eng.replay(saved[eng.name]))
                if info is not None:
                    replayed.append((eng.name, info))
                    continue
            lost.append(eng.name)
            kept.append(eng.start_cold())
        if clean:
            counters = (state or {}).get("router") or {}
            for name, table in (("counters", self._counters), ("rejects", self._rejects)):
                for k in table:
                    table[k] = int((counters.get(name) or {}).get(k, 0))
        for eng in self.engines.values():
            self.drive(eng.after_open())
        for name, _ in replayed:      # a new checkpoint at once (see the module docstring)
            eng = self.engines[name]
            with eng.held():
                self._checkpoint(eng)
        # clear the clean mark at once: a crash from here on must not trust the saved state
        self._write_superblock()
        if not lost:
            return "warm"
        if replayed:
            secs = time.monotonic() - t0
            parts = []
            for name, info in replayed:
                info["seconds"] = secs
                info["checkpoint_bytes"] = self._meta_read
                info["bytes_read"] += self._meta_read     # the checkpoint, then the log
                self.recovery = {"engine": name, **info}
                parts.append(f"{name} recovered from checkpoint {(state or {}).get('seq', 0)} + {info['regions_replayed']} "
                             f"regions replayed ({info['entries_replayed']} entries, {info['items']} items), "
                             f"{info['bytes_read']} bytes read in {secs:.3f} s")
            return f"recovered after a crash: {'; '.join(parts)}; {', '.join(kept)}"
        if state is not None and not clean:
            return f"cold: no clean-shutdown metadata, and the last checkpoint did not match; {', '.join(kept)}"
        if state is not None:
            return f"cold: saved state of {' and '.join(lost)} did not match; {', '.join(kept)}"
        return f"cold: {why}; {', '.join(kept)}"

    def _slot_at(self, slot: int) -> int:
        return self.block + slot * self.slot_size

    def _read_checkpoint(self, sb: superblock.Superblock) -> tuple[dict | None, bool, str]:
        """The newest valid checkpoint's state, whether it is the clean one the superblock
        names, or why there is none."""
        heads = []
        self._meta_read = 2 * self.block
        for slot in (0, 1):
            head = superblock.CheckpointHead.decode(self.device.read(self._slot_at(slot), self.block))
            if head is not None and head.fingerprint == self.fingerprint:
                heads.append((head.seq, slot, head))
        why = "no valid checkpoint"
        for seq, slot, head in sorted(heads, reverse=True):
            n = head.body_len
            if self.block + n > self.slot_size:
                why = "checkpoint length out of range"
                continue
            raw = self.device.read(self._slot_at(slot) + self.block, _round_up(max(n, 1), self.device.block_size))[:n]
            self._meta_read += _round_up(max(n, 1), self.device.block_size)
            if superblock.xxh(raw) != head.body_sum:
                why = "checkpoint checksum mismatch"
                continue
            try:
                state = msgpack.unpackb(raw, raw=False, strict_map_key=False)
            except (ValueError, msgpack.UnpackException) as e:
                why = f"checkpoint unreadable ({e})"
                continue
            if not isinstance(state, dict) or state.get("fingerprint") != self.fingerprint:
                why = "checkpoint from another layout"
                continue
            self._ckpt.update(seq=seq, slot=slot)
            state["seq"] = seq
            clean = bool(head.flags & superblock.CLEAN) and sb.meta_len == n and sb.meta_sum == head.body_sum
            if not clean and sb.meta_len:
                log.warning("%s: the clean-shutdown checkpoint is not the newest valid one; recovering as after "
                            "a crash", self.device.path)
            return state, clean, ""
        if sb.meta_len:
            why = "clean-shutdown metadata unreadable (" + why + ")"
        else:
            why = "no clean-shutdown metadata (the last run did not close cleanly) and " + why
        return None, False, why

    def _write_checkpoint(self, engines: dict[str, Any], clean: bool) -> tuple[int, int] | str:
        """Write a checkpoint of ``engines``' states to the slot not holding the newest one,
        then fdatasync. (body length, body checksum), or why it was not written (it does
        not fit its slot: half the metadata area)."""
        state: dict[str, Any] = {"fingerprint": self.fingerprint, "engines": engines}
        split = self._split_state()
        if split is not None:
            state["split"] = split
        if clean:
            state["router"] = {"counters": self._counts(), "rejects": self._rejects}
        blob = msgpack.packb(state, use_bin_type=True)
        room = self.slot_size - self.block
        if len(blob) > room:
            self._ckpt["skipped"] += 1
            why = (f"checkpoint of {len(blob)} bytes does not fit its {room}-byte slot (half the metadata area); "
                   "raise metadata_fraction")
            if self._ckpt["last_skip"] != why:
                log.warning("%s: %s", self.device.path, why)
            self._ckpt["last_skip"] = why
            return why
        seq, slot = self._ckpt["seq"] + 1, 1 - self._ckpt["slot"]
        head = superblock.CheckpointHead(seq, superblock.CLEAN if clean else 0, self.fingerprint, len(blob),
                                         superblock.xxh(blob))
        data = head.encode(self.block) + blob.ljust(_round_up(len(blob), self.device.block_size), b"\0")
        self.device.write(self._slot_at(slot), data)
        self.device.flush()
        self._ckpt.update(seq=seq, slot=slot, written=self._ckpt["written"] + 1, bytes=len(data))
        if split is not None:
            self._durable_limit = split["limit"]
        return len(blob), head.body_sum

    def _checkpoint(self, eng: Engine) -> None:
        """BlockCache's periodic checkpoint (called under its lock, blocking)."""
        st = eng.persist()
        if not isinstance(self._write_checkpoint({eng.name: st}, False), str):
            eng.checkpointed(st)   # type: ignore[attr-defined]

    def close(self) -> str:
        """Flush what the engines hold only in DRAM and write the warm-restart metadata.
        Returns what was saved, or why not. The device stays open (its owner closes it)."""
        if self._closed:
            return "already closed"
        self._closed = True
        flush_error = None
        for eng in self.engines.values():
            try:
                self.drive(self._through(eng.flush()))
            except Exception as e:
                # persist() leaves out what the buffer holds beyond the last good flush, so
                # the metadata below is still true: save it, then report the (first) error
                if flush_error is None:
                    flush_error = e
                    flush_error.add_note(f"navy: {eng.name}'s buffer could not be written; the warm-restart "
                                         "metadata was saved without the items only it held")
        with contextlib.ExitStack() as held:
            for eng in self.engines.values():
                held.enter_context(eng.held())
            states = {name: eng.persist() for name, eng in self.engines.items()}
            done = self._write_checkpoint(states, True)
            if isinstance(done, str):
                # the whole state does not fit: the next start is cold, but BlockCache's
                # index alone may still fit as a crash checkpoint
                for name, eng in self.engines.items():
                    if hasattr(eng, "checkpointed") and not isinstance(
                            self._write_checkpoint({name: states[name]}, False), str):
                        eng.checkpointed(states[name])
                self._write_superblock()
                out = f"not saved: {done}"
            else:
                for name, eng in self.engines.items():
                    if hasattr(eng, "checkpointed"):
                        eng.checkpointed(states[name])
                self._write_superblock(*done)
                out = f"saved {done[0]} bytes of metadata"
        if flush_error is not None:
            raise flush_error
        return out

    def clear(self) -> None:
        """Empty every engine at once: each ``reset()``s (a new generation, so nothing written
        before reads back; no I/O) while all the engines' locks are held, and the superblock
        records the new generations before this returns, so a restart does not bring the old
        items back."""
        with contextlib.ExitStack() as held:
            for eng in self.engines.values():
                held.enter_context(eng.held())
            self._mix_base = self.mix()         # the mix outlives the items
            for eng in self.engines.values():
                eng.reset()
            self._inserted_at_open = self._inserted()
            self._write_superblock()
            for eng in self.engines.values():
                if getattr(eng, "checkpoint_hook", None) is not None:
                    self._checkpoint(eng)     # so a crash now recovers the empty index

    def drive(self, op: Op[Any]) -> Any:
        """Run one operation to completion with blocking device calls."""
        return run(op, self.device)

    # -- item operations (sans-I/O) -----------------------------------------------------
    def _through(self, op: Any) -> Op[Any]:
        """Pass an engine's requests through; when the admission policy steers by write
        rate, tell it the bytes each Write carries."""
        if not inspect.isgenerator(op):
            return op
        if not self._feed_admission:
            return (yield from op)
        res = None
        try:
            while True:
                req = op.send(res)
                if type(req) is Write:
                    self.admission.record_write(len(req.data))
                res = yield req
        except StopIteration as stop:
            return stop.value

    @property
    def admission(self) -> Admission:
        """The admission policy (settable at run time)."""
        return self._admission

    @admission.setter
    def admission(self, policy: Admission) -> None:
        self._admission = policy
        self._feed_admission = bool(getattr(policy, "wants_writes", False))
        self._accept_all = isinstance(policy, AcceptAll)
        if "_router" in self.__dict__:
            self._router.accept_all = self._accept_all   # its insert() runs only under AcceptAll

    def may_hold(self, key: bytes) -> bool:
        """False when no engine can hold ``key``, decided in DRAM alone (BlockCache's
        index, BigHash's bloom filter): a caller can then skip a remove entirely."""
        if key.__class__ is bytes:
            return self._router.may_hold(key)      # the same in C
        return any(eng.may_hold(key) for eng in self.engines.values())

    def lookup(self, key: bytes) -> Op[bytes | None]:
        """The value for ``key`` from flash, or None."""
        item = yield from self.lookup_item(key)
        return None if item is None else item[0]

    def lookup_item(self, key: bytes) -> Op[tuple[bytes, float] | None]:
        """``(value, expiry)`` for ``key``, or None: the engines in order until one has it
        (each rules out what its DRAM state can without I/O: BlockCache's index, BigHash's
        bloom filter)."""
        c = self._counters
        c["lookups"] += 1
        for eng in self.engines.values():
            item = yield from self._through(eng.lookup_item(key))
            if item is not None:
                c["hits"] += 1
                return item
        c["misses"] += 1
        return None

    def lookup_item_now(self, device: Device, key: bytes) -> tuple[bytes, float] | None:
        """``lookup_item`` done at once on ``device`` with blocking calls: one C call for a
        bytes key on this Navy's own device (engines/_router.c), else the generator."""
        if device is self.device and key.__class__ is bytes:
            return self._router.lookup(key)
        return run(self.lookup_item(key), device)

    def _counts(self) -> dict[str, int]:
        """The router's counters: the Python paths' plus the C Router's."""
        return merged_counters(self._counters, self._router.counters())

    def _remove_now(self, eng: Engine, key: bytes) -> bool:
        """An engine's remove on this Navy's device (the C Router's step after an insert)."""
        return run(self._through(eng.remove(key)), self.device)

    def _engine_for(self, size: int) -> Engine | None:
        for eng in self._by_size:
            if size <= self._limits[eng.name]:
                return eng
        return None

    def engine_for(self, key_len: int, value_len: int) -> str | None:
        """The engine an item of this size goes to, or None when it fits none."""
        eng = self._engine_for(key_len + value_len)
        return None if eng is None else eng.name

    @property
    def max_item_size(self) -> int:
        """The largest key + value an engine takes."""
        return max(self._limits.values())

    def insert(self, key: bytes, value: bytes, expiry: float = 0) -> Op[bool]:
        """Offer an item to flash: admission decides, then the size routes it. Returns
        whether it was written. The key is removed from the other engines either way."""
        return (yield from self._placed(self._admit(key, value), key, value, expiry))

    def insert_now(self, device: Device, key: bytes, value: bytes, expiry: float = 0) -> bool:
        """``insert`` done at once on ``device`` with blocking calls: in C (the Router over
        the engine's C insert) when it can, else ``run(insert(...))``."""
        own = device is self.device
        if own and self._router.insert(key, value, expiry):
            return True                          # admission accepts all: the whole insert in C
        eng = self._admit(key, value)
        if (eng is not None and own and not self._feed_admission
                and self._router.place(self._place_at[eng.name], key, value, expiry)):
            return True
        return run(self._placed(eng, key, value, expiry), device)

    def _placed(self, eng: Engine | None, key: bytes, value: bytes, expiry: float) -> Op[bool]:
        """insert's steps once admission has answered (None: rejected): the key leaves the
        other engines first (durably: see the module docstring), then the item is written."""
        for other in self.engines.values():
            if other is not eng and other.may_hold(key):
                yield from self._through(other.remove(key))
        if eng is not None:
            yield from self._through(eng.insert(key, value, expiry))
            if self.moving and self.split_every:
                self._since_step += 1
                if self._since_step >= self.split_every:
                    self._since_step = 0
                    try:
                        yield from self._through(self.step_split())
                    except Exception as e:     # as _step_now: the insert is done
                        self.split_errors += 1
                        log.warning("%s: a step of the moving split failed (%s); the split stays where it was",
                                    self.device.path, e)
        return eng is not None

    def _admit(self, key: bytes, value: bytes) -> Engine | None:
        """The engine an offered item goes to, or None when admission rejects it (counted);
        ValueError when it fits no engine."""
        size = len(key) + len(value)
        eng = self._engine_for(size)
        if eng is None:
            self._counters["too_large"] += 1
            raise ValueError(f"navy: an item of {size} bytes (key + value) is larger than "
                             f"the largest the flash engines take ({self.max_item_size} bytes)")
        self._counters["inserts"] += 1
        if not self._accept_all and not self.admission.accept(xxhash.xxh3_64_intdigest(key), size):
            self._counters["admission_rejects"] += 1
            self._rejects[eng.name] += 1
            return None
        return eng

    def remove(self, key: bytes) -> Op[bool]:
        """Delete from every engine; True if any held the key."""
        self._counters["removes"] += 1
        found = False
        for eng in self.engines.values():
            if eng.may_hold(key):
                found = bool((yield from self._through(eng.remove(key)))) or found
        self._counters["removed"] += found
        return found

    # -- reporting ------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        """Router counters, ``engines`` (every configured engine's name, in device order),
        and per engine (by name; None for one that got no space) its own stats plus
        admission rejects, bytes written, ``items`` and ``items_exact``, and placement (the
        placement identifier, or why placement is off). The counters are lifetime: since
        the cache was formatted, kept across clean restarts in the warm-restart metadata (a
        cold start begins them anew)."""
        s: dict[str, Any] = self._counts()
        s["start"] = self.start
        s["recovery"] = self.recovery
        s["checkpoint"] = {k: self._ckpt[k] for k in ("seq", "written", "bytes", "skipped")}
        s["admission"] = self.admission.stats()
        s["layout"] = dict(self.layout)
        s["engines"] = [slot.engine.name for slot in self.slots]
        mix = self.mix()
        total = sum(mix.values())
        bh = self.bighash
        bh_bytes = (bh.nbuckets * bh.bucket_size if self.moving else bh.size) if bh is not None else 0
        s["split"] = {"mode": "auto" if self.auto else "fixed", "moving": self.moving,
                      "bighash_share": bh_bytes / (self.device.size - self.meta_end),
                      "bighash_buckets": bh.nbuckets if bh is not None else 0,
                      "target_buckets": self.split_target() if self.moving else None,
                      "merge_floor": self.merge_floor() if self.moving else None,
                      "splits": bh.stats()["splits"] if bh is not None else 0,
                      "merges": bh.merges if bh is not None else 0,
                      "taken_back": self.taken_back,
                      "blockcache_regions": self.blockcache.limit if self.blockcache is not None else 0,
                      "lent_regions": self._limit0 - self.blockcache.limit if self.moving and self.blockcache else 0,
                      "errors": self.split_errors, "split_every": self.split_every if self.moving else None,
                      "observed_small_share": mix["small"] / total if total else None,
                      "auto_would_choose": auto_fraction(mix, self.device.size, self.split_cap),
                      "waf_limit": self.split_waf_limit or None, "waf_cap": self.split_cap if self.auto else None}
        for slot in self.slots:
            name = slot.engine.name
            eng = self.engines.get(name)
            if eng is None:
                s[name] = None
                continue
            st = eng.stats()
            stream = self.streams[name]
            st.update(admission_rejects=self._rejects[name],
                      device_bytes_written=st["bytes_written"],
                      placement={"state": "on", "pid": stream.pid} if stream.pid is not None else
                      {"state": "off", "reason": str(stream.placement).removeprefix("off: ")})
            s[name] = st
        return s
