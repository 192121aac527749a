"""flashcache.core: the one request path of a Cache (``RequestCore``). Every get and set is
decided here: checks, DRAM tier, then flash, expiry, promotion, demotion, the KeyOrder rule
(flashcache/cache.py's module docstring), counting and latency samples.

It drives no flash read of a get itself: a get is ``get_step`` (DRAM), then a flash lookup
the caller drives (blocking: ``lookup_now``; batched or on the event loop: the sans-I/O
``lookup`` generator), then ``finish_get``. So ``Cache.get``, ``Cache.get_many`` and
``AsyncCache`` differ only in how they run that lookup. The C ``HotPath``
(flashcache/_core.c) is the accelerator of ``get`` and ``set`` here, made by
``accelerate()``; the surprise: it keeps its own counter array (C cannot bump this dict
cheaply), which ``counts()`` merges, so stats read counters in one place.
"""
from __future__ import annotations

import pickle
import time
from typing import Any, Callable, Generator, Iterable

import msgpack

from engines.device import MAX_EXPIRY, run

from ._hot_c import HotPath, KeyOrder
from .dram import DramTier, Evicted
from .errors import ClosedError, ForkedError

MISSING = object()
_now = time.perf_counter
COUNTERS = ("gets", "sets", "deletes", "touches", "misses", "hits_dram", "hits_flash", "item_bytes_set",
            "demotions", "demotions_skipped_clean", "demotions_written_back", "promotions", "demotions_raced",
            "promotions_raced", "syncs")

Item = tuple[bytes, float]        # (value, absolute expiry; 0 = never), as the engines return it


class Raise:
    """A change step's refusal (``RequestCore.change``): the error to raise once the key's
    lock is let go."""

    __slots__ = ("error",)

    def __init__(self, error: BaseException):
        self.error = error


class RequestCore:
    """The decisions of every request of one Cache, shared by every entry point.

    Latency: one sample per key, for ``get`` and ``get_many`` alike, and on either event
    loop or thread: from when the entry point began serving the key (``t0``, perf_counter)
    to when its answer is known (``finish_get``; DRAM hits in ``get_step``), decoding not
    included. Counters: ``counters`` (this dict) plus the C accelerator's, merged by
    ``counts()``; unlocked, like the accelerator's: statistics, never state.

    The interface (all a caller needs; nothing here is private to Cache):

    * checks: ``key(k)``, ``item(k, v, ttl)``, ``expiry(ttl)``, ``decode(raw)``,
      ``check_open(what)``;
    * get: ``get_step(k, t0)`` -> ``(value, 0)`` on a DRAM hit (the get is over) or
      ``(None, ticket)``; then ``lookup(k)`` (an engines generator yielding Read/Write/Trim)
      or ``lookup_now(k)`` (the same, blocking) for the flash item; then
      ``finish_get(k, item, ticket, t0)`` -> value or None. ``get(k, t0)`` is the three,
      blocking;
    * set and the other changes: ``set(k, v, exp, t0)``, ``delete(k)``, ``touch(k, exp,
      looked_up, ticket)``, and ``change(k, step)`` with the steps ``set_step``,
      ``delete_step``, ``held`` for read-modify-writes (add, incr, pop in Cache);
    * ``ticket()``, ``demote(...)``, ``promote(...)``, ``clear()``, ``counts()``.
    """

    def __init__(self, *, dram: DramTier, navy: Any, device: Any, clock: Callable[[], float], get_hist: Any,
                 set_hist: Any, codec: str | None, max_key_size: int, default_ttl: float, write_through: bool,
                 sync: bool = False):
        self.dram = dram
        self.navy = navy
        self.device = device
        self.clock = clock
        self.get_hist = get_hist
        self.set_hist = set_hist
        self.codec = codec
        self.max_key_size = max_key_size
        self.default_ttl = default_ttl
        self.write_through = write_through or sync
        self.sync = sync              # write_through = "sync": every change fdatasync'd before it returns
        self.counters = dict.fromkeys(COUNTERS, 0)
        self.order = KeyOrder()       # one key's changes in order across DRAM and flash
        self.hot: HotPath | None = None
        self.closed = False
        self.forked_pid: int | None = None     # a forked child's: the parent's pid
        # items up to this size (key + value) fit an engine: set() checks no further
        n = navy
        self.fits_max = max(n.small_item_max if n.bighash else 0, n.blockcache.max_item_size if n.blockcache else 0,
                            1)

    # -- checks -----------------------------------------------------------------------------
    def check_open(self, what: str) -> None:
        if self.closed:
            if self.forked_pid is not None:
                raise ForkedError("flashcache", what, "Cache", self.forked_pid)
            raise ClosedError(f"flashcache: {what} on a closed cache")

    def key(self, key: Any) -> bytes:
        """``key`` as checked bytes (str: UTF-8); TypeError or ValueError."""
        if type(key) is bytes and 0 < len(key) <= self.max_key_size:
            return key
        if isinstance(key, str):
            key = key.encode()
        elif isinstance(key, (bytearray, memoryview)):
            key = bytes(key)
        elif not isinstance(key, bytes):
            raise TypeError(f"flashcache: a key must be bytes or str, not {type(key).__name__}")
        if not key:
            raise ValueError("flashcache: the empty key is not allowed")
        if len(key) > self.max_key_size:
            raise ValueError(f"flashcache: a key of {len(key)} bytes is longer than cache.max_key_size "
                             f"({self.max_key_size})")
        return key

    def encode(self, value: Any) -> bytes:
        if self.codec == "msgpack":
            try:
                return msgpack.packb(value, use_bin_type=True)
            except (TypeError, ValueError, OverflowError) as e:
                raise TypeError(f"flashcache: value not storable with the msgpack codec: {e}") from None
        if self.codec == "pickle":
            try:
                return pickle.dumps(value, pickle.HIGHEST_PROTOCOL)
            except (pickle.PicklingError, TypeError, AttributeError, RecursionError) as e:
                raise TypeError(f"flashcache: value not storable with the pickle codec: {e}") from None
        if isinstance(value, bytes):
            return value
        if isinstance(value, (bytearray, memoryview)):
            return bytes(value)
        raise TypeError(f"flashcache: a value must be bytes-like, not {type(value).__name__}; "
                        'open the cache with codec="msgpack" (or "pickle") to store Python objects')

    def decode(self, raw: bytes) -> Any:
        if self.codec is None:
            return raw
        return msgpack.unpackb(raw, raw=False) if self.codec == "msgpack" else pickle.loads(raw)

    def expiry(self, ttl: float | None) -> float:
        """The absolute expiry (0 = never) of an item set now with ``ttl`` relative seconds
        (None: the default TTL). Checked here, at the call: a ttl the engines cannot store
        must fail now, not in a later, unrelated demotion or close()."""
        if ttl is None:
            ttl = self.default_ttl
        if isinstance(ttl, bool) or not isinstance(ttl, (int, float)):
            raise TypeError(f"flashcache: ttl must be a number of seconds or None, not {type(ttl).__name__}")
        if not ttl:
            return 0.0
        if not ttl > 0:                           # negative, or NaN
            raise ValueError(f"flashcache: ttl = {ttl}: use seconds >= 0 (0 = never expires)")
        now = self.clock()
        if ttl > MAX_EXPIRY - now:
            raise ValueError(f"flashcache: ttl = {show(ttl)}: {too_long(ttl, now)}")
        return now + ttl

    def item(self, key: Any, value: Any, ttl: float | None) -> tuple[bytes, bytes, float]:
        """A set's key, encoded value and absolute expiry, checked (raises before anything changes)."""
        k = self.key(key)
        v = value if type(value) is bytes and self.codec is None else self.encode(value)
        if len(k) + len(v) > self.fits_max and self.navy.engine_for(len(k), len(v)) is None:
            raise ValueError(f"flashcache: an item of {len(k) + len(v)} bytes (key {len(k)} + value "
                             f"{len(v)}) is larger than the largest the flash engines take "
                             f"({self.navy.max_item_size} bytes); raise cache.flash.region_size")
        return k, v, self.expiry(ttl) if ttl is not None or self.default_ttl else 0.0

    # -- counting ---------------------------------------------------------------------------
    def count(self, **kw: int) -> None:
        c = self.counters
        for k, v in kw.items():
            c[k] += v

    def counts(self) -> dict[str, int]:
        """Every counter: this core's plus its accelerator's."""
        c = dict(self.counters)
        if self.hot is not None:
            for k, v in self.hot.counters().items():
                c[k] += v
        return c

    # -- get ----------------------------------------------------------------------------------
    def ticket(self) -> int:
        return self.order.ticket()

    def get_step(self, k: bytes, t0: float) -> tuple[bytes | None, int]:
        """A get's DRAM step: ``(value, 0)`` on a hit (counted, its latency recorded: done),
        else ``(None, ticket)``: look ``k`` up on flash, then ``finish_get``."""
        c = self.counters
        c["gets"] += 1
        v = self.dram.get(k)
        if v is not None:
            c["hits_dram"] += 1
            self.get_hist.observe(_now() - t0)
            return v, 0
        return None, self.order.ticket()

    def lookup(self, k: bytes) -> Generator:
        """``k``'s flash lookup, sans I/O: yields device requests, returns ``Item`` or None."""
        return self.navy.lookup_item(k)

    def lookup_now(self, k: bytes) -> Item | None:
        """``lookup(k)`` run on the device at once (the engines' accelerated blocking form)."""
        return self.navy.lookup_item_now(self.device, k)

    def finish_get(self, k: bytes, item: Item | None, ticket: int, t0: float) -> bytes | None:
        """A get's end after its flash lookup (begun after ``ticket``): the value, or None
        for a miss (an expired item is one); counted, promoted, its latency recorded."""
        c = self.counters
        if item is None or (item[1] and item[1] <= self.clock()):
            c["misses"] += 1
            self.get_hist.observe(_now() - t0)
            return None
        c["hits_flash"] += 1
        self.promote(k, item[0], item[1], ticket)
        self.get_hist.observe(_now() - t0)
        return item[0]

    def get(self, k: bytes, t0: float) -> bytes | None:
        """A blocking get of a checked key (the reference of ``HotPath.get``)."""
        v, ticket = self.get_step(k, t0)
        if v is None:
            v = self.finish_get(k, self.lookup_now(k), ticket, t0)
        return v

    def promote(self, key: bytes, value: bytes, expiry: float, ticket: int) -> None:
        """Put a flash hit in DRAM (clean), unless ``key`` changed since ``ticket`` (taken
        before the lookup) or another thread is changing it now."""
        order = self.order
        if not order.try_lock(key):
            self.counters["promotions_raced"] += 1
            return
        try:
            if order.changed_since(key, ticket):
                self.counters["promotions_raced"] += 1
                return
            ticket = order.ticket()
            added, out = self.dram.add(key, value, expiry, True)
        finally:
            order.unlock(key)
        if added:
            self.counters["promotions"] += 1
        if out:
            self.demote(out, ticket)

    # -- set and the other changes ------------------------------------------------------------
    def set(self, k: bytes, v: bytes, exp: float, t0: float) -> None:
        """A checked set (``item``'s output), begun at ``t0`` (the reference of ``HotPath.set``)."""
        c = self.counters
        c["sets"] += 1
        c["item_bytes_set"] += len(k) + len(v)
        self.change(k, lambda: self.set_step(k, v, exp))
        self.set_hist.observe(_now() - t0)

    def set_step(self, k: bytes, v: bytes, exp: float) -> tuple[None, list, int]:
        if self.write_through:
            self.navy.insert_now(self.device, k, v, exp)
            ticket = self.order.ticket()
            return None, self.dram.set(k, v, exp, clean=True), ticket
        if self.navy.may_hold(k):                 # no stale copy may outlive this set
            run(self.navy.remove(k), self.device)
        ticket = self.order.ticket()
        return None, self.dram.set(k, v, exp), ticket

    def delete(self, k: bytes) -> bool:
        self.counters["deletes"] += 1
        return self.change(k, lambda: (self.delete_step(k), None, 0))

    def delete_step(self, k: bytes) -> bool:
        in_dram = self.dram.delete(k)
        on_flash = self.remove_flash(k) if self.navy.may_hold(k) else False
        return in_dram or on_flash

    def remove_flash(self, k: bytes) -> bool:
        return run(self.navy.remove(k), self.device)

    def touch(self, k: bytes, exp: float, looked_up: Any = MISSING, ticket: int = 0) -> bool:
        """A new expiry for ``k``; False if it holds nothing. ``looked_up``: flash's item
        as a lookup begun after ``ticket`` found it (AsyncCache), else flash is read here."""
        self.counters["touches"] += 1
        return self.change(k, lambda: self.touch_step(k, exp, looked_up, ticket))

    def touch_step(self, k: bytes, exp: float, looked_up: Any = MISSING,
                   ticket: int = 0) -> tuple[bool, list | None, int | None]:
        """A new expiry for ``k`` (under its lock): in DRAM, where flash's copy (with the old
        expiry) goes; or a flash-resident item (or one on its way there: evicted, its
        demotion not yet done) moves to DRAM, dirty, and flash's copy goes."""
        if self.dram.touch(k, exp):
            if self.navy.may_hold(k):
                self.remove_flash(k)
            return True, None, 0
        item = self.dram.latest(k)    # expired in DRAM, or evicted and not yet on flash
        if item is None:
            if looked_up is not MISSING and not self.order.changed_since(k, ticket):
                item = looked_up
            else:
                item = self.lookup_now(k)
        if item is None or (item[1] and item[1] <= self.clock()):
            return False, None, None
        self.remove_flash(k)
        ticket = self.order.ticket()
        return True, self.dram.set(k, item[0], exp), ticket   # dirty: goes back to flash on eviction

    def held(self, k: bytes) -> Item | None:
        """``k``'s live item: DRAM's newest copy (held, or evicted and on its way to flash),
        else flash's. Only under the key's lock (in a ``change`` step), where no other
        change of ``k`` runs; a copy DRAM knows is the newest, expired or not."""
        item = self.dram.latest(k)
        if item is None:
            item = self.lookup_now(k)
        if item is None or (item[1] and item[1] <= self.clock()):
            return None
        return item

    def change(self, key: bytes, step: Callable[[], Any]) -> Any:
        """Run ``step`` (a set, delete, touch or read-modify-write of ``key``: its DRAM and
        flash parts) under the key's lock and stamp the key after it. A step returns
        (result, evicted, ticket): what DRAM evicted, with the ticket taken before that
        DRAM change, is demoted once the lock is let go. Ticket None: the step changed
        nothing (it only read, then refused), so no stamp: one would drop the demotion of
        the key's newest value if it is on its way to flash. A result ``Raise(error)`` is
        raised after the lock is let go. With ``sync`` a change is on stable media
        (``device.flush()``: fdatasync, or an NVMe Flush) before it returns, the lock let go
        first: the one place every set, delete, touch and read-modify-write passes."""
        order = self.order
        order.lock(key)
        changed = True                # an error part way: flash's copy may be gone
        try:
            result, out, ticket = step()
            changed = ticket is not None
        finally:
            mine = order.stamp(key) if changed else 0
            order.unlock(key)
        if changed and self.sync:
            self.flush()
        if out:
            self.demote(out, ticket, mine)
        if result.__class__ is Raise:
            raise result.error
        return result

    def demote(self, evicted: Iterable[Evicted], ticket: int, mine: int = 0, failed: list | None = None) -> None:
        """Write DRAM's evicted items to flash (through admission); ``ticket``: taken before
        the DRAM change that evicted them, ``mine``: that change's own stamp, if it was a
        set (KeyOrder.changed_since). An item whose key changed since is dropped.
        ``failed``: a list to collect (key, exception) of items whose write raised, going
        on with the rest (close()); without it the first such error is raised."""
        c = self.counters
        order = self.order
        settle = self.dram.settle
        items = iter(evicted)
        try:
            for e in items:
                order.lock(e.key)
                try:
                    # still in flight: no event of the key since its eviction, so a later
                    # stamp was another key's of the same slot (written or dropped, it
                    # is no longer in flight after this); a clean item is never in flight
                    if not settle(e.key, e.value, e.expiry) and order.changed_since(e.key, ticket, mine):
                        c["demotions_raced"] += 1
                        continue
                    if e.clean:
                        if self.on_flash(e):
                            c["demotions_skipped_clean"] += 1
                            continue
                        c["demotions_written_back"] += 1
                    c["demotions"] += 1
                    self.navy.insert_now(self.device, e.key, e.value, e.expiry)
                except Exception as exc:
                    if failed is None:
                        raise
                    failed.append((e.key, exc))
                finally:
                    order.unlock(e.key)
        except BaseException:
            for e in items:                       # not written after all
                settle(e.key, e.value, e.expiry)
            raise

    def on_flash(self, e: Evicted) -> bool:
        """Whether flash still holds the clean evicted item ``e`` (promoted from there), so
        its demotion can skip the write. Under the key's lock with no change of the key
        since the eviction, so what flash holds under the key is this very item; flash may
        have evicted it since the promotion, and then the item is written back (CacheLib's
        rule: a promoted item flash evicted is dirty again). Decided in DRAM, with no I/O:
        the router's ``may_hold`` (BlockCache's index, exact up to its 32-bit tag; BigHash's
        bloom filter, rebuilt whenever its bucket is written). The surprise: a bloom false
        positive counts as "still held", so such an item is dropped as before write-back
        existed. An exact answer for a small item would read its bucket on every clean
        eviction, which halved gets/s with flash-served hits (tools/bench_vs_diskcache.py:
        130 k against 248-296 k gets/s, get p99 104 us against 30-35 us)."""
        return bool(self.navy.may_hold_now(e.key))

    def flush(self) -> None:
        """What the device was written is on stable media (write_through = "sync"), counted."""
        self.device.flush()
        self.counters["syncs"] += 1

    def clear(self) -> None:
        """Drop every item from DRAM and flash; no demotion or promotion ticketed before lands
        after. With ``sync`` the emptying is on stable media before it returns."""
        order = self.order
        # every key's lock: no change, demotion or promotion of any key runs meanwhile
        order.lock_all()
        try:
            self.dram.clear()
            self.navy.clear()
        finally:
            # after the emptying, so a demotion or promotion ticketed before it is dropped
            # later (they check changed_since under the key's lock, which clear held)
            order.clear()
            order.unlock_all()
        if self.sync:
            self.flush()

    # -- the C accelerator --------------------------------------------------------------------
    def accelerate(self, slow_get: Callable, slow_set: Callable) -> HotPath | None:
        """The C form of ``get`` and ``set`` for the common case (bytes in and out;
        flashcache/_core.c), or None where it does not apply (a codec). A get is the same
        whatever the set does, so with a default TTL or write-through only ``get`` is
        accelerated (``hot.sets`` is False: every set goes to ``slow_set``). It does these
        same steps on the same structures and counts into its own array (``counts()``
        merges it); anything else it hands to ``slow_get``/``slow_set``. Its Python
        reference is this class: tests/test_cache.py's twin test runs both."""
        if self.codec is not None:
            return None
        hot = HotPath(dram=self.dram, order=self.order, get_hist=self.get_hist, set_hist=self.set_hist,
                      flash_lookup=self.navy.lookup_now, may_hold=self.navy.may_hold_now, remove=self.remove_flash,
                      demote=self.demote, clock=self.clock, slow_get=slow_get, slow_set=slow_set,
                      max_key=self.max_key_size, fits_max=self.fits_max,
                      sets=not (self.default_ttl or self.write_through))
        if self.device is self.navy.device:       # demotions through the Router's C insert
            hot.set_insert_hook(self.navy.insert_hook())
        self.hot = hot
        return hot


def show(x: Any, limit: int = 40) -> str:
    r = repr(x)
    return r if len(r) <= limit else r[:limit] + "..."


def too_long(ttl: float, now: float) -> str:
    """Why ``ttl`` (seconds from ``now``) is out of range, and what to do."""
    if ttl == float("inf"):
        return "use 0 for an item that never expires"
    return (f"at most {max(0, int(MAX_EXPIRY - now))} seconds from now: the flash engines keep the absolute "
            "expiry as whole seconds below 2**32 (early 2106 on the wall clock). ttl is relative seconds, "
            "never an absolute time; use 0 for an item that never expires")
