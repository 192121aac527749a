"""flashcache.Cache: the DRAM item tier in front of the flash engines, with TTL, metrics
and WAF reporting.

Owns the public API (get/set/delete/touch/get_many/set_many, the dict forms, add/incr/
decr/pop/clear, memoize, stats/close), key, value and TTL checking, the optional codecs
(msgpack, pickle), promotion (flash hit -> DRAM) and demotion (DRAM eviction -> flash
through admission), and the device WAF windows. It composes a device
(flashcache.devices), the Navy router (engines.navy) and the DRAM tier (dram.py). The
surprise: a ``set`` removes any older copy of the key from flash at once (a DRAM-only
write must never let a stale flash copy come back after a rejected demotion or a crash),
and a promoted item stays on flash too, so evicting it again costs no write. A Cache a
forked child inherited refuses use there (ForkedError); its close() does nothing.

Threads (``KeyOrder``, flashcache/_hot.c). DRAM evicts an item inside one thread's call,
and that thread writes it to flash afterwards; a get that misses DRAM reads flash and may
promote what it read. Both steps are late copies of a key's value, and either could undo a
newer set or delete of the key made in between. The rule that prevents it, with one
counter of tickets, a stamp per key (slot) and a lock per key (slot):

* a change (set, delete, touch, or a read-modify-write: add, incr, decr, pop) runs its
  DRAM and flash steps under the key's lock, then stamps the key with a fresh ticket; a
  step that only read and then refused (add of a held key, incr of an absent one) changed
  nothing and does not stamp;
* a demotion takes a ticket before the DRAM change that evicts the item, and writes the
  item to flash under the key's lock only if the key has no later stamp, or the item is
  still the key's copy *in flight* (below);
* a promotion takes a ticket before its flash lookup, and adds the item to DRAM only if
  it gets the key's lock at once and the key has no later stamp (else it skips: a get
  never waits for another thread's write).

In flight: from the eviction (in the same step) until its demotion settles it under the
key's lock, DramTier keeps a dirty evicted item aside, and forgets it at any later event
of the key in DRAM, which every change of the key is (dram.py). A read-modify-write reads
the key's newest copy: DRAM's, else the one in flight, else flash's; without the one in
flight, a key another thread evicted a moment ago would read as absent (and the
change's stamp would then drop its demotion: the value lost). ``clear`` takes every key's
lock at once, empties DRAM (and what is in flight) and flash, then marks every earlier
ticket as changed (``KeyOrder.clear``), so no demotion or promotion begun before it lands
after it.

Why that suffices. A demotion's write and any change of the key hold the same lock, so
one runs wholly before the other. An item still in flight at the write had no change of
its key since its eviction, so it is the newest value, whatever the stamps say (a later
one was another key's of the same slot). Otherwise: a change before the write stamped the
key after its own DRAM step; if that stamp is later than the demotion's ticket the write
is dropped, and if it is earlier, the change happened before the eviction, so the evicted
item is the newer value. A change after the write removes flash's copy itself. Likewise a
promotion adds only what flash held after every change that completed before its lookup
began. Hence flash never holds a value older than the last completed change of its key,
DRAM holds the newest, and a get (DRAM, then flash) returns a miss or a value no older
than the last set or delete that completed before it began. Two keys sharing a slot can
only cost a skipped promotion (a later miss), never a wrong value; no path holds two key
locks at once (evictions are demoted after the change's own lock is let go; ``clear``
takes them all, holding none before), so none deadlocks.
"""
from __future__ import annotations

import functools
import logging
import pickle
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import msgpack
from prometheus_client import CollectorRegistry

from engines import admission as admission_mod
from engines.device import MAX_EXPIRY, run, run_many
from engines.navy import Navy

from . import config as config_mod
from . import forksafe
from . import stats as stats_mod
from . import memoize as memoize_mod
from .devices import open_device
from .devices.base import WafUnavailableError
from ._hot_c import HotPath, KeyOrder
from .dram import DramTier, Evicted
from .errors import ClosedError, ForkedError
from .metrics import CacheMetrics

log = logging.getLogger("flashcache.cache")
_now = time.perf_counter

_MISSING = object()
CODECS = (None, "msgpack", "pickle")
_U64 = 1 << 64          # incr/decr: memcached's counters are unsigned 64-bit
# Bind get/set to the C hot path (flashcache/_hot.c) when the cache can use it; tests turn
# it off to run the Python methods as the reference.
HOT_PATH = True


def _as_config(cfg: "config_mod.Config | str | Path | Mapping[str, Any] | None") -> "config_mod.Config":
    if cfg is None:
        return config_mod.Config()
    if isinstance(cfg, config_mod.Config):
        return cfg
    if isinstance(cfg, (str, Path)):
        return config_mod.load(cfg)
    if isinstance(cfg, Mapping):
        return config_mod.from_dict(cfg)
    raise TypeError(f"flashcache.Cache(config): got {type(cfg).__name__}; pass a flashcache.config.Config, "
                    "the path of a TOML file, a dict shaped like that file, or nothing for the defaults")


class _Raise:
    """A step's refusal (``Cache._change``): the error to raise once the key's lock is let go."""

    __slots__ = ("error",)

    def __init__(self, error: BaseException):
        self.error = error


class Cache:
    """A key-value cache: DRAM first, then flash (BigHash for small items, BlockCache for
    large ones) on the configured device.

    ::

        import flashcache
        with flashcache.open("config/default.toml") as cache:
            cache.set("user:42", b"...", ttl=300)
            cache.get("user:42")            # -> b"..."
            cache.stats()["since_open"]["hit_ratio"]

    ``config`` is the path of a TOML file (relative paths in it start at its folder), a dict
    shaped like that file (``{"device": {"path": "var/c.img"}, "cache": {"dram_size":
    "64MiB"}}``, validated the same way; relative paths start at the working directory), a
    ``flashcache.config.Config``, or None: the defaults, from the repo root the same cache
    as ``config/default.toml``. A bad config raises one ConfigError listing every problem
    (``.errors``).

    It is also dict-like, with memcached's read-modify-writes::

        cache["k"] = b"v"; cache["k"]; del cache["k"]     # KeyError when absent
        cache.add("lock:7", b"me", ttl=30)              # True only if it was absent
        cache.incr("hits", default=0)                   # -> 1 (atomic across threads)
        cache.pop("k", None); len(cache); cache.clear()

    Keys are bytes or str (UTF-8), up to ``cache.max_key_size`` bytes. Values are
    bytes-like; with ``codec="msgpack"`` any msgpack-able object, with ``codec="pickle"``
    any picklable one. Pickle is for trusted data only: loading a pickle runs code, so
    never use it on a device that an untrusted party can write. ``ttl`` is relative
    seconds (None: ``cache.default_ttl`` from the config, 0: never expires), checked at
    the call: finite, >= 0, and an expiry the flash engines can store (they keep absolute
    whole seconds below 2**32: until early 2106); ValueError otherwise. It is never read
    as an absolute time (memcached's rule that a ttl over 30 days is one does not apply).

    Thread-safe, and a get returns a miss or a value no older than the last set or delete
    that completed before it began (module docstring); ``add``, ``incr``, ``decr`` and
    ``pop`` are atomic per key. The DRAM tier has no lock of its own (C, under the GIL),
    BlockCache one lock per engine, BigHash a lock per bucket stripe; no lock is held
    across another engine's I/O. ``close()`` writes DRAM's items to flash and the
    warm-restart metadata; use the context manager.
    One process owns a device at a time: a second Cache on it, here or in another process,
    raises DeviceInUseError naming the holder. A child made by fork() cannot use the
    parent's Cache (ForkedError; its close() does nothing): open a new one in the child.
    """

    _forked = False          # set in a forked child (see _inherited)

    def __init__(self, config: "config_mod.Config | str | Path | None" = None, *, device: Any = None,
                 codec: str | None = None, registry: CollectorRegistry | None = None, name: str = "default",
                 clock: Callable[[], float] = time.time):
        if codec not in CODECS:
            raise ValueError(f'flashcache.Cache: codec = {codec!r}: use None (bytes values), "msgpack", or "pickle" '
                             "(trusted data only: loading a pickle runs code)")
        cfg = _as_config(config)
        if cfg.cache.default_ttl > MAX_EXPIRY - clock():
            raise config_mod.ConfigError(f"{cfg.source}: cache.default_ttl = {cfg.cache.default_ttl:g}: "
                                         + _too_long(cfg.cache.default_ttl, clock()))
        self.config = cfg
        self.codec = codec
        self._clock = clock
        c = cfg.cache
        self._own_device = device is None
        self.device = device if device is not None else open_device(cfg.device)
        try:
            f = c.flash
            adm = admission_mod.make(c.admission.policy, probability=c.admission.probability,
                                     target_bytes_per_s=c.admission.target_write_rate,
                                     window_keys=c.admission.window_keys)
            self.navy = Navy(self.device, small_item_max=f.small_item_max, bighash_fraction=f.bighash_fraction,
                             bucket_size=f.bucket_size, bloom_bytes_per_bucket=f.bloom_bytes_per_bucket,
                             region_size=f.region_size, alignment=f.alignment, clean_regions=f.clean_regions,
                             metadata_fraction=f.metadata_fraction, admission=adm, clock=clock,
                             blockcache_options=blockcache_options(f))
        except ValueError as e:
            if self._own_device:
                self.device.close()
            raise config_mod.ConfigError(f"{cfg.source}: [cache.flash] does not fit the device: {e}") from None
        except BaseException:
            if self._own_device:
                self.device.close()
            raise
        self.dram = DramTier(c.dram_size, clock)
        self.max_key_size = c.max_key_size
        self.default_ttl = c.default_ttl
        self.write_through = c.write_through
        self._counters = {"gets": 0, "sets": 0, "deletes": 0, "touches": 0, "misses": 0, "hits_dram": 0,
                          "hits_flash": 0, "item_bytes_set": 0, "demotions": 0, "demotions_skipped_clean": 0,
                          "promotions": 0, "demotions_raced": 0, "promotions_raced": 0}
        self._order = KeyOrder()    # one key's changes in order across DRAM and flash (module docstring)
        # since-open figures of the engines' lifetime counters are their growth since now
        self._opened_at = clock()
        self._lifetime_at_open = stats_mod.flash_lifetime(self.navy.stats())
        self._closed = False
        self._waf_lock = threading.Lock()
        self._waf_window = c.waf_window
        self._waf_samples: deque = deque()
        self._waf_reason = self.device.waf_unavailable_reason()
        self._waf_open = self._waf_snapshot()
        if self._waf_open is not None:
            self._waf_samples.append((time.monotonic(), self._waf_open))
        self.metrics = CacheMetrics(self.stats, registry, name)
        self._get_hist = self.metrics.get_seconds
        self._set_hist = self.metrics.set_seconds
        # items up to this size (key + value) fit an engine: set() checks no further
        n = self.navy
        self._fits_max = max(n.small_item_max if n.bighash else 0, n.blockcache.max_item_size if n.blockcache else 0, 1)
        # get and set in one C call each for the common case (bytes in and out, no TTL by
        # default, no write-through); everything else goes to the Python methods below,
        # which do the same steps (the hot path calls them as its slow path)
        self._hot = None
        if HOT_PATH and codec is None and not self.default_ttl and not self.write_through:
            self._hot = HotPath(self.dram, self._order, self._get_hist, self._set_hist,
                                self.navy.lookup_now, self.navy.may_hold_now,
                                self._remove_flash, self._demote, clock, Cache.get.__get__(self),
                                Cache.set.__get__(self), self.max_key_size, self._fits_max)
            self.get = self._hot.get
            self.set = self._hot.set
            if self.device is self.navy.device:   # demotions through the Router's C insert
                self._hot.set_insert_hook(self.navy.insert_hook())
        log.info("cache on %s: %s; DRAM %d MiB; placement %s", self.device.path, self.navy.start,
                 c.dram_size >> 20, {k: v["state"] for k, v in self._placement().items()})
        self._pid = forksafe.track(self)

    def _inherited(self) -> None:
        """In a forked child (flashcache.forksafe): every call raises ForkedError (as a
        closed cache's raises ClosedError, through the same checks) and close() does
        nothing: no demotion, no metadata, no device I/O; the flash is the parent's."""
        self._forked = True
        self._closed = True
        if self._hot is not None:
            self._hot.closed = True          # every get/set takes the Python path, which checks

    # -- checking ---------------------------------------------------------------------------
    def _key(self, key: Any) -> bytes:
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

    def _encode(self, value: Any) -> bytes:
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

    def _decode(self, raw: bytes) -> Any:
        if self.codec is None:
            return raw
        return msgpack.unpackb(raw, raw=False) if self.codec == "msgpack" else pickle.loads(raw)

    def _expiry(self, ttl: float | None) -> float:
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
        now = self._clock()
        if ttl > MAX_EXPIRY - now:
            raise ValueError(f"flashcache: ttl = {_show(ttl)}: {_too_long(ttl, now)}")
        return now + ttl

    def _check_open(self, what: str) -> None:
        if self._closed:
            if self._forked:
                raise ForkedError("flashcache", what, "Cache", self._pid)
            raise ClosedError(f"flashcache: {what} on a closed cache")

    @property
    def max_value_size(self) -> int:
        """Largest value (with the shortest key) that flash can hold."""
        return self.navy.max_item_size - 1

    def _check_size(self, key: bytes, value: bytes) -> None:
        if self.navy.engine_for(len(key), len(value)) is None:
            raise ValueError(f"flashcache: an item of {len(key) + len(value)} bytes (key {len(key)} + value "
                             f"{len(value)}) is larger than the largest the flash engines take "
                             f"({self.navy.max_item_size} bytes); raise cache.flash.region_size")

    def _count(self, **kw: int) -> None:
        # Unlocked, like the hot paths below: counters are statistics (a lost increment
        # under heavy threading is possible and harmless), never state.
        c = self._counters
        for k, v in kw.items():
            c[k] += v

    # -- flash ------------------------------------------------------------------------------
    def _remove_flash(self, k: bytes) -> bool:
        return run(self.navy.remove(k), self.device)

    def _counts(self) -> dict[str, int]:
        """The counters: the Python methods' plus the hot path's."""
        c = dict(self._counters)
        # getattr: a registry that collects to learn the names (prometheus_client's default)
        # calls stats() while __init__ registers the metrics, before the hot path is set up
        if getattr(self, "_hot", None) is not None:
            for k, v in self._hot.counters().items():
                c[k] += v
        return c

    def _demote(self, evicted: Iterable[Evicted], ticket: int, mine: int = 0,
                failed: list | None = None) -> None:
        """Write DRAM's evicted items to flash (through admission); ``ticket``: taken before
        the DRAM change that evicted them, ``mine``: that change's own stamp, if it was a
        set (KeyOrder.changed_since). An item whose key changed since is dropped.
        ``failed``: a list to collect (key, exception) of items whose write raised, going
        on with the rest (close()); without it the first such error is raised."""
        c = self._counters
        order = self._order
        settle = self.dram.settle
        items = iter(evicted)
        try:
            for e in items:
                if e.clean:
                    c["demotions_skipped_clean"] += 1
                    continue
                order.lock(e.key)
                try:
                    # still in flight: no event of the key since its eviction, so a later
                    # stamp was another key's of the same slot (written or dropped, it
                    # is no longer in flight after this)
                    if not settle(e.key, e.value, e.expiry) and order.changed_since(e.key, ticket, mine):
                        c["demotions_raced"] += 1
                        continue
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

    def _promote(self, key: bytes, value: bytes, expiry: float, ticket: int) -> None:
        """Put a flash hit in DRAM (clean), unless ``key`` changed since ``ticket`` (taken
        before the lookup) or another thread is changing it now."""
        order = self._order
        if not order.try_lock(key):
            self._counters["promotions_raced"] += 1
            return
        try:
            if order.changed_since(key, ticket):
                self._counters["promotions_raced"] += 1
                return
            ticket = order.ticket()
            added, out = self.dram.add(key, value, expiry, True)
        finally:
            order.unlock(key)
        if added:
            self._counters["promotions"] += 1
        if out:
            self._demote(out, ticket)

    def _change(self, key: bytes, step: Callable[[], Any]) -> Any:
        """Run ``step`` (a set, delete, touch or read-modify-write of ``key``: its DRAM and
        flash parts) under the key's lock and stamp the key after it. A step returns
        (result, evicted, ticket): what DRAM evicted, with the ticket taken before that
        DRAM change, is demoted once the lock is let go. Ticket None: the step changed
        nothing (it only read, then refused), so no stamp: one would drop the demotion of
        the key's newest value if it is on its way to flash. A result ``_Raise(error)`` is
        raised after the lock is let go."""
        order = self._order
        order.lock(key)
        changed = True                # an error part way: flash's copy may be gone
        try:
            result, out, ticket = step()
            changed = ticket is not None
        finally:
            mine = order.stamp(key) if changed else 0
            order.unlock(key)
        if out:
            self._demote(out, ticket, mine)
        if result.__class__ is _Raise:
            raise result.error
        return result

    # -- the API ----------------------------------------------------------------------------
    def get(self, key: Any, default: Any = None) -> Any:
        """The value for ``key``, or ``default``. Expired items are never returned."""
        if self._closed:
            self._check_open("get")
        t0 = _now()
        k = key if type(key) is bytes and 0 < len(key) <= self.max_key_size else self._key(key)
        c = self._counters
        c["gets"] += 1
        v = self.dram.get(k)
        if v is not None:
            c["hits_dram"] += 1
        else:
            ticket = self._order.ticket()
            item = self.navy.lookup_item_now(self.device, k)
            if item is None or (item[1] and item[1] <= self._clock()):
                c["misses"] += 1
                self._get_hist.observe(_now() - t0)
                return default
            v = item[0]
            c["hits_flash"] += 1
            self._promote(k, v, item[1], ticket)
        self._get_hist.observe(_now() - t0)
        return v if self.codec is None else self._decode(v)

    def __contains__(self, key: Any) -> bool:
        """Whether ``key`` is held (counts as a get; a flash hit is promoted)."""
        return self.get(key, _MISSING) is not _MISSING

    def set(self, key: Any, value: Any, ttl: float | None = None) -> None:
        """Store ``value`` under ``key`` for ``ttl`` seconds (None: the default TTL, 0: no
        expiry). DRAM first; flash when DRAM evicts it (or at once with write_through)."""
        if self._closed:
            self._check_open("set")
        t0 = _now()
        k, v, exp = self._item(key, value, ttl)
        self._store(k, v, exp, t0)

    def _store(self, k: bytes, v: bytes, exp: float, t0: float) -> None:
        """A checked set (``_item``'s output), begun at ``t0``."""
        c = self._counters
        c["sets"] += 1
        c["item_bytes_set"] += len(k) + len(v)
        self._change(k, lambda: self._set_step(k, v, exp))
        self._set_hist.observe(_now() - t0)

    def _item(self, key: Any, value: Any, ttl: float | None) -> tuple[bytes, bytes, float]:
        """A set's key, encoded value and absolute expiry, checked (raises before anything changes)."""
        k = key if type(key) is bytes and 0 < len(key) <= self.max_key_size else self._key(key)
        v = value if type(value) is bytes and self.codec is None else self._encode(value)
        if len(k) + len(v) > self._fits_max:
            self._check_size(k, v)
        return k, v, self._expiry(ttl) if ttl is not None or self.default_ttl else 0.0

    def _set_step(self, k: bytes, v: bytes, exp: float) -> tuple[None, list, int]:
        if self.write_through:
            self.navy.insert_now(self.device, k, v, exp)
            ticket = self._order.ticket()
            return None, self.dram.set(k, v, exp, clean=True), ticket
        if self.navy.may_hold(k):                 # no stale copy may outlive this set
            run(self.navy.remove(k), self.device)
        ticket = self._order.ticket()
        return None, self.dram.set(k, v, exp), ticket

    def delete(self, key: Any) -> bool:
        """Remove ``key`` from every tier; True if it was held."""
        self._check_open("delete")
        k = self._key(key)
        self._count(deletes=1)
        return self._change(k, lambda: (self._delete_step(k), None, 0))

    def _delete_step(self, k: bytes) -> bool:
        in_dram = self.dram.delete(k)
        on_flash = run(self.navy.remove(k), self.device) if self.navy.may_hold(k) else False
        return in_dram or on_flash

    def touch(self, key: Any, ttl: float | None) -> bool:
        """Give ``key`` a new time to live; False if it is not held."""
        self._check_open("touch")
        k = self._key(key)
        exp = self._expiry(ttl)
        self._count(touches=1)
        return self._change(k, lambda: self._touch_step(k, exp))

    def _touch_step(self, k: bytes, exp: float, looked_up: Any = _MISSING,
                    ticket: int = 0) -> tuple[bool, list | None, int]:
        """A new expiry for ``k`` (under its lock): in DRAM, where flash's copy (with the old
        expiry) goes; or a flash-resident item (or one on its way there: evicted, its
        demotion not yet done) moves to DRAM, dirty, and flash's copy goes.
        ``looked_up``: flash's item as a lookup begun after ``ticket`` found it (AsyncCache),
        used if the key has not changed since; else flash is read here."""
        if self.dram.touch(k, exp):
            if self.navy.may_hold(k):
                run(self.navy.remove(k), self.device)
            return True, None, 0
        item = self.dram.latest(k)    # expired in DRAM, or evicted and not yet on flash
        if item is None:
            if looked_up is not _MISSING and not self._order.changed_since(k, ticket):
                item = looked_up
            else:
                item = self.navy.lookup_item_now(self.device, k)
        if item is None or (item[1] and item[1] <= self._clock()):
            return False, None, None
        run(self.navy.remove(k), self.device)
        ticket = self._order.ticket()
        return True, self.dram.set(k, item[0], exp), ticket   # dirty: goes back to flash on eviction

    def get_many(self, keys: Iterable[Any]) -> dict[Any, Any]:
        """The values of the keys that are held, as {key: value} (keys as given). All flash
        lookups of one call go to the device together: one submission per round."""
        self._check_open("get_many")
        t0 = time.perf_counter()
        given = list(keys)
        checked = [(orig, self._key(orig)) for orig in given]     # every key, before any is read
        many_keys(given)
        out: dict[Any, Any] = {}
        missing: list[tuple[Any, bytes]] = []
        hits = 0
        for orig, k in checked:
            v = self.dram.get(k)
            if v is not None:
                out[orig] = self._decode(v)
                hits += 1
            else:
                missing.append((orig, k))
        fhits = 0
        if missing:
            ticket = self._order.ticket()
            items = run_many([self.navy.lookup_item(k) for _, k in missing], self.device)
            now = self._clock()
            for (orig, k), item in zip(missing, items):
                if item is None or (item[1] and item[1] <= now):
                    continue
                out[orig] = self._decode(item[0])
                fhits += 1
                self._promote(k, item[0], item[1], ticket)
        self._count(gets=len(given), hits_dram=hits, hits_flash=fhits, misses=len(given) - hits - fhits)
        self.metrics.get_seconds.observe(time.perf_counter() - t0)
        return out

    def set_many(self, mapping: Mapping[Any, Any], ttl: float | None = None) -> None:
        """``set`` each item of ``mapping`` with the same ``ttl``. Every item is checked
        first: a bad key, value or ttl raises before any item is stored."""
        self._check_open("set_many")
        for item in [self._item(k, v, ttl) for k, v in mapping.items()]:
            self._store(*item, _now())

    # -- the dict forms and read-modify-write -------------------------------------------------
    # Each read-modify-write runs as one ``_change`` step: under the key's lock, the read
    # (DRAM, else flash) and the write cannot interleave with any other change of the key.

    def __getitem__(self, key: Any) -> Any:
        """``cache[key]``: the value; KeyError if the key holds nothing (or it expired)."""
        v = self.get(key, _MISSING)
        if v is _MISSING:
            raise KeyError(key)
        return v

    def __setitem__(self, key: Any, value: Any) -> None:
        """``cache[key] = value``: ``set`` with the default TTL."""
        self.set(key, value)

    def __delitem__(self, key: Any) -> None:
        """``del cache[key]``: ``delete``; KeyError if the key held nothing."""
        if not self.delete(key):
            raise KeyError(key)

    __iter__ = None   # no key listing: BigHash keeps no key index (so iter(cache) is a TypeError)

    def __bool__(self) -> bool:
        """A Cache is always true (``len`` is approximate; ``if cache:`` must not depend on it)."""
        return True

    def __len__(self) -> int:
        """An approximate item count: DRAM's items plus the engines' items on flash. A
        promoted item is counted in both tiers, expired items not yet dropped count, and
        after a cold start BigHash's share is an estimate (``stats()["items"]`` says
        whether the flash count is exact)."""
        n = len(self.dram)
        bc, bh = self.navy.blockcache, self.navy.bighash
        if bc is not None:
            n += len(bc.index)
        if bh is not None:
            n += bh.items or 0
        return n

    def _held(self, k: bytes) -> tuple[bytes, float] | None:
        """``k``'s live item as (value, expiry): DRAM's newest copy (held, or evicted and
        on its way to flash), else flash's. Only under the key's lock (in a ``_change``
        step), where no other change of ``k`` runs; a copy DRAM knows is the newest,
        expired or not."""
        item = self.dram.latest(k)
        if item is None:
            item = self.navy.lookup_item_now(self.device, k)
        if item is None or (item[1] and item[1] <= self._clock()):
            return None
        return item

    def add(self, key: Any, value: Any, ttl: float | None = None) -> bool:
        """Store ``value`` under ``key`` only if the key holds no live item; True if stored.
        Atomic: of many threads adding one new key, exactly one gets True."""
        self._check_open("add")
        k, v, exp = self._item(key, value, ttl)

        def step() -> tuple[bool, list | None, int]:
            if self._held(k) is not None:
                return False, None, None
            return (True,) + self._set_step(k, v, exp)[1:]
        added = self._change(k, step)
        if added:
            self._count(sets=1, item_bytes_set=len(k) + len(v))
        return added

    def incr(self, key: Any, delta: int = 1, default: int | None = None) -> int:
        """Add ``delta`` to the counter under ``key`` and return the new value, atomically
        (threads never lose an increment), as memcached's incr: the value is an unsigned
        64-bit integer that wraps at 2**64, stored as ASCII decimal bytes (``b"42"``; with
        a codec, as the int object). The item keeps its expiry. A missing key raises
        KeyError, unless ``default`` is given: then it is stored as ``default + delta``,
        with the default TTL. ValueError if the value held is not such a number."""
        return self._bump("incr", key, delta, default)

    def decr(self, key: Any, delta: int = 1, default: int | None = None) -> int:
        """Subtract ``delta`` from the counter under ``key``, as ``incr``, stopping at 0
        (memcached's decr never goes below zero)."""
        return self._bump("decr", key, delta, default)

    def _bump(self, op: str, key: Any, delta: int, default: int | None) -> int:
        self._check_open(op)
        k = self._key(key)
        _check_u64(op, "delta", delta)
        if default is not None:
            _check_u64(op, "default", default)
        exp_new = self._expiry(None) if default is not None else 0.0

        def step() -> tuple[int, list | None, int]:
            item = self._held(k)
            if item is None:
                if default is None:
                    return _Raise(KeyError(key)), None, None
                n, exp = default, exp_new
            else:
                try:
                    n, exp = self._counter(key, item[0]), item[1]
                except ValueError as e:
                    return _Raise(e), None, None
            n = (n + delta) % _U64 if op == "incr" else max(n - delta, 0)
            v = b"%d" % n if self.codec is None else self._encode(n)
            self._count(sets=1, item_bytes_set=len(k) + len(v))
            return (n,) + self._set_step(k, v, exp)[1:]
        return self._change(k, step)

    def _counter(self, key: Any, raw: bytes) -> int:
        """The counter a stored value holds (incr/decr); ValueError if it holds none."""
        if self.codec is None:
            if raw.isdigit() and len(raw) <= 20 and int(raw) < _U64:
                return int(raw)
            what = f"{_show(raw[:24])} is not"
        else:
            n = self._decode(raw)
            if type(n) is int and 0 <= n < _U64:
                return n
            what = f"{_show(n)} ({type(n).__name__}) is not"
        raise ValueError(f"flashcache: incr/decr of {_show(key)}: its value {what} an unsigned 64-bit integer; "
                         + ('store counters as ASCII digits, like b"0"' if self.codec is None else
                            "store counters as ints from 0 to 2**64 - 1"))

    def pop(self, key: Any, default: Any = _MISSING) -> Any:
        """Remove ``key`` and return its value, atomically (of threads popping one key, one
        gets the value); ``default`` if it held nothing, else KeyError."""
        self._check_open("pop")
        k = self._key(key)
        self._count(deletes=1)

        def step() -> tuple[Any, None, int]:
            item = self._held(k)
            self._delete_step(k)
            return item, None, 0
        item = self._change(k, step)
        if item is None:
            if default is _MISSING:
                raise KeyError(key)
            return default
        return self._decode(item[0])

    def clear(self) -> None:
        """Drop every item, from DRAM and from flash (both engines start a new generation:
        no I/O but the superblock). Every value set before ``clear`` began is gone once it
        returns; a set made while it runs may survive it or not."""
        self._check_open("clear")
        order = self._order
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

    def memoize(self, ttl: float | None = None, key: Callable[..., Any] | None = None,
                typed: bool = False) -> Callable[[Callable], Callable]:
        """A decorator that caches a function's results here, for ``ttl`` seconds (None:
        the default TTL, 0: no expiry)::

            @cache.memoize(ttl=60)
            def profile(user_id: int) -> dict: ...

            profile(42)                              # runs once, then from the cache
            cache.delete(profile.cache_key(42))      # forget that one call

        The key of a call is ``key(*args, **kwargs)`` if given (bytes or str, used as it
        is), else ``b"memo:<module>.<qualname>:"`` and a digest of the arguments, which
        must be plain data (``flashcache.memoize.call_key``; ``typed`` adds their type
        names). The result is stored with the cache's codec: with codec=None the function
        must return bytes (else TypeError: open the cache with codec="msgpack" or
        "pickle"). Two threads missing the same call at once both run the function."""
        self._expiry(ttl)                        # a bad ttl fails here, not at every call
        if not isinstance(typed, bool):
            raise TypeError(f"flashcache memoize: typed = {typed!r}: use True or False")

        def decorate(fn: Callable) -> Callable:
            if not callable(fn):
                raise TypeError(f"flashcache memoize: decorates a function, not {type(fn).__name__}")
            cache_key = memoize_mod.key_function(fn, key, typed)

            @functools.wraps(fn)
            def memoized(*args: Any, **kwargs: Any) -> Any:
                k = cache_key(*args, **kwargs)
                v = self.get(k, _MISSING)
                if v is _MISSING:
                    v = fn(*args, **kwargs)
                    memoize_mod.check_result(self.codec, fn, v)
                    self.set(k, v, ttl)
                return v
            memoized.cache_key = cache_key
            return memoized
        return decorate

    # -- reporting --------------------------------------------------------------------------
    def _waf_snapshot(self):
        if self._waf_reason is not None:
            return None
        try:
            return self.device.waf_snapshot()
        except WafUnavailableError as e:
            self._waf_reason = str(e)
            return None

    def _device_waf(self) -> dict[str, Any]:
        """Device WAF ``since_open``, over the ``window`` (``window_seconds`` long) and over
        the device's ``lifetime``, each from the FDP counters' deltas over its own interval."""
        snap = self._waf_snapshot() if self._waf_open is not None else None
        if snap is None:
            off = stats_mod.waf_unavailable(self._waf_reason or "the device did not say why")
            return {"since_open": off, "window": dict(off), "window_seconds": None, "lifetime": dict(off)}
        now = time.monotonic()
        with self._waf_lock:
            s = self._waf_samples
            s.append((now, snap))
            # keep one sample at or before the window's start, so the window is covered
            while len(s) > 2 and s[1][0] <= now - self._waf_window:
                s.popleft()
            t_old, old = s[0]
        empty = stats_mod.NO_WRITES
        return {"since_open": stats_mod.waf(snap, self._waf_open, empty["since_open"]),
                "window": stats_mod.waf(snap, old, empty["window"]), "window_seconds": now - t_old,
                "lifetime": stats_mod.waf(snap, None, empty["lifetime"])}

    def _placement(self) -> dict[str, dict[str, Any]]:
        out = {}
        for name, s in self.navy.streams.items():
            out[name] = ({"state": "on", "pid": s.pid} if s.pid is not None else
                         {"state": "off", "reason": str(s.placement).removeprefix("off: ")})
        return out

    def stats(self) -> dict[str, Any]:
        """A plain dict. Each counter and ratio sits under the interval it covers:
        ``since_open`` (from zero at this open), ``window`` (the last ``cache.waf_window``
        seconds) or ``lifetime`` (kept across restarts); what describes the cache now
        (items, placement) sits at the top, and each layer's own stats under its name.
        A ratio is ``{"value": float or None, "status": ...}``: status "available" with
        a value, or value None and a status that says why ("no writes yet since open",
        "unavailable: <why>", ...). Example::

            {"start": "warm",
             "placement": {"bighash": {"state": "on", "pid": 1}, "blockcache": {...}},
             "items": {"dram": 120, "flash": 3400, "flash_exact": True},
             "bytes": {"dram": 40960, "flash": None},
             "since_open": {"seconds": 12.5, "gets": 10, "sets": 4, "deletes": 1, "touches": 0,
                            "misses": 2, "hits": {"dram": 5, "flash": 3}, "hit_ratio": 0.8,
                            "promotions": 3, "demotions": 100, "demotions_skipped_clean": 2,
                            "item_bytes_set": 40000, "flash": {"inserts": 98, ...},
                            "device_bytes_written": {"bighash": 401408, "blockcache": 0},
                            "app_write_amplification": {"value": 10.04, "status": "available"},
                            "device_waf": {"value": 1.0, "status": "available",
                                           "hbmw": 401408, "mbmw": 401408, "mbe": 0}},
             "window": {"seconds": 12.5, "device_waf": {...}},
             "lifetime": {"flash": {...}, "device_bytes_written": {...}, "device_waf": {...}},
             "dram": {...}, "flash": {...}, "device": {...}}

        ``items["flash"]`` is exact when ``items["flash_exact"]`` is True: BlockCache counts
        its index, BigHash keeps a count through inserts, evictions and removes, saved with
        the warm-restart metadata; after a cold start BigHash estimates its share from a
        sample of buckets (then ``flash_exact`` is False). ``flashcache.stats.describe(path)``
        gives the description of any figure below; the Prometheus metrics use the same.

        The figures:

        """
        c = self._counts()
        fl = self.navy.stats()
        dr = self.dram.stats()
        life = stats_mod.flash_lifetime(fl)
        at_open = self._lifetime_at_open
        written = stats_mod.delta(life["device_bytes_written"], at_open["device_bytes_written"])
        flash_items, exact = stats_mod.flash_items(fl)
        waf = self._device_waf()
        hits = c["hits_dram"] + c["hits_flash"]
        return {
            "start": self.navy.start,
            "placement": self._placement(),
            "items": {"dram": dr["items"], "flash": flash_items, "flash_exact": exact},
            "bytes": {"dram": dr["bytes"], "flash": None},
            "since_open": {
                "seconds": self._clock() - self._opened_at,
                "gets": c["gets"], "sets": c["sets"], "deletes": c["deletes"], "touches": c["touches"],
                "misses": c["misses"], "hits": {"dram": c["hits_dram"], "flash": c["hits_flash"]},
                "hit_ratio": hits / c["gets"] if c["gets"] else None,
                "promotions": c["promotions"], "demotions": c["demotions"],
                "demotions_skipped_clean": c["demotions_skipped_clean"],
                "demotions_raced": c["demotions_raced"], "promotions_raced": c["promotions_raced"],
                "item_bytes_set": c["item_bytes_set"],
                "flash": stats_mod.delta(life["flash"], at_open["flash"]),
                "device_bytes_written": written,
                "app_write_amplification": stats_mod.ratio(sum(written.values()), c["item_bytes_set"],
                                                           stats_mod.NO_SETS),
                "device_waf": waf["since_open"],
            },
            "window": {"seconds": waf["window_seconds"], "device_waf": waf["window"]},
            "lifetime": {"flash": life["flash"], "device_bytes_written": life["device_bytes_written"],
                         "device_waf": waf["lifetime"]},
            "dram": dr, "flash": fl, "device": self.device.stats(),
        }

    if stats.__doc__:                        # None under python -OO
        stats.__doc__ += "\n".join("        " + line for line in stats_mod.doc().splitlines()) + "\n"

    # -- lifecycle ----------------------------------------------------------------------------
    def close(self) -> None:
        """Write DRAM's items to flash (through admission), save warm-restart metadata and
        close the device (if the cache opened it). Idempotent. In a forked child that
        inherited the cache it does nothing (see _inherited).

        An error on the way costs only what it touched: close goes on (the other items,
        the metadata, the device) and raises the first error at the end, with a note of
        what else failed. So one bad write loses one item, not the warm restart."""
        if self._closed:
            return
        self._closed = True
        if self._hot is not None:
            self._hot.closed = True          # from now on every call takes the Python path
        failed: list[tuple[bytes, BaseException]] = []
        errors: list[tuple[str, BaseException]] = []     # (what it cost, the error)
        done: list[str] = []                              # what went through all the same
        try:
            items = list(self.dram.drain())
            self._demote(items, self._order.ticket(), failed=failed)
            if failed:
                errors.append((f"{len(failed)} of {len(items)} DRAM items could not be written to flash and are "
                               f"lost (the first: key {_show(failed[0][0])})", failed[0][1]))
                done.append("the other DRAM items were written")
            try:
                saved = self.navy.close()
                log.info("cache on %s closed: %s", self.device.path, saved)
                done.append(f"warm-restart metadata: {saved}")
            except Exception as e:
                errors.append(("the warm-restart metadata could not be saved: the next start is cold", e))
        finally:
            self.metrics.close()
            if self._own_device:
                try:
                    self.device.close()
                    done.append("the device was closed")
                except Exception as e:
                    errors.append(("the device did not close cleanly", e))
        if errors:
            first = errors[0][1]
            for what, e in errors:
                first.add_note(f"flashcache: Cache.close(): {what}"
                               + ("" if e is first else f" ({type(e).__name__}: {e})"))
            if done:
                first.add_note("flashcache: Cache.close() went on past the error: " + "; ".join(done))
            raise first

    def __enter__(self) -> "Cache":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<flashcache.Cache on {self.device.path} ({'closed' if self._closed else self.navy.start})>"


def many_keys(keys: Iterable[Any]) -> list:
    """get_many's keys as a list. The result is {key: value} with the keys as given, so a
    bytearray or memoryview (not hashable, or not reliably) is refused with a clear error."""
    given = list(keys)
    for k in given:
        if isinstance(k, (bytearray, memoryview)):
            raise TypeError(f"flashcache: get_many returns {{key: value}} with the keys as given, and a "
                            f"{type(k).__name__} cannot be a dict key: pass bytes or str")
    return given


def _check_u64(op: str, what: str, n: Any) -> None:
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"flashcache: {op}: {what} must be an int, not {type(n).__name__}")
    if not 0 <= n < _U64:
        raise ValueError(f"flashcache: {op}: {what} = {_show(n)}: use an int from 0 to 2**64 - 1"
                         + ("; use decr to subtract" if op == "incr" and n < 0 else ""))


def _show(x: Any, limit: int = 40) -> str:
    r = repr(x)
    return r if len(r) <= limit else r[:limit] + "..."


def _too_long(ttl: float, now: float) -> str:
    """Why ``ttl`` (seconds from ``now``) is out of range, and what to do."""
    if ttl == float("inf"):
        return "use 0 for an item that never expires"
    return (f"at most {max(0, int(MAX_EXPIRY - now))} seconds from now: the flash engines keep the absolute "
            "expiry as whole seconds below 2**32 (early 2106 on the wall clock). ttl is relative seconds, "
            "never an absolute time; use 0 for an item that never expires")


def blockcache_options(f: "config_mod.FlashConfig") -> dict[str, Any]:
    """BlockCache's keyword arguments from [cache.flash]."""
    return {"eviction": f.eviction, "reinsertion_hits": f.reinsertion_hits,
            "reinsertion_percent": f.reinsertion_percent, "trim_on_reclaim": f.trim_on_reclaim}


def open(config: "config_mod.Config | str | Path | None" = None, **kw: Any) -> Cache:  # noqa: A001
    """``flashcache.open("config/default.toml")`` -> a Cache (see ``Cache``); ``config`` may
    also be a dict shaped like the TOML file, a ``Config``, or nothing for the defaults."""
    return Cache(config, **kw)
