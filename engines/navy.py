"""The Navy-style router: one device, a superblock, BlockCache for large items, BigHash
for small ones, admission in front, warm restart behind.

Owns the device layout ``| superblock | metadata | BlockCache regions | BigHash buckets |``,
routing by size, admission, placement streams (one per engine, from the device), and the
clean-shutdown metadata. Item operations are sans-I/O generators (see ``engines.device``);
opening and closing do blocking I/O on the device they were given. The surprise: the
metadata is invalidated right after a successful recovery, so a crash later starts cold
instead of trusting a stale index; BigHash's buckets survive that (their generation is in
the superblock), BlockCache's regions do not (its index was in DRAM).

Superblock, block 0 (little-endian)::

    0  magic        8s   engines.device.SUPERBLOCK_MAGIC (b"FLCACHE\\x01")
    8  version      u16  FORMAT_VERSION
   10  header_size  u16  SUPERBLOCK.size
   12  flags        u32  0
   16  fingerprint  u64  xxh64 of the layout (below): any change resets the cache
   24  bh_gen       u64  BigHash generation
   32  bc_gen       u64  BlockCache generation
   40  meta_len     u64  bytes of valid metadata after block 0; 0 = none (crash or recovered)
   48  meta_sum     u64  xxh64 of those bytes
   56  layout_len   u32  bytes of the layout (msgpack) that follow the header
   60  layout       ...  the layout, so a mismatch can say what changed
   ..  checksum     u64  xxh64 of everything before it
"""
from __future__ import annotations

import contextlib
import inspect
import logging
import os
import struct
import threading
import time
from typing import Any, Callable

import msgpack
import xxhash

_xxh3 = xxhash.xxh3_64_intdigest

from .admission import AcceptAll, Admission
from ._core_c import Router
from .bighash import BigHash, key_hash
from .blockcache.entry import KEY_SEED as BC_KEY_SEED
from .blockcache import BlockCache
from .device import SUPERBLOCK_MAGIC, Device, Op, Write, run

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
SUPERBLOCK = struct.Struct("<8sHHIQQQQQI")
SEED = 0x3C6EF372FE94F82B
_M64 = (1 << 64) - 1

# The router's own counters (lifetime: saved in the warm-restart metadata).
COUNTERS = ("lookups", "hits", "misses", "inserts", "admission_rejects", "too_large", "removes",
            "removed")


def _xxh(data) -> int:
    return xxhash.xxh64_intdigest(data, SEED)


def _round_up(x: int, unit: int) -> int:
    return -(-x // unit) * unit


class Navy:
    """Both engines on one device (see the module docstring).

    ``small_item_max``: key + value bytes up to which an item goes to BigHash.
    ``bighash_fraction``: share of the space after the metadata for BigHash (0: none,
    1: no BlockCache). ``metadata_fraction``: share of the device kept for clean-shutdown
    metadata (at least 1 MiB). ``blockcache_options`` go to BlockCache as they are
    (eviction, reinsertion, trim_on_reclaim, ...).

    After construction ``start`` says how the cache came up: ``"warm"``, or
    ``"cold: <why>"`` / ``"formatted: <why>"``.
    """

    def __init__(self, device: Device, *, small_item_max: int = 2048, bighash_fraction: float = 0.1,
                 bucket_size: int = 4096, bloom_bytes_per_bucket: int = 8, region_size: int = 16 << 20,
                 alignment: int = 512, clean_regions: int = 1, metadata_fraction: float = 0.01,
                 blockcache_options: dict[str, Any] | None = None, admission: Admission | None = None,
                 clock: Callable[[], float] = time.time):
        if not 0.0 <= bighash_fraction <= 1.0:
            raise ValueError(f"navy: bighash_fraction = {bighash_fraction!r}: use a share from 0 to 1")
        if not 0.0 < metadata_fraction < 0.5:
            raise ValueError(f"navy: metadata_fraction = {metadata_fraction!r}: use a share above 0, below 0.5")
        if small_item_max < 1:
            raise ValueError(f"navy: small_item_max = {small_item_max!r}: use a positive number of bytes")
        self.device = device
        self.clock = clock
        self.admission = admission or AcceptAll()
        self.small_item_max = small_item_max
        bs = device.block_size
        self.block = max(bs, 4096)
        unit = region_size if bighash_fraction < 1.0 else bucket_size
        meta_want = max(1 << 20, int(device.size * metadata_fraction))
        self.meta_end = _round_up(self.block + meta_want, max(unit, bs))
        rest = device.size - self.meta_end
        if rest <= 0:
            raise ValueError(f"navy: device of {device.size} bytes leaves no room after {self.meta_end} bytes "
                             "of superblock and metadata; use a larger device or a smaller region_size")
        bh_want = int(rest * bighash_fraction) // bucket_size * bucket_size
        bc_size = (rest - bh_want) // region_size * region_size if bighash_fraction < 1.0 else 0
        bh_off = self.meta_end + bc_size
        bh_size = (device.size - bh_off) // bucket_size * bucket_size if bighash_fraction > 0.0 else 0
        opts = dict(blockcache_options or {})
        self.layout = {
            "version": FORMAT_VERSION, "device_size": device.size, "block": self.block,
            "meta_end": self.meta_end, "small_item_max": small_item_max,
            "bc_offset": self.meta_end, "bc_size": bc_size, "region_size": region_size, "alignment": alignment,
            "bh_offset": bh_off, "bh_size": bh_size, "bucket_size": bucket_size,
            "bloom_bytes_per_bucket": bloom_bytes_per_bucket,
        }
        self.fingerprint = _xxh(msgpack.packb(self.layout, use_bin_type=True))
        self.streams = {}
        self.bighash: BigHash | None = None
        self.blockcache: BlockCache | None = None
        if bh_size:
            self.streams["bighash"] = device.open_stream("bighash")
            self.bighash = BigHash(bh_off, bh_size, bucket_size, bloom_bytes_per_bucket,
                                   stream=self.streams["bighash"], clock=clock)
        if bc_size:
            self.streams["blockcache"] = device.open_stream("blockcache")
            self.blockcache = BlockCache(self.meta_end, bc_size, region_size=region_size, alignment=alignment,
                                         clean_regions=clean_regions, stream=self.streams["blockcache"],
                                         clock=clock, io_alignment=max(alignment, bs), **opts)
        if self.bighash is None and self.blockcache is None:
            raise ValueError(f"navy: a {device.size}-byte device has room for neither engine; use a larger device")
        self.small_item_max = min(small_item_max, self.bighash.max_item_size) if self.bighash else 0
        self._counters = dict.fromkeys(COUNTERS, 0)
        self._rejects = {"bighash": 0, "blockcache": 0}
        self._closed = False

        # Thread safety: BlockCache's state is one structure, so its operations hold one
        # lock (across their I/O); BigHash serialises inserts and removes per bucket
        # (striped locks), and its lookups need none. Locks are re-entrant so one thread
        # may drive several lookups together (get_many). Single-threaded drivers (asyncio)
        # must serialise mutations themselves: see ``mutation_key``.
        self._bc_lock = threading.RLock()
        self._bh_locks = [threading.RLock() for _ in range(64)]
        # BigHash's one-call C forms (engines/_core.c), for bytes keys on the blocking paths
        self._bh_core = self.bighash._core if self.bighash else None
        # lookup_item_now on this Navy's own device, for a bytes key, in one C call
        self._router = Router(self._bh_core, self.blockcache, self._bc_lookup_now, device, BC_KEY_SEED)
        self.lookup_now = self._router.lookup
        """``lookup_item_now(self.device, key)`` for a bytes key, as one C call."""
        self.may_hold_now = self._router.may_hold
        """``may_hold(key)`` for a bytes key, as one C call."""
        self.insert_hook = self._router.insert_hook
        """``insert_hook()``: a capsule "engines.navy.insert" for a C caller (the cache's
        demotions): ``insert_now(self.device, ...)`` for what the C form takes, declining
        the rest (see engines/_core.c)."""
        if self.blockcache:
            # BlockCache's lookup in C too, under the same lock; anything but a plain hit
            # goes to its _lookup_found with the bytes already read
            self._router.set_bc(self._bc_lock, self.blockcache._lookup_found)
        if self.bighash:
            self._router.set_insert(self._bh_locks, self.bighash.stream, self.small_item_max, self._bc_remove_now)
        self._router.accept_all = self._accept_all
        self.start = self._open()
        log.info("%s: flash cache %s", device.path, self.start)

    # -- superblock and metadata ----------------------------------------------------------
    def _read_superblock(self) -> tuple[dict | None, str]:
        raw = self.device.read(0, self.block)
        if raw[:8] != SUPERBLOCK_MAGIC:
            return None, ("new device" if not any(raw) else "no flashcache superblock (block 0 holds other data)")
        try:
            (magic, version, hsize, flags, fp, bh_gen, bc_gen, meta_len, meta_sum,
             layout_len) = SUPERBLOCK.unpack_from(raw, 0)
            end = SUPERBLOCK.size + layout_len
            if end + 8 > len(raw):
                return None, "superblock corrupt (layout length out of range)"
            (stored,) = struct.unpack_from("<Q", raw, end)
            if stored != _xxh(raw[:end]):
                return None, "superblock corrupt (checksum mismatch)"
            layout = msgpack.unpackb(raw[SUPERBLOCK.size:end], raw=False)
        except (struct.error, ValueError, msgpack.UnpackException) as e:
            return None, f"superblock corrupt ({e})"
        return {"version": version, "fingerprint": fp, "bh_gen": bh_gen, "bc_gen": bc_gen,
                "meta_len": meta_len, "meta_sum": meta_sum, "layout": layout}, ""

    def _write_superblock(self, meta_len: int = 0, meta_sum: int = 0) -> None:
        lay = msgpack.packb(self.layout, use_bin_type=True)
        head = SUPERBLOCK.pack(SUPERBLOCK_MAGIC, FORMAT_VERSION, SUPERBLOCK.size, 0, self.fingerprint,
                               self.bighash.generation if self.bighash else 0,
                               self.blockcache.generation if self.blockcache else 0,
                               meta_len, meta_sum, len(lay)) + lay
        body = head + struct.pack("<Q", _xxh(head))
        if len(body) > self.block:
            raise ValueError(f"navy: superblock of {len(body)} bytes does not fit in {self.block}")
        self.device.write(0, body.ljust(self.block, b"\0"))
        self.device.flush()

    def _format(self, why: str) -> str:
        gen = int.from_bytes(os.urandom(8), "little")
        if self.bighash:
            self.bighash.generation = gen
            self.bighash.reset()
        if self.blockcache:
            self.blockcache.generation = gen
            self.blockcache.reset()
        self._write_superblock()
        return f"formatted: {why}"

    def _open(self) -> str:
        sb, why = self._read_superblock()
        if sb is None:
            return self._format(why)
        if sb["version"] != FORMAT_VERSION or sb["fingerprint"] != self.fingerprint:
            old = sb["layout"] if isinstance(sb["layout"], dict) else {}
            diff = {k: (old.get(k), v) for k, v in self.layout.items() if old.get(k) != v}
            return self._format("layout changed, the cache was reset (was -> now: "
                                + ", ".join(f"{k} {a} -> {b}" for k, (a, b) in diff.items()) + ")")
        if self.bighash:
            self.bighash.generation = sb["bh_gen"]
        if self.blockcache:
            self.blockcache.generation = sb["bc_gen"]
        state, why = self._read_metadata(sb)
        warm_bh = warm_bc = False
        if state is not None:
            warm_bh = self.bighash is None or self.bighash.recover(state.get("bighash"))
            warm_bc = self.blockcache is None or self.blockcache.recover(state.get("blockcache"))
            counters = state.get("router") or {}
            for name, table in (("counters", self._counters), ("rejects", self._rejects)):
                for k in table:
                    table[k] = int((counters.get(name) or {}).get(k, 0))
        if self.blockcache and not warm_bc:
            # its index is gone: the regions' contents cannot be found, start them clean
            self.blockcache.generation = sb["bc_gen"]
            self.blockcache.reset()
        if self.bighash and self.bighash.items is None:
            # its buckets are kept but their count was not saved: sample them (256 bucket reads)
            self.drive(self.bighash.estimate_items())
        # invalidate the metadata at once: a crash from here on must not resurrect it
        self._write_superblock()
        if state is not None and warm_bh and warm_bc:
            return "warm"
        if state is not None:
            lost = [n for n, ok in (("BigHash", warm_bh), ("BlockCache", warm_bc)) if not ok]
            return f"cold: saved state of {' and '.join(lost)} did not match; BigHash buckets kept"
        return f"cold: {why}; BigHash buckets kept, BlockCache starts empty"

    def _read_metadata(self, sb: dict) -> tuple[dict | None, str]:
        n = sb["meta_len"]
        if not n:
            return None, "no clean-shutdown metadata (the last run did not close cleanly)"
        if self.block + n > self.meta_end:
            return None, "metadata length out of range"
        raw = self.device.read(self.block, _round_up(n, self.device.block_size))[:n]
        if _xxh(raw) != sb["meta_sum"]:
            return None, "metadata checksum mismatch"
        try:
            state = msgpack.unpackb(raw, raw=False, strict_map_key=False)
        except (ValueError, msgpack.UnpackException) as e:
            return None, f"metadata unreadable ({e})"
        if not isinstance(state, dict) or state.get("fingerprint") != self.fingerprint:
            return None, "metadata from another layout"
        return state, ""

    def close(self) -> str:
        """Flush BlockCache's buffer and write the warm-restart metadata. Returns what was
        saved, or why not. The device stays open (its owner closes it)."""
        if self._closed:
            return "already closed"
        self._closed = True
        flush_error = None
        if self.blockcache:
            try:
                self.drive(self._bc(self.blockcache.flush()))
            except Exception as e:
                # persist() leaves out what the buffer holds beyond the last good flush, so
                # the metadata below is still true: save it, then report the error
                flush_error = e
        state = {"fingerprint": self.fingerprint,
                 "bighash": self.bighash.persist() if self.bighash else None,
                 "blockcache": self.blockcache.persist() if self.blockcache else None,
                 "router": {"counters": self._counts(), "rejects": self._rejects}}
        blob = msgpack.packb(state, use_bin_type=True)
        room = self.meta_end - self.block
        if len(blob) > room:
            log.warning("%s: warm-restart metadata of %d bytes does not fit the %d-byte area; the next start "
                        "will be cold (raise metadata_fraction)", self.device.path, len(blob), room)
            self._write_superblock()
            return f"not saved: {len(blob)} bytes of metadata, {room} bytes of room"
        padded = blob.ljust(_round_up(len(blob), self.device.block_size), b"\0")
        self.device.write(self.block, padded)
        self.device.flush()
        self._write_superblock(len(blob), _xxh(blob))
        if flush_error is not None:
            flush_error.add_note("navy: BlockCache's buffer could not be written; the warm-restart metadata was "
                                 "saved without the items only it held")
            raise flush_error
        return f"saved {len(blob)} bytes of metadata"

    def clear(self) -> None:
        """Empty both engines at once: each ``reset()``s (a new generation, so nothing written
        before reads back; no I/O) under its locks, and the superblock records the new
        generations before this returns, so a restart does not bring the old items back."""
        with contextlib.ExitStack() as held:
            held.enter_context(self._bc_lock)
            for lock in self._bh_locks:
                held.enter_context(lock)
            if self.bighash:
                self.bighash.reset()
            if self.blockcache:
                self.blockcache.reset()
            self._write_superblock()

    def drive(self, op: Op[Any]) -> Any:
        """Run one operation to completion with blocking device calls."""
        return run(op, self.device)

    # -- item operations (sans-I/O) -----------------------------------------------------
    def _through(self, op: Any, engine: str) -> Op[Any]:
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

    def mutation_key(self, key: bytes) -> tuple[str, int]:
        """What an insert or remove of ``key`` must not overlap with: BigHash's bucket
        (BlockCache is one structure: the same token for every key)."""
        return ("bighash", self.bighash.bucket_of(key_hash(key))) if self.bighash else ("none", 0)

    def may_hold(self, key: bytes) -> bool:
        """False when neither engine can hold ``key``, decided in DRAM alone (BlockCache's
        index, BigHash's bloom filter): a caller can then skip a remove entirely."""
        if key.__class__ is bytes:
            return self._router.may_hold(key)      # the same in C
        return (self.blockcache is not None and self._bc_may_hold(key)) or \
            (self.bighash is not None and self._bh_may_hold(key))

    def _bc_may_hold(self, key: bytes) -> bool:
        return self.blockcache.index.find(_xxh3(key, BC_KEY_SEED) >> 32) >= 0

    def _bh_may_hold(self, key: bytes) -> bool:
        kh = key_hash(key)
        return self.bighash.bloom.may_contain(self.bighash.bucket_of(kh), kh)

    def _bh_lock(self, key: bytes) -> threading.RLock:
        if key.__class__ is bytes:
            return self._bh_locks[self._bh_core.bucket(key) % len(self._bh_locks)]
        return self._bh_locks[self.bighash.bucket_of(key_hash(key)) % len(self._bh_locks)]

    def _bc(self, op: Any) -> Op[Any]:
        with self._bc_lock:
            return (yield from self._through(op, "blockcache"))

    def _bh_mutate(self, key: bytes, op: Any) -> Op[Any]:
        with self._bh_lock(key):
            return (yield from self._through(op, "bighash"))

    def lookup(self, key: bytes) -> Op[bytes | None]:
        """The value for ``key`` from flash, or None."""
        item = yield from self.lookup_item(key)
        return None if item is None else item[0]

    def lookup_item(self, key: bytes) -> Op[tuple[bytes, float] | None]:
        """``(value, expiry)`` for ``key``, or None. BlockCache first (its index is in DRAM:
        a miss there costs no I/O), then BigHash (its bloom filter usually answers a miss
        without I/O)."""
        self._counters["lookups"] += 1
        if self.blockcache and self._bc_may_hold(key):
            item = yield from self._bc(self.blockcache.lookup_item(key))
            if item is not None:
                self._counters["hits"] += 1
                return item
        if self.bighash:
            item = yield from self._through(self.bighash.lookup_item(key), "bighash")
            if item is not None:
                self._counters["hits"] += 1
                return item
        self._counters["misses"] += 1
        return None

    def lookup_item_now(self, device: Device, key: bytes) -> tuple[bytes, float] | None:
        """``lookup_item`` done at once on ``device`` with blocking calls (BigHash's part
        without a generator: a blocking caller's hot path)."""
        if device is self.device and key.__class__ is bytes:
            return self._router.lookup(key)      # the same steps in C (engines/_core.c)
        c = self._counters
        c["lookups"] += 1
        if self.blockcache is not None and self._bc_may_hold(key):
            with self._bc_lock:
                item = self.blockcache.lookup_item_now(device, key)
            if item is not None:
                c["hits"] += 1
                return item
        if self._bh_core is not None:
            # reads take no lock (see _through); a bytes key in one C call
            item = self._bh_core.lookup(device.read, key) if key.__class__ is bytes else \
                self.bighash.lookup_item_now(device, key)
            if item is not None:
                c["hits"] += 1
                return item
        c["misses"] += 1
        return None

    def _counts(self) -> dict[str, int]:
        """The router's counters: the Python paths' plus the C Router's."""
        c = dict(self._counters)
        for k, v in self._router.counters().items():
            c[k] += v
        return c

    def _bc_remove_now(self, key: bytes) -> bool:
        """BlockCache's remove on this Navy's device, under its lock (the Router's step)."""
        return run(self._bc(self.blockcache.remove(key)), self.device)

    def _bc_lookup_now(self, key: bytes) -> tuple[bytes, float] | None:
        """BlockCache's lookup on this Navy's device, under its lock (the Router's step;
        a lookup writes nothing, so admission has nothing to hear)."""
        with self._bc_lock:
            return self.blockcache.lookup_item_now(self.device, key)

    def engine_for(self, key_len: int, value_len: int) -> str | None:
        """The engine an item of this size goes to, or None when it fits neither."""
        size = key_len + value_len
        if self.bighash and size <= self.small_item_max:
            return "bighash"
        if self.blockcache and size <= self.blockcache.max_item_size:
            return "blockcache"
        return None

    @property
    def max_item_size(self) -> int:
        """The largest key + value either engine takes."""
        return max(self.blockcache.max_item_size if self.blockcache else 0, self.small_item_max)

    def insert(self, key: bytes, value: bytes, expiry: float = 0) -> Op[bool]:
        """Offer an item to flash: admission decides, then the size routes it. Returns
        whether it was written. The key is removed from the other engine either way."""
        return (yield from self._placed(self._admit(key, value), key, value, expiry))

    def insert_now(self, device: Device, key: bytes, value: bytes, expiry: float = 0) -> bool:
        """``insert`` done at once on ``device`` with blocking calls: a small item's
        bucket read-modify-write runs without a generator (a blocking caller's hot path:
        the cache's demotions); the rest as ``run(insert(...))``."""
        if device is self.device and self._router.insert(key, value, expiry):
            return True                          # a small item under AcceptAll: all in C
        if self._accept_all and self._bh_core is not None and len(key) + len(value) <= self.small_item_max:
            self._counters["inserts"] += 1      # _admit's answer for a small item under AcceptAll
        else:
            engine = self._admit(key, value)
            if engine != "bighash":
                return run(self._placed(engine, key, value, expiry), device)
        with self._bh_lock(key):
            # one C call for bytes; None: the Python form judges the item (and raises)
            if key.__class__ is not bytes or self._bh_core.insert(device.read, device.write, key, value, expiry,
                                                                  self.bighash.stream) is None:
                self.bighash.insert_now(device, key, value, expiry)
        if self._feed_admission:
            self.admission.record_write(self.bighash.bucket_size)   # what _through tells it
        if self.blockcache is not None and (self._router.bc_may_hold(key) if key.__class__ is bytes
                                            else self._bc_may_hold(key)):
            run(self._bc(self.blockcache.remove(key)), device)
        return True

    def _placed(self, engine: str | None, key: bytes, value: bytes, expiry: float) -> Op[bool]:
        """insert's steps once admission has answered (engine None: rejected)."""
        if engine is None:
            yield from self._remove_from_all(key)
            return False
        if engine == "bighash":
            yield from self._bh_mutate(key, self.bighash.insert(key, value, expiry))
            if self.blockcache and self._bc_may_hold(key):
                yield from self._bc(self.blockcache.remove(key))
        else:
            yield from self._bc(self.blockcache.insert(key, value, expiry))
            if self.bighash and self._bh_may_hold(key):
                yield from self._bh_mutate(key, self.bighash.remove(key))
        return True

    def _admit(self, key: bytes, value: bytes) -> str | None:
        """The engine an offered item goes to, or None when admission rejects it (counted);
        ValueError when it fits neither engine."""
        engine = self.engine_for(len(key), len(value))
        if engine is None:
            self._counters["too_large"] += 1
            raise ValueError(f"navy: an item of {len(key) + len(value)} bytes (key + value) is larger than "
                             f"the largest the flash engines take ({self.max_item_size} bytes)")
        self._counters["inserts"] += 1
        if not self._accept_all and not self.admission.accept(xxhash.xxh3_64_intdigest(key), len(key) + len(value)):
            self._counters["admission_rejects"] += 1
            self._rejects[engine] += 1
            return None
        return engine

    def _remove_from_all(self, key: bytes) -> Op[bool]:
        found = False
        if self.blockcache and self._bc_may_hold(key):
            found = bool((yield from self._bc(self.blockcache.remove(key))))
        if self.bighash and self._bh_may_hold(key):
            found = bool((yield from self._bh_mutate(key, self.bighash.remove(key)))) or found
        return found

    def remove(self, key: bytes) -> Op[bool]:
        """Delete from both engines; True if either held the key."""
        self._counters["removes"] += 1
        found = yield from self._remove_from_all(key)
        self._counters["removed"] += found
        return found

    # -- reporting ------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        """Router counters, and per engine its own stats plus hits, inserts, bytes written,
        ``items`` and ``items_exact``, and placement (the placement identifier, or why
        placement is off). The counters are lifetime: since the cache was formatted, kept
        across clean restarts in the warm-restart metadata (a cold start begins them anew)."""
        s: dict[str, Any] = self._counts()
        s["start"] = self.start
        s["admission"] = self.admission.stats()
        s["layout"] = dict(self.layout)
        for name, eng in (("bighash", self.bighash), ("blockcache", self.blockcache)):
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
