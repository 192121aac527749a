"""BigHash: the small-item engine, a fixed array of buckets on one extent of the device.

Owns its extent, a bloom filter and a word of hit bits per bucket in DRAM; no DRAM index.
The key hash picks the bucket; every insert or remove reads the whole bucket and writes it
back, FIFO inside the bucket with a second chance: an entry a lookup found since the bucket
was last written is evicted only after the others, and moves behind them (``hits``). Operations are sans-I/O generators (see ``engines.device``): they yield
``Read``/``Write`` and never touch a device. The surprise: a bucket that fails its checksum
reads as *empty* (counted, logged), and a cold engine still serves old buckets from flash
(so it does not know how many items it holds until ``estimate_items`` samples them).

On-flash layout (little-endian), one bucket of ``bucket_size`` bytes::

    bucket header, 32 B (BUCKET_HEADER)
      0  magic        4s   b"FCBH"
      4  version      u16  FORMAT_VERSION (1)
      6  header_size  u16  32
      8  checksum     u64  xxh3_64 of bytes [16, 32 + used_bytes), seeded with
                           CHECKSUM_SEED ^ bucket index (a misplaced bucket fails too)
     16  generation   u64  the engine's generation when written; any other reads as empty
     24  item_count   u32
     28  used_bytes   u32  bytes of entries after the header
    entries, oldest first, packed back to back, then zeros to the end of the bucket
      entry header, 22 B (ENTRY_HEADER)
      0  key_hash     u64  xxh3_64(key, KEY_SEED): picks the bucket, feeds the bloom
                           filter, and is the key's checksum (checked on every match)
      8  value_sum    u32  low 32 bits of xxh3_64(value, KEY_SEED), checked on every hit
     12  expiry       u32  absolute time in whole seconds of ``clock``; 0 = never
     16  value_len    u32
     20  key_len      u16
     22  key bytes, then value bytes

A never-written bucket (all zeros, e.g. after a trim) is empty and is not a failure.
Bucket b sits at ``offset + b * bucket_size``; in a BigHash that grows (``linear``) at
``offset + (capacity - 1 - b) * bucket_size``, from the extent's end down, so that it
takes the room below it (``split``). The bucket of a key is
``fc_bucket_of`` (``_bucket.c``, the one definition, also used by ``_core.c``) on the high
32 bits of its hash: the range mapping ``(key_hash >> 32) * nbuckets >> 32`` for a fixed
bucket count, linear hashing (``linear``) for one that grows; the bloom filters use the
low 32 bits.

Growing (``linear`` only): ``split()`` adds bucket n to the n in use. Under linear hashing
only bucket n - M (M the largest power of two <= n) holds keys that now map to bucket n;
the split writes bucket n first (those entries), then bucket n - M (the rest), and only
then counts n + 1 buckets. Every image written for a bucket (insert, remove, split) keeps
only entries that map to it under the bucket count in use: a crash that loses the grown
count (the router persists it only in its checkpoints) finds the moved keys in neither
bucket (misses), and a copy left behind by an interrupted split is never served or
carried on; bucket n is always rewritten from its parent before it is read again.
Shrinking: ``merge()`` folds the last bucket n - 1 back into its parent (the parent's
union written first, then the child emptied, then n - 1 counted), so whatever count a
crash comes back with a key has at most one copy on flash.

The per-bucket work (validating an image, finding a key, building the image an insert or a
remove writes, the bloom filters) runs in C: ``_bucket.c`` beside this file, built by cffi
at install time. This module keeps the I/O generators, the counters and the log messages;
the C functions are called between yields and keep no state. The blocking forms are one
C call each (``_core.c``: the BucketCore, which owns the state both forms share). The
layout above is declared once per language, ``BUCKET_LAYOUT``/``ENTRY_LAYOUT`` here and the
FC_BH_*/FC_BE_* offsets in ``_bucket.h``, and checked against each other on import.
"""
from __future__ import annotations

import contextlib
import logging
import struct
import threading
import time
from typing import Any, Callable, Iterator, Mapping, NamedTuple

import numpy as np
import xxhash

from .. import formats
from ..device import Device, Op, Read, Write, as_bytes, expiry_seconds, run
from ..engine import Engine, core_field, merged_counters
from . import _core_c
from ._core_c import BucketCore
from .bloom import BloomFilters, _ffi, _lib  # _ffi, _lib: the C core, imported once, there

log = logging.getLogger(__name__)

MAGIC = b"FCBH"
FORMAT_VERSION = 1
KEY_SEED = 0x6A09E667F3BCC908
CHECKSUM_SEED = 0xBB67AE8584CAA73B
BUCKET_LAYOUT = formats.Layout("BigHash bucket header", (
    ("magic", "4s"), ("version", "H"), ("header_size", "H"), ("checksum", "Q"), ("generation", "Q"),
    ("item_count", "I"), ("used_bytes", "I")))
ENTRY_LAYOUT = formats.Layout("BigHash entry header", (
    ("key_hash", "Q"), ("value_sum", "I"), ("expiry", "I"), ("value_len", "I"), ("key_len", "H")))
BUCKET_HEADER = BUCKET_LAYOUT.struct
ENTRY_HEADER = ENTRY_LAYOUT.struct
DEFAULT_BUCKET_SIZE = 4096
MIN_BUCKET_SIZE = 512
MAX_BUCKET_SIZE = 1 << 20
MAX_KEY_LEN = 0xFFFF
_M64 = (1 << 64) - 1
_HSIZE = BUCKET_HEADER.size
_ESIZE = ENTRY_HEADER.size

_hash = xxhash.xxh3_64_intdigest
_from_buffer = _ffi.from_buffer
_c_lookup = _lib.fc_bucket_lookup
_c_insert = _lib.fc_bucket_insert
_c_remove = _lib.fc_bucket_remove
_c_filter = _lib.fc_bucket_filter
_c_merge = _lib.fc_bucket_merge
_c_bucket_of = _lib.fc_bucket_of
_KEPT_SHIFT = _lib.FC_KEPT_SHIFT
_c_bloom_image = _lib.fc_bloom_rebuild_image
_c_may_contain = _lib.fc_bloom_may_contain
_NULL = _ffi.NULL
_new_tuple = tuple.__new__
_LEN_MASK = _lib.FC_LEN_MASK
_VLEN_SHIFT = _lib.FC_VLEN_SHIFT
_KLEN_SHIFT = _lib.FC_KLEN_SHIFT
_SUM_OK = _lib.FC_SUM_OK
_HAS_EXPIRY = _lib.FC_HAS_EXPIRY
_U32 = struct.Struct("<I").unpack_from
_EXPIRY_BACK = _ESIZE - ENTRY_LAYOUT.offset("expiry")  # the expiry, counted back from the key's start
_REASON_MASK = _lib.FC_REASON_MASK
_CHANGED = _lib.FC_REPLACED  # == FC_REMOVED
_EVICTED_SHIFT = _lib.FC_EVICTED_SHIFT
_EXPIRED_SHIFT = _lib.FC_EXPIRED_SHIFT
_COUNT_MASK = _lib.FC_COUNT_MASK
_FC_STALE = _lib.FC_STALE
_C_SOURCE = "engines/bighash/_bucket.h (FC_BH_*, FC_BE_*)"
formats.check(BUCKET_LAYOUT, _core_c.BUCKET_FIELDS, _C_SOURCE, {
    "magic": (MAGIC, _core_c.MAGIC), "format version": (FORMAT_VERSION, _core_c.FORMAT_VERSION),
    "header size": (_HSIZE, _core_c.BUCKET_HEADER_SIZE), "KEY_SEED": (KEY_SEED, _core_c.KEY_SEED),
    "CHECKSUM_SEED": (CHECKSUM_SEED, _core_c.CHECKSUM_SEED)})
formats.check(ENTRY_LAYOUT, _core_c.ENTRY_FIELDS, _C_SOURCE, {"header size": (_ESIZE, _core_c.ENTRY_HEADER_SIZE)})
# the cffi module is another build of the same C: a stale one says so here
formats.check(ENTRY_LAYOUT, _core_c.ENTRY_FIELDS, "engines.bighash._bucket_c (a stale build)", {
    "KEY_SEED": (KEY_SEED, _lib.fc_key_seed), "CHECKSUM_SEED": (CHECKSUM_SEED, _lib.fc_checksum_seed),
    "header sizes": ((_HSIZE, _ESIZE), (_lib.FC_BH_SIZE, _lib.FC_BE_SIZE))})
LOCK_STRIPES = 64

_COUNTERS = (
    "lookups", "hits", "misses", "bloom_rejects", "flash_misses", "expired_misses",
    "inserts", "replaced", "evictions", "expired_dropped", "inserted_bytes",
    "removes", "removed", "checksum_failures", "stale_buckets", "splits",
    "bucket_reads", "bucket_writes", "bytes_read", "bytes_written", "write_failures",
)


def _net_items(c: dict) -> int:
    """Entries added minus entries dropped, by the counters: what the item count moves by."""
    return c["inserts"] - c["replaced"] - c["evictions"] - c["expired_dropped"] - c["removed"]


def key_hash(key: bytes | bytearray | memoryview) -> int:
    """The 64-bit hash BigHash stores for ``key`` (xxh3_64 with KEY_SEED)."""
    return _hash(key, KEY_SEED)


def _check_bytes(what: str, x: object):
    return as_bytes("BigHash", what, x)


class InsertResult(NamedTuple):
    """What an insert did to its bucket. Always truthy (a non-empty tuple)."""

    replaced: bool  # an older entry of the same key was dropped
    evicted: int  # live entries dropped (oldest first) to make room
    expired: int  # expired entries dropped on the way


class BigHash(Engine):
    """The small-item engine over ``[offset, offset + size)`` of a device.

    ``bucket_size`` bytes per bucket (a multiple of 512); ``offset`` and ``size`` multiples
    of it: the extent holds ``capacity`` buckets. ``linear``: the bucket count may grow
    (``split``), from ``active`` buckets (default: all of them). ``bloom_bytes_per_bucket`` (0 disables the filters) and ``bloom_hashes`` shape
    the DRAM filters. ``stream`` is passed back on every Write. ``clock`` gives the time
    in seconds that ``expiry`` is measured in. ``generation`` must match the one the
    buckets were written with; pass the value ``persist()`` saved (the default 0 fits an
    engine that was never ``reset()``).

    Bloom filters start *unknown* (all bits set, see ``bloom.py``): a cold engine
    reads each bucket once and learns its filter from that read or from its next write.
    On a freshly formatted extent call ``reset()``: the filters become known empty and a
    miss costs no I/O.

    Threads: an insert or a remove holds its bucket's lock stripe (``locks``, chosen by
    bucket) across its read and write; lookups take no lock. One thread may drive several
    operations together (the locks are re-entrant), but not two mutations of one bucket.

    Example, with any ``engines.device.Device`` as ``dev``::

        bh = BigHash(offset=0, size=64 * 4096)
        run(bh.insert(b"k", b"v"), dev)
        run(bh.lookup(b"k"), dev)   # -> b"v"
    """

    name = "bighash"

    def __init__(
        self,
        offset: int,
        size: int,
        bucket_size: int = DEFAULT_BUCKET_SIZE,
        bloom_bytes_per_bucket: int = 8,
        stream: Any = None,
        clock: Callable[[], float] = time.time,
        *,
        bloom_hashes: int = 4,
        generation: int = 0,
        linear: bool = False,
        active: int | None = None,
    ) -> None:
        if not isinstance(bucket_size, int) or not (
            MIN_BUCKET_SIZE <= bucket_size <= MAX_BUCKET_SIZE and bucket_size % MIN_BUCKET_SIZE == 0
        ):
            raise ValueError(
                f"BigHash: bucket_size = {bucket_size!r}: use a multiple of {MIN_BUCKET_SIZE} "
                f"from {MIN_BUCKET_SIZE} to {MAX_BUCKET_SIZE} bytes (4096 is the usual)"
            )
        if not isinstance(offset, int) or offset < 0 or offset % bucket_size:
            raise ValueError(
                f"BigHash: offset = {offset!r}: use a non-negative multiple of bucket_size ({bucket_size})"
            )
        if not isinstance(size, int) or size <= 0 or size % bucket_size:
            raise ValueError(
                f"BigHash: size = {size!r}: use a positive multiple of bucket_size ({bucket_size})"
            )
        if size // bucket_size >= 1 << 32:
            raise ValueError(
                f"BigHash: size = {size} makes {size // bucket_size} buckets: at most 2**32 - 1; "
                "use a larger bucket_size or a smaller size"
            )
        if not isinstance(bloom_bytes_per_bucket, int) or not 0 <= bloom_bytes_per_bucket <= 4096:
            raise ValueError(
                f"BigHash: bloom_bytes_per_bucket = {bloom_bytes_per_bucket!r}: "
                "use an int from 0 (no bloom filters) to 4096 (8 is the usual)"
            )
        if not isinstance(bloom_hashes, int) or not 1 <= bloom_hashes <= 32:
            raise ValueError(f"BigHash: bloom_hashes = {bloom_hashes!r}: use an int from 1 to 32 (4 is the usual)")
        if not isinstance(generation, int) or not 0 <= generation <= _M64:
            raise ValueError(f"BigHash: generation = {generation!r}: use an int from 0 to 2**64 - 1")
        if not callable(clock):
            raise ValueError(f"BigHash: clock = {clock!r}: use a callable returning seconds, like time.time")
        if not isinstance(linear, bool):
            raise ValueError(f"BigHash: linear = {linear!r}: use True (the bucket count may grow) or False")
        capacity = size // bucket_size
        if active is not None and (not isinstance(active, int) or isinstance(active, bool)
                                   or not 1 <= active <= capacity or (active != capacity and not linear)):
            raise ValueError(f"BigHash: active = {active!r}: use a bucket count from 1 to the {capacity} the extent "
                             "holds (fewer only with linear = True)")
        self.offset = offset
        self.size = size
        self.bucket_size = bucket_size
        self.capacity = capacity
        """The buckets the extent holds; ``nbuckets`` of them are in use."""
        self.linear = linear
        self._clock = clock
        self.max_item_size = bucket_size - _HSIZE
        """Largest key + value + entry header (22 B) that fits in one bucket."""
        self._bloom = BloomFilters(capacity, bloom_bytes_per_bucket, bloom_hashes,
                                   unknown=capacity if active is None else active)
        self.hits = np.zeros(capacity, dtype=np.uint64)
        """Each bucket's hit bits (DRAM only, ``_bucket.h``): bit i set when a lookup found
        entry i of the bucket as it is on flash; an insert evicts entries not hit first and
        moves the hit ones after them (a second chance, CLOCK-like, at no extra write), and
        every bucket write zeroes the word. Not saved: a restart begins with none."""
        self._chits = _ffi.cast("uint64_t *", _ffi.from_buffer(self.hits))
        self._counters = dict.fromkeys(_COUNTERS, 0)
        self.merges = 0
        """Merges done since this object was made (``merge``; kept out of the saved counters
        so a checkpoint's bytes stay as they were)."""
        self.locks = [threading.RLock() for _ in range(LOCK_STRIPES)]
        """The lock stripes: an insert or remove holds ``locks[bucket % len(locks)]``."""
        # The blocking forms' C core (_core.c). It holds the state both forms share: the
        # generation, the write epoch, the bloom filters' C view, the stream (through the
        # properties below), and the counters of its own steps (merged by _counts()).
        self._core = BucketCore(offset=offset, bucket_size=bucket_size, nbuckets=capacity,
                                generation=generation, bloom_bits=self._bloom.bits,
                                bloom_hashes=self._bloom.num_hashes, hits=self.hits, clock=clock, unreadable=self._unreadable,
                                corrupt=self._corrupt, locks=self.locks, stream=stream, linear=linear)
        if active is not None:
            self._core.active = active
        self._core_lookup = self._core.lookup
        self._core_insert = self._core.insert
        self._core_may_hold = self._core.may_hold
        # The item count is kept, not scanned: items = base + _net_items(counters), so the
        # C core's inserts move it too. base None: not known (a cold engine has not seen its
        # buckets). Exact unless base is an estimate, corruption dropped a bucket's entries
        # uncounted, or a bucket write failed after base was set (write_failures moved).
        self._items_base: int | None = None
        self._items_exact = False
        self._failures_at_base = 0

    generation = core_field("_core.generation", "The generation buckets are written with; any other reads as empty.")
    nbuckets = core_field("_core.active", "The buckets in use (the mapping's count; ``split`` grows it).")
    # Bumped by every completed bucket write: a lookup refreshes a bucket's filter from what
    # it read only if no write landed while its Read was in flight.
    _write_epoch = core_field("_core.epoch", "The write epoch.")

    @property
    def bloom(self) -> BloomFilters:
        """The per-bucket bloom filters (DRAM)."""
        return self._bloom

    @bloom.setter
    def bloom(self, value: BloomFilters) -> None:
        self._core.set_bloom(value.bits, value.num_hashes)
        self._bloom = value

    @property
    def stream(self) -> Any:
        """The placement stream every bucket Write carries (fixed at construction)."""
        return self._core.stream

    @property
    def clock(self) -> Callable[[], float]:
        """The clock expiry is measured in (fixed at construction: the C core holds it)."""
        return self._clock

    def _counts(self) -> dict:
        """Every counter: the Python forms' plus the C core's."""
        return merged_counters(self._counters, self._core.counters())

    # ------------------------------------------------------------------ geometry

    def bucket_of(self, keyhash: int) -> int:
        """The bucket index a key hash maps to (``fc_bucket_of`` in ``_bucket.c``)."""
        core = self._core
        return _c_bucket_of(keyhash, core.active, core.linear)

    def bucket_offset(self, bucket: int) -> int:
        """Device offset of ``bucket`` (``linear``: from the extent's end down)."""
        return self.offset + ((self.capacity - 1 - bucket) if self.linear else bucket) * self.bucket_size

    # ------------------------------------------------------------------ the Engine interface

    @classmethod
    def extent_unit(cls, options: Mapping[str, Any]) -> int:
        return options.get("bucket_size", DEFAULT_BUCKET_SIZE)

    @classmethod
    def build(cls, offset: int, size: int, *, stream: Any, clock: Callable[[], float], block_size: int,
              options: Mapping[str, Any]) -> "BigHash":
        return cls(offset, size, stream=stream, clock=clock, **options)

    def layout(self) -> dict[str, Any]:
        out: dict[str, Any] = {"bucket_size": self.bucket_size, "bloom_bytes_per_bucket": self.bloom.nbytes}
        if self.linear:     # (a fixed BigHash's layout, and so its devices, as before)
            out.update(buckets="from the end down", mapping="linear")
        return out

    def c_ops(self) -> Any:
        return self._core.engine_ops()

    def may_hold(self, key: bytes | bytearray | memoryview) -> bool:
        """False when the key's bucket filter says it is surely absent (no I/O)."""
        if key.__class__ is bytes:
            return self._core_may_hold(key)
        kh = _hash(_check_bytes("key", key), KEY_SEED)
        return _c_may_contain(self.bloom.c, self.bucket_of(kh), kh) != 0

    def start_cold(self) -> str:
        return "BigHash buckets kept"

    def after_open(self) -> Op[None]:
        if self.items is None:          # a cold engine: sample its buckets (256 reads)
            yield from self.estimate_items()

    # ------------------------------------------------------------------ on-flash format

    def _unreadable(self, bucket: int, reason: int, data: bytes | bytearray | memoryview) -> None:
        """Count (and log, if it is corruption) why the C core read bucket image ``data``
        as empty: ``reason`` is one of the FC_* codes of ``_bucket.h``."""
        if reason == _FC_STALE:
            self._counters["stale_buckets"] += 1
            return
        magic, version, hsize, _, _, count, used = BUCKET_HEADER.unpack_from(data)
        if reason == _lib.FC_BAD_MAGIC:
            why = f"bad magic {bytes(magic)!r}"
        elif reason == _lib.FC_BAD_VERSION:
            why = f"format version {version} header {hsize} B, this code reads {FORMAT_VERSION}"
        elif reason == _lib.FC_BAD_USED:
            why = f"used_bytes {used} > {self.bucket_size - _HSIZE}"
        elif reason == _lib.FC_BAD_CHECKSUM:
            why = "checksum mismatch"
        elif reason == _lib.FC_OVERRUN:
            why = "entries overrun used_bytes"
        else:  # FC_BAD_END: ask where the entries end (under the image's own generation)
            end = _ffi.new("uint32_t *")
            _lib.fc_bucket_check(_from_buffer(data), self.bucket_size, bucket, BUCKET_HEADER.unpack_from(data)[4], end)
            why = f"{count} entries end at {end[0]}, used_bytes says {used}"
        self._corrupt(bucket, why)

    def _corrupt(self, bucket: int, why: str) -> None:
        self._counters["checksum_failures"] += 1
        self._items_exact = False        # the bucket's entries go without being counted
        log.warning("BigHash: bucket %d at offset %d is corrupt (%s); reading it as empty",
                    bucket, self.bucket_offset(bucket), why)
        return None

    def _bucket_read(self, bucket: int, data) -> None:
        """Count a bucket as read and check its length (every operation's first step after
        the Read)."""
        c = self._counters
        c["bucket_reads"] += 1
        c["bytes_read"] += self.bucket_size
        if len(data) != self.bucket_size:
            self._check_read(bucket, data)

    def _check_read(self, bucket: int, data) -> None:
        if len(data) != self.bucket_size:
            raise ValueError(f"BigHash: bucket {bucket} read returned {len(data)} bytes, expected {self.bucket_size}")

    # ------------------------------------------------------------------ operations

    def lookup(self, key: bytes | bytearray | memoryview) -> Op[bytes | None]:
        """The value stored for ``key``, or None (missing, expired, evicted, or corrupt).

        A negative bloom answer returns at once, yielding no I/O at all.
        """
        return self._lookup(key, False)

    def lookup_item(self, key: bytes | bytearray | memoryview) -> Op[tuple[bytes, float] | None]:
        """Like ``lookup``, but returns ``(value, expiry)`` (expiry 0 = never), so a cache
        that promotes the item to DRAM keeps its time to live."""
        return self._lookup(key, True)

    def lookup_item_now(self, device: Device, key: bytes | bytearray | memoryview) -> tuple[bytes, float] | None:
        """``lookup_item`` done at once with a blocking ``device.read``: the same steps
        and counters without a generator (a blocking caller's hot path, ~1/3 cheaper)."""
        if key.__class__ is bytes:
            return self._core_lookup(device, key)   # the same steps in one C call
        return run(self._lookup(key, True), device)

    def _lookup(self, key, with_expiry: bool) -> Op[bytes | tuple[bytes, float] | None]:
        plan = self._lookup_plan(key)
        if plan is None:
            return None
        return self._lookup_read(plan, (yield Read(plan[0], self.bucket_size)), with_expiry)

    def _lookup_plan(self, key):
        """What a lookup reads: (offset, bucket, key hash, key, C key, write epoch), or
        None when the bloom filter already says no."""
        if key.__class__ is bytes:
            ckey = key
        else:
            key = _check_bytes("key", key)
            ckey = _from_buffer(key)
        c = self._counters
        c["lookups"] += 1
        kh = _hash(key, KEY_SEED)
        b = self.bucket_of(kh)
        if not _c_may_contain(self.bloom.c, b, kh):  # always 1 with the filters off
            c["bloom_rejects"] += 1
            c["misses"] += 1
            return None
        return (self.bucket_offset(b), b, kh, key, ckey, self._write_epoch)

    def _lookup_read(self, plan, data, with_expiry: bool):
        """The lookup's answer from the bucket as read."""
        _, b, kh, key, ckey, epoch = plan
        c = self._counters
        size = self.bucket_size
        self._bucket_read(b, data)
        # If no write landed while we read, we now know this bucket's keys exactly: the C
        # core warms its filter if unknown (a cold engine learns its filters from lookups
        # as well as from writes).
        r = _c_lookup(data if data.__class__ is bytes else _from_buffer(data), size, b, self.generation, kh,
                      ckey, len(key), *((self.bloom.c, self._chits + b) if epoch == self._write_epoch else (_NULL, _NULL)))
        if r < 0:
            self._unreadable(b, -r, data)
        if r <= 0:
            c["misses"] += 1
            c["flash_misses"] += 1
            return None
        vstart = r & _LEN_MASK
        if r & _HAS_EXPIRY:
            expiry = _U32(data, vstart - (r >> _KLEN_SHIFT & 0xFFFF) - _EXPIRY_BACK)[0]
            if expiry <= self.clock():
                c["expired_misses"] += 1
                c["misses"] += 1
                return None
        else:
            expiry = 0
        if not r & _SUM_OK:
            self._corrupt(b, f"value checksum mismatch for a key of {r >> _KLEN_SHIFT & 0xFFFF} B")
            c["misses"] += 1
            return None
        value = data[vstart:vstart + (r >> _VLEN_SHIFT & _LEN_MASK)]
        if value.__class__ is not bytes:
            value = bytes(value)
        c["hits"] += 1
        return (value, float(expiry)) if with_expiry else value

    def insert(self, key: bytes | bytearray | memoryview, value: bytes | bytearray | memoryview,
               expiry: float = 0) -> Op[InsertResult]:
        """Store ``value`` under ``key``: one bucket read, one bucket write.

        Replaces an entry of the same key; drops expired entries, then the oldest entries
        of the bucket (FIFO) until the new one fits. ``expiry`` is an absolute time in
        seconds of ``clock`` (0 = never), rounded up to a whole second. ValueError if the
        item can never fit in a bucket (see ``max_item_size``).
        """
        return self._insert(*self._insert_args(key, value, expiry))

    def insert_now(self, device: Device, key: bytes | bytearray | memoryview,
                   value: bytes | bytearray | memoryview, expiry: float = 0) -> InsertResult:
        """``insert`` done at once with blocking ``device.read``/``device.write``: the
        same steps, checks and counters without a generator (a blocking caller's hot path,
        ~1/3 cheaper). The caller holds whatever lock it holds around ``insert``."""
        r = self._core_insert(device, key, value, expiry)
        if r is not None:           # done in one C call; None: the Python form judges the item
            return _new_tuple(InsertResult, (bool(r & _CHANGED), (r >> _EVICTED_SHIFT) & _COUNT_MASK,
                                             (r >> _EXPIRED_SHIFT) & _COUNT_MASK))
        return run(self.insert(key, value, expiry), device)

    def _insert_args(self, key, value, expiry: float):
        """insert's checks: (key, value, key length, value length, expiry in seconds)."""
        if key.__class__ is not bytes:
            key = _check_bytes("key", key)
        if value.__class__ is not bytes:
            value = _check_bytes("value", value)
        klen, vlen = len(key), len(value)
        if klen > MAX_KEY_LEN:
            raise ValueError(f"BigHash: key of {klen} bytes: keys are at most {MAX_KEY_LEN} bytes")
        need = _ESIZE + klen + vlen
        if need > self.max_item_size:
            raise ValueError(
                f"BigHash: item of {need} bytes (key {klen} + value {vlen} + entry header {_ESIZE}) "
                f"exceeds max_item_size {self.max_item_size} for bucket_size {self.bucket_size}; "
                "store it in BlockCache or use a larger bucket_size"
            )
        return key, value, klen, vlen, expiry_seconds("BigHash", expiry)

    def _insert(self, key, value, klen: int, vlen: int, expiry: int) -> Op[InsertResult]:
        kh = _hash(key, KEY_SEED)
        while True:
            b = self.bucket_of(kh)
            with self.locks[b % LOCK_STRIPES]:
                if self.bucket_of(kh) != b:
                    continue            # a split moved the key while we waited: choose again
                buf, cbuf, r = self._insert_image(b, (yield Read(self.bucket_offset(b), self.bucket_size)), kh, key,
                                                  klen, value, vlen, expiry)
                yield from self._write_bucket(b, buf, cbuf)
                return self._inserted(r, klen, vlen)

    def _insert_image(self, b: int, data, kh: int, key, klen: int, value, vlen: int, expiry: int):
        """The bucket image an insert writes, from the bucket as read: (image, its C view,
        the C core's result)."""
        size = self.bucket_size
        self._bucket_read(b, data)
        buf = bytearray(size)
        cbuf = _from_buffer(buf)
        r = _c_insert(data if data.__class__ is bytes else _from_buffer(data), cbuf, size, b, self.generation,
                      self.clock(), kh, key if key.__class__ is bytes else _from_buffer(key), klen,
                      value if value.__class__ is bytes else _from_buffer(value), vlen, expiry, int(self.hits[b]),
                      self._core.active, self.linear)
        if r < 0:  # pragma: no cover - insert() checked the sizes
            raise RuntimeError(f"BigHash: the C core refused an item of {klen} + {vlen} B")
        if r & _REASON_MASK:
            self._unreadable(b, r & _REASON_MASK, data)
        return buf, cbuf, r

    def _inserted(self, r: int, klen: int, vlen: int) -> InsertResult:
        """The counters and result of an insert whose bucket is written."""
        c = self._counters
        replaced = bool(r & _CHANGED)
        evicted = (r >> _EVICTED_SHIFT) & _COUNT_MASK
        expired = (r >> _EXPIRED_SHIFT) & _COUNT_MASK
        c["inserts"] += 1
        c["inserted_bytes"] += klen + vlen
        c["replaced"] += replaced
        c["evictions"] += evicted
        c["expired_dropped"] += expired
        return _new_tuple(InsertResult, (replaced, evicted, expired))  # InsertResult(...), faster

    def remove(self, key: bytes | bytearray | memoryview) -> Op[bool]:
        """Drop ``key``: one read, and one write only if a live entry was there.
        True if a live (unexpired) entry was removed."""
        if key.__class__ is bytes:
            ckey = key
        else:
            key = _check_bytes("key", key)
            ckey = _from_buffer(key)
        c = self._counters
        c["removes"] += 1
        kh = _hash(key, KEY_SEED)
        b = self.bucket_of(kh)
        bloom = self.bloom
        if not _c_may_contain(bloom.c, b, kh):
            c["bloom_rejects"] += 1
            return False
        size = self.bucket_size
        while True:
            with self.locks[b % LOCK_STRIPES]:
                if self.bucket_of(kh) != b:
                    b = self.bucket_of(kh)      # a split moved the key while we waited: choose again
                    continue
                epoch = self._write_epoch
                data = yield Read(self.bucket_offset(b), size)
                self._bucket_read(b, data)
                buf = bytearray(size)
                cbuf = _from_buffer(buf)
                hits = _ffi.new("uint64_t *", int(self.hits[b]))     # renumbered for the new image
                r = _c_remove(data if data.__class__ is bytes else _from_buffer(data), cbuf, size, b, self.generation,
                              self.clock(), kh, ckey, len(key), bloom.c if epoch == self._write_epoch else _NULL, hits,
                              self._core.active, self.linear)
                if r & _REASON_MASK:
                    self._unreadable(b, r & _REASON_MASK, data)
                if not r & _CHANGED:
                    return False
                yield from self._write_bucket(b, buf, cbuf)
                self.hits[b] = hits[0]      # the remaining entries keep their hits
                break
        c["removed"] += 1
        return True

    def _write_bucket(self, b: int, buf: bytearray, cbuf) -> Op[None]:
        """Write the image ``buf`` (``cbuf``: its C view) to bucket ``b``; then its filter
        holds exactly the image's keys."""
        try:
            yield Write(self.bucket_offset(b), buf, self._core.stream)
        except BaseException:
            self._write_failed(b)
            raise
        self._written(b, cbuf)

    def _write_failed(self, b: int) -> None:
        # The bucket on flash may now be old, new or torn: its filter must not lie (and
        # the item count may be off by what it held: counted, so items_exact says so).
        self.bloom.invalidate(b)
        self.hits[b] = 0
        self._core.epoch += 1
        self._counters["write_failures"] += 1

    def _written(self, b: int, cbuf) -> None:
        self.hits[b] = 0
        self._core.epoch += 1
        c = self._counters
        c["bucket_writes"] += 1
        c["bytes_written"] += self.bucket_size
        if self.bloom.nbits:
            _c_bloom_image(self.bloom.c, b, cbuf, self.bucket_size)

    # ------------------------------------------------------------------ growing

    def split(self) -> Op[bool]:
        """Grow by one bucket (linear hashing, see the module docstring): bucket n (n the
        buckets in use) gets the entries of its parent n - M that now map to it, written
        first; then the parent is written with the rest; then n + 1 buckets are in use.
        One read and two writes, every lock stripe held. False (no I/O) when the engine
        is not ``linear`` or its extent is full. The caller makes n + 1 durable (the
        router's checkpoints); until then a crash comes back with fewer buckets, and the
        moved keys are misses."""
        n = self.nbuckets
        if not self.linear or n >= self.capacity:
            return False
        size = self.bucket_size
        with self.held():
            n = self.nbuckets
            if n >= self.capacity:
                return False
            parent = n - (1 << (n.bit_length() - 1))
            data = yield Read(self.bucket_offset(parent), size)
            self._bucket_read(parent, data)
            src = data if data.__class__ is bytes else _from_buffer(data)
            now = self.clock()
            images = []
            for b in (n, parent):           # the new bucket first
                buf = bytearray(size)
                cbuf = _from_buffer(buf)
                r = _c_filter(src, parent, cbuf, b, size, self.generation, now, n + 1, True)
                if r < 0:  # pragma: no cover - the sizes are the engine's own
                    raise RuntimeError("BigHash: the C core refused a split image")
                images.append((b, buf, cbuf, r))
            if images[0][3] & _REASON_MASK:
                self._unreadable(parent, images[0][3] & _REASON_MASK, data)
            for b, buf, cbuf, _ in images:
                yield from self._write_bucket(b, buf, cbuf)
            self._core.active = n + 1
            self._core.epoch += 1
            c = self._counters
            c["splits"] += 1
            c["expired_dropped"] += (images[0][3] >> _EXPIRED_SHIFT) & _COUNT_MASK
            # what the parent let go beyond what moved: copies an interrupted split left
            c["evictions"] += max(0, (images[1][3] >> _EVICTED_SHIFT & _COUNT_MASK) - (images[0][3] >> _KEPT_SHIFT))
        return True

    def merge(self) -> Op[bool]:
        """Shrink by one bucket, the inverse of ``split`` (see the module docstring): the
        last bucket n - 1 folds back into its parent n - 1 - M (M the largest power of two
        <= n - 1), which is written first with its own entries and the child's (those that
        do not fit go as an insert would evict them: not hit first, oldest first); then the
        child is written empty; then n - 1 buckets are in use. Two reads and two writes,
        every lock stripe held. Each image keeps only the entries that map to its bucket
        under n, so copies an interrupted split or merge left behind are dropped, not
        carried. The child is emptied so that whatever count a crash comes back with, a key
        has at most one copy on flash (two identical ones while the merge runs): a key
        changed or deleted after the merge is never served from the child. The hit bits of
        the kept entries are carried; the child's filter becomes empty. False (no I/O) when
        the engine is not ``linear`` or has one bucket. The caller makes n - 1 durable (the
        router's checkpoints) before anything else writes where bucket n - 1 was."""
        if not self.linear or self.nbuckets <= 1:
            return False
        size = self.bucket_size
        with self.held():
            n = self.nbuckets
            if n <= 1:
                return False
            child = n - 1
            parent = child - (1 << (child.bit_length() - 1))
            pdata = yield Read(self.bucket_offset(parent), size)
            self._bucket_read(parent, pdata)
            cdata = yield Read(self.bucket_offset(child), size)
            self._bucket_read(child, cdata)
            buf = bytearray(size)
            cbuf = _from_buffer(buf)
            hits = _ffi.new("uint64_t *")
            cwhy = _ffi.new("uint32_t *")
            r = _c_merge(pdata if pdata.__class__ is bytes else _from_buffer(pdata), parent,
                         cdata if cdata.__class__ is bytes else _from_buffer(cdata), child, cbuf, size,
                         self.generation, self.clock(), n, int(self.hits[parent]), int(self.hits[child]), hits, cwhy)
            if r < 0:  # pragma: no cover - the sizes are the engine's own
                raise RuntimeError("BigHash: the C core refused a merge image")
            if r & _REASON_MASK:
                self._unreadable(parent, r & _REASON_MASK, pdata)
            if cwhy[0]:
                self._unreadable(child, cwhy[0], cdata)
            yield from self._write_bucket(parent, buf, cbuf)     # the parent first: everything
            self.hits[parent] = hits[0]
            empty = bytearray(size)                               # all zeros: an empty bucket
            yield from self._write_bucket(child, empty, _from_buffer(empty))
            self._core.active = n - 1
            self._core.epoch += 1
            self.merges += 1
            c = self._counters
            c["expired_dropped"] += (r >> _EXPIRED_SHIFT) & _COUNT_MASK
            c["evictions"] += (r >> _EVICTED_SHIFT) & _COUNT_MASK
        return True

    def use_buckets(self, n: int) -> None:
        """Before a recovery (the router's, from its checkpoint): ``n`` buckets in use. The
        filters of buckets that were not in use become unknown (their contents are not
        known yet). ValueError if out of range."""
        if not 1 <= n <= self.capacity or (n != self.capacity and not self.linear):
            raise ValueError(f"BigHash: {n} buckets in use: out of range 1..{self.capacity}")
        with self.held():
            old = self.nbuckets
            if n > old and self.bloom.nbytes:
                self.bloom.bits[old:n] = 0xFF
            self.nbuckets = n
            self._write_epoch += 1

    # ------------------------------------------------------------------ lifecycle

    def flush(self) -> Op[None]:
        """Nothing to do: every insert and remove has written its bucket when it returns."""
        yield from ()

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        """Every lock stripe held (see ``Engine.held``)."""
        with contextlib.ExitStack() as stack:
            for lock in self.locks:
                stack.enter_context(lock)
            yield

    def reset(self) -> None:
        """Empty the engine without I/O: bump the generation so every bucket reads as empty.

        The new ``generation`` must be made durable by the owner (``persist()`` or its
        superblock) and passed back on construction; a cold engine built with the old
        generation would see the old buckets again.
        """
        self.generation = (self.generation + 1) & _M64
        self.bloom.clear_all()
        self.hits[:] = 0
        self._write_epoch += 1
        self._set_items(0, True)

    # ------------------------------------------------------------------ the item count

    def _set_items(self, items: int | None, exact: bool, counts: dict | None = None) -> None:
        """Make the count read ``items`` now (None: unknown)."""
        c = counts if counts is not None else self._counts()
        self._items_base = None if items is None else items - _net_items(c)
        self._items_exact = exact and items is not None
        self._failures_at_base = c["write_failures"]

    @property
    def items(self) -> int | None:
        """Entries held on flash (expired ones not yet dropped included), kept as inserts,
        replacements, evictions and removes happen; None when not known (a cold engine
        before ``estimate_items``). Exact when ``items_exact``."""
        return self._items_of(self._counts())[0]

    @property
    def items_exact(self) -> bool:
        """Whether ``items`` is exact: it was counted from an empty (``reset``) or saved
        exact count, and no corrupt bucket or failed bucket write has lost entries since."""
        return self._items_of(self._counts())[1]

    def _items_of(self, c: dict) -> tuple[int | None, bool]:
        if self._items_base is None:
            return None, False
        exact = self._items_exact and c["write_failures"] == self._failures_at_base
        return max(0, self._items_base + _net_items(c)), exact

    def estimate_items(self, samples: int = 256) -> Op[int]:
        """Estimate the count from ``samples`` buckets spread over the extent (their
        headers' item counts, scaled), for a cold engine that keeps old buckets: the count
        then moves with inserts and removes as usual but stays approximate
        (``items_exact`` False), unless the samples covered every bucket. Returns it."""
        k = max(1, min(samples, self.nbuckets))
        aux = _ffi.new("uint32_t *")
        found = 0
        for i in range(k):
            b = i * self.nbuckets // k
            data = yield Read(self.bucket_offset(b), self.bucket_size)
            self._check_read(b, data)
            if _lib.fc_bucket_check(_from_buffer(data), self.bucket_size, b, self.generation, aux) == _lib.FC_OK:
                found += BUCKET_HEADER.unpack_from(data)[5]
        estimate = round(found * self.nbuckets / k)
        self._set_items(estimate, k == self.nbuckets)
        return estimate

    def persist(self) -> dict:
        """The DRAM state as msgpack-friendly plain types (geometry, generation, counters,
        bloom filters), for ``recover()`` after a clean restart."""
        return {
            "engine": "bighash",
            "format_version": FORMAT_VERSION,
            "offset": self.offset,
            "size": self.size,
            "bucket_size": self.bucket_size,
            "bloom_bytes_per_bucket": self.bloom.nbytes,
            "bloom_hashes": self.bloom.num_hashes,
            "generation": self.generation,
            "counters": self._counts(),
            "bloom": self.bloom.to_bytes(),
            "nbuckets": self.nbuckets,
            "items": self.items,
            "items_exact": self.items_exact,
        }

    def recover(self, state: dict) -> bool:
        """Restore what ``persist()`` saved. False (and nothing changed) if the state is
        malformed or was saved with a different geometry or format; the engine then stays
        cold, which is safe: its filters read every bucket until rewritten."""
        try:
            if not isinstance(state, dict) or state.get("engine") != "bighash":
                return False
            same = (
                state["format_version"] == FORMAT_VERSION
                and state["offset"] == self.offset
                and state["size"] == self.size
                and state["bucket_size"] == self.bucket_size
                and state["bloom_bytes_per_bucket"] == self.bloom.nbytes
                and state["bloom_hashes"] == self.bloom.num_hashes
            )
            if not same:
                log.info("BigHash: saved state has another geometry or format; starting cold")
                return False
            generation = state["generation"]
            if not isinstance(generation, int) or not 0 <= generation <= _M64:
                return False
            bloom = BloomFilters.from_bytes(state["bloom"])
            if (bloom.nbuckets, bloom.nbytes, bloom.num_hashes) != (self.capacity, self.bloom.nbytes, self.bloom.num_hashes):
                return False
            active = state.get("nbuckets", self.capacity)
            if not isinstance(active, int) or not 1 <= active <= self.capacity or (
                    active != self.capacity and not self.linear):
                return False
            counters = state.get("counters") or {}
            restored = {k: int(counters.get(k, 0)) for k in _COUNTERS}
            items = state.get("items")            # absent in metadata from before the count
            items = None if items is None else int(items)
        except (KeyError, TypeError, ValueError) as exc:
            log.info("BigHash: saved state unreadable (%s); starting cold", exc)
            return False
        self.generation = generation
        self.bloom = bloom
        self.nbuckets = active
        self._counters = restored
        self._core.reset_counters()
        self.hits[:] = 0
        self._write_epoch += 1
        self._set_items(items, bool(state.get("items_exact")), restored)
        return True

    def stats(self) -> dict:
        """Counters since creation (kept across ``recover``), plus geometry, DRAM use and
        ``items`` / ``items_exact`` (see those properties)."""
        s: dict[str, Any] = self._counts()
        items, exact = self._items_of(s)
        s.update(
            items=items,
            items_exact=exact,
            nbuckets=self.nbuckets,
            merges=self.merges,
            capacity=self.capacity,
            bucket_size=self.bucket_size,
            max_item_size=self.max_item_size,
            generation=self.generation,
            bloom_dram_bytes=self.bloom.dram_bytes,
        )
        return s

    def __repr__(self) -> str:
        return (f"BigHash(offset={self.offset}, size={self.size}, bucket_size={self.bucket_size}, "
                f"nbuckets={self.nbuckets} of {self.capacity}, bloom_bytes_per_bucket={self.bloom.nbytes})")
