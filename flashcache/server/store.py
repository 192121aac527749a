"""The server's one door to the cache: memcached items on ``flashcache.AsyncCache``.

Owns the item format (a fixed header with client flags, CAS and expiry, then the data),
CAS numbering, expiry conversion, flush_all, and per-key serialization of
read-modify-write commands. It is the only server module that calls the cache, and it
calls only AsyncCache's public methods; the protocol and the handler never see the cache.
The surprise: the server owns its device (one owner per device) and runs on one event
loop, so a per-key asyncio lock held across a read (which may await flash) and the write
after it makes add/cas/append/incr/touch atomic: no other writer to this cache exists.

Item format on the cache, little-endian, 18 bytes then the data::

    0  version  u8   ITEM_VERSION (1)
    1  bits     u8   STALE (ms/md invalidation), TOKEN_SENT (mg's win token was handed out)
    2  flags    u32  memcached client flags, opaque
    6  cas      u64  CAS unique
    14 expiry   u32  absolute Unix seconds, 0 = never (the cache expires the item too)

CAS uniques come from one 64-bit counter (``ids``, a C ``ItemIds`` it shares with the
server's text accelerator, flashcache/_server.c). At start it resumes at the larger of the high
water mark saved at the last clean shutdown (a side key no client can name: it is longer
than memcached's 250-byte key limit) and the wall clock in microseconds, then counts up
by one per change. A server does far fewer than a million changes per second, so even
after a crash (nothing saved) the clock is already past every value handed out before:
a warm restart never reuses a CAS. flush_all is a CAS watermark: an item whose CAS is
at or below it is gone; the watermark is saved the same way, so flushed items stay gone
across a restart.
"""
from __future__ import annotations

import asyncio
import struct
import time
from typing import Any, Callable, NamedTuple

import msgpack

from .._hot_c import ItemIds, TextPath

HEADER = struct.Struct("<BBIQI")
ITEM_VERSION = 1
STALE = 1
TOKEN_SENT = 2
MAX_RELATIVE = 60 * 60 * 24 * 30      # memcached: exptime up to 30 days is relative, beyond is a Unix time
EXPIRED = -1                          # an expiry that is already past: the item is gone at once
STATE_KEY = b"\x00flashcache.server.state\x00" + b"-" * 240   # > 250 bytes: no memcached key can name it


class Item(NamedTuple):
    """A memcached item as the cache holds it (``data`` may be a memoryview)."""

    flags: int
    cas: int
    expiry: int
    bits: int
    data: Any


def pack_item(flags: int, cas: int, expiry: int, bits: int, data: bytes) -> bytes:
    """The cache value for an item: header + data."""
    return HEADER.pack(ITEM_VERSION, bits, flags, cas, expiry) + data


def unpack_item(raw: bytes) -> Item | None:
    """The item in a cache value, or None if the value is not a server item (too short or
    another version: a value another program stored in this cache)."""
    if len(raw) < HEADER.size or raw[0] != ITEM_VERSION:
        return None
    _, bits, flags, cas, expiry = HEADER.unpack_from(raw)
    return Item(flags, cas, expiry, bits, memoryview(raw)[HEADER.size:])


def to_expiry(exptime: int, now: float) -> int:
    """memcached's exptime -> absolute Unix seconds: 0 never; up to 30 days relative;
    beyond, a Unix time; negative or past: EXPIRED."""
    if exptime == 0:
        return 0
    if exptime < 0:
        return EXPIRED
    if exptime > MAX_RELATIVE:
        return exptime if exptime > now else EXPIRED
    return int(now) + exptime


class KeyLocks:
    """One asyncio.Lock per key while some request holds or waits for it; removed when
    the last one lets go, so there are never more locks than requests in flight (each
    connection runs one request at a time: at most one per connection)."""

    def __init__(self) -> None:
        self.held: dict[bytes, list] = {}   # key -> [lock, holders and waiters]; TextPath reads its keys

    def __len__(self) -> int:
        return len(self.held)

    def busy(self, key: bytes) -> bool:
        return key in self.held

    async def acquire(self, key: bytes) -> None:
        entry = self.held.get(key)
        if entry is None:
            entry = self.held[key] = [asyncio.Lock(), 0]
        entry[1] += 1
        try:
            await entry[0].acquire()
        except BaseException:
            self._drop(key, entry)
            raise

    def release(self, key: bytes) -> None:
        entry = self.held[key]
        entry[0].release()
        self._drop(key, entry)

    def _drop(self, key: bytes, entry: list) -> None:
        entry[1] -= 1
        if entry[1] == 0:
            del self.held[key]


class Store:
    """memcached items on an AsyncCache (see the module docstring). Every method that
    changes a key takes it as already locked by the caller (``lock``/``unlock``), except
    ``put`` and ``remove``, which wait for a lock held by a read-modify-write."""

    def __init__(self, cache: Any, clock: Callable[[], float] = time.time):
        self.cache = cache
        self.clock = clock
        self.locks = KeyLocks()
        self.ids = ItemIds()              # the CAS counter and flush_all's watermark
        self.flush_at = 0.0               # a delayed flush_all pending until this Unix time
        self._flush_timer: asyncio.TimerHandle | None = None
        self._foreign = 0                 # values found that are not server items (read as misses)
        self._text: Any = None            # the C TextPath, which counts its own

    # -- lifecycle -----------------------------------------------------------------------------
    async def open(self) -> dict:
        """Resume CAS numbering and flush state from the saved side key (see the module
        docstring); returns what was found, for the log."""
        raw = await self.cache.get(STATE_KEY)
        state: dict = {}
        if raw is not None:
            try:
                state = msgpack.unpackb(raw)
            except (ValueError, msgpack.UnpackException):
                state = {}
            if not isinstance(state, dict):
                state = {}
        self.ids.cas = max(int(state.get("cas", 0)), time.time_ns() // 1000)
        self.ids.flush_cas = int(state.get("flush_cas", 0))
        at = float(state.get("flush_at", 0.0))
        if at:
            self.schedule_flush(at)
        return {"saved_state": bool(state), "cas_start": self.ids.cas, "flush_cas": self.ids.flush_cas}

    async def save(self) -> None:
        """Write the CAS high-water mark and flush state to the side key."""
        state = {"cas": self.ids.cas, "flush_cas": self.ids.flush_cas, "flush_at": self.flush_at}
        await self.cache.set(STATE_KEY, msgpack.packb(state), 0)

    async def close(self) -> None:
        """Save state, then close the cache (it writes its warm-restart metadata)."""
        if self._flush_timer is not None:
            self._flush_timer.cancel()
        await self.save()
        await self.cache.aclose()

    # -- CAS and flush -------------------------------------------------------------------------
    def next_cas(self) -> int:
        return self.ids.next()

    @property
    def flush_cas(self) -> int:
        """flush_all's watermark: an item whose CAS is at or below it is gone."""
        return self.ids.flush_cas

    def flush(self, exptime: int) -> None:
        """flush_all: every item now (exptime <= 0), or every item that exists at the
        time exptime gives (relative seconds up to 30 days, else a Unix time)."""
        if exptime > 0:
            at = to_expiry(exptime, self.clock())
            if at != EXPIRED:
                self.schedule_flush(float(at))
                return
        self._flush_now()

    def schedule_flush(self, at: float) -> None:
        if self._flush_timer is not None:
            self._flush_timer.cancel()
        self.flush_at = at
        delay = at - self.clock()
        if delay <= 0:
            self._flush_now()
            return
        self._flush_timer = asyncio.get_running_loop().call_later(delay, self._flush_now)

    def _flush_now(self) -> None:
        self._flush_timer = None
        self.flush_at = 0.0
        self.ids.flush_cas = self.ids.cas

    # -- reads ---------------------------------------------------------------------------------
    def _live(self, raw: Any) -> Item | None:
        if raw is None:
            return None
        it = unpack_item(raw)
        if it is None:
            self._foreign += 1
            return None
        if it.cas <= self.flush_cas:
            return None
        return it

    async def get(self, key: bytes) -> Item | None:
        """The live item for ``key`` (DRAM, else a flash lookup), or None."""
        return self._live(await self.cache.get(key))

    async def get_many(self, keys: list) -> list:
        """Items for ``keys`` (None where missing); the flash lookups go out together."""
        if len(keys) == 1:
            return [self._live(await self.cache.get(keys[0]))]
        found = await self.cache.get_many(keys)
        return [self._live(found.get(k)) for k in keys]

    # -- writes --------------------------------------------------------------------------------
    async def write(self, key: bytes, flags: int, expiry: int, data: Any, bits: int = 0, cas: int = 0) -> int:
        """Store an item (the caller holds the key or owns no lock-taking peer); returns
        its CAS. ``expiry`` EXPIRED removes the key instead (the item is gone at once).
        ValueError: larger than the flash engines take."""
        if expiry == EXPIRED:
            await self.cache.delete(key)
            return 0
        cas = cas or self.next_cas()
        ttl = expiry - self.clock() if expiry else 0
        if expiry and ttl <= 0:
            await self.cache.delete(key)
            return cas
        await self.cache.set(key, HEADER.pack(ITEM_VERSION, bits, flags, cas, expiry) + data, ttl)
        return cas

    async def put(self, key: bytes, flags: int, expiry: int, data: Any) -> int:
        """A plain set: waits only if a read-modify-write holds ``key``."""
        if self.locks.busy(key):
            await self.locks.acquire(key)
            try:
                return await self.write(key, flags, expiry, data)
            finally:
                self.locks.release(key)
        return await self.write(key, flags, expiry, data)

    async def remove(self, key: bytes) -> bool:
        """delete: True if the key held a live item."""
        if self.locks.busy(key):
            await self.locks.acquire(key)
            try:
                return await self._remove(key)
            finally:
                self.locks.release(key)
        return await self._remove(key)

    async def _remove(self, key: bytes) -> bool:
        # after a flush_all the cache may still hold flushed items: they are not "held"
        live = True if not self.flush_cas else (await self.get(key)) is not None
        return await self.cache.delete(key) and live

    async def drop(self, key: bytes) -> None:
        """Remove ``key`` (the caller holds its lock)."""
        await self.cache.delete(key)

    # -- the text protocol's C accelerator -------------------------------------------------------
    def text_path(self, item_size_max: int, strict_keys: bool, batch_max: int) -> "tuple[TextPath | None, str]":
        """The C accelerator of plain get/gets DRAM hits and exptime-0 sets over this store
        (flashcache/_server.c), and "on"; or None and why not. It runs the cache's own C
        hot path (``AsyncCache.core.hot``: RequestCore's get/set steps), so it exists only
        where that does (no codec), and takes sets only where that does (``hot.sets``: no
        default TTL, no write-through; else every set goes to the Python path). Where the
        cache reads flash inline (``AsyncCache.inline``), it also serves single-key gets
        that read flash."""
        hot = self.cache.core.hot
        if hot is None:
            return None, "the cache's C hot path is off (a codec)"
        flash = self.cache.inline is not None   # a flash read blocks the Python path too: C may do it
        self._text = TextPath(hot=hot, ids=self.ids, locks=self.locks.held, item_size_max=item_size_max,
                              strict_keys=strict_keys, batch_max=batch_max, flash=flash)
        return self._text, "on" if hot.sets else "on for gets (sets through Python: write-through or a default TTL)"

    @property
    def foreign(self) -> int:
        """Values found that are not server items (read as misses), on either path."""
        return self._foreign + (self._text.foreign if self._text is not None else 0)

    # -- reporting -----------------------------------------------------------------------------
    def stats(self) -> dict:
        return self.cache.stats()

    @property
    def registry(self):
        """The cache's Prometheus registry (the metrics endpoint adds the server's own)."""
        return self.cache.cache.metrics.registry

    @property
    def max_value_size(self) -> int:
        """The largest value (with a short key) the flash engines take, less the header."""
        return self.cache.cache.max_value_size - HEADER.size
