"""flashcache.Cache: the DRAM item tier in front of the flash engines, with TTL, metrics
and WAF reporting.

Owns the public API (get/set/delete/touch/get_many/set_many, the dict forms, add/incr/
decr/pop/clear, memoize, stats/close), key, value and TTL checking, the optional codecs
(msgpack, pickle), promotion (flash hit -> DRAM) and demotion (DRAM eviction -> flash
through admission), and the device WAF windows. It composes a device
(flashcache.devices), the Navy router (engines.navy) and the DRAM tier (dram.py). The
surprise: a ``set`` removes any older copy of the key from flash at once (a DRAM-only
write must never let a stale flash copy come back after a rejected demotion or a crash),
and a promoted item stays on flash too, so evicting it again costs no write, unless
flash has evicted its copy since: then the eviction writes it back (CacheLib's rule). A Cache a
forked child inherited refuses use there (ForkedError); its close() does nothing.

Threads (``KeyOrder``, flashcache/_dram.c). DRAM evicts an item inside one thread's call,
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
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from prometheus_client import CollectorRegistry

from engines import admission as admission_mod
from engines.device import MAX_EXPIRY, run_many
from engines.navy import Navy

from . import config as config_mod
from . import forksafe
from . import stats as stats_mod
from . import memoize as memoize_mod
from .devices import open_device
from .devices.base import WafUnavailableError
from .core import MISSING as _MISSING, Raise, RequestCore, show, too_long
from .dram import DramTier
from .metrics import CacheMetrics

log = logging.getLogger("flashcache.cache")
_now = time.perf_counter

CODECS = (None, "msgpack", "pickle")
_U64 = 1 << 64          # incr/decr: memcached's counters are unsigned 64-bit
# Bind get/set to the C accelerator of the request core (flashcache/_core.c) when the
# cache can use it; tests turn it off to run the Python methods as the reference.
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

    def __init__(self, config: "config_mod.Config | str | Path | None" = None, *, device: Any = None,
                 codec: str | None = None, registry: CollectorRegistry | None = None, name: str = "default",
                 clock: Callable[[], float] = time.time):
        if codec not in CODECS:
            raise ValueError(f'flashcache.Cache: codec = {codec!r}: use None (bytes values), "msgpack", or "pickle" '
                             "(trusted data only: loading a pickle runs code)")
        cfg = _as_config(config)
        if cfg.cache.default_ttl > MAX_EXPIRY - clock():
            raise config_mod.ConfigError(f"{cfg.source}: cache.default_ttl = {cfg.cache.default_ttl:g}: "
                                         + too_long(cfg.cache.default_ttl, clock()))
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
                             split_waf_limit=f.split_waf_limit, split_every=f.split_every,
                             blockcache_options=blockcache_options(f, durable=bool(c.write_through)))
            if self.navy.start.startswith("formatted") and hasattr(self.device, "deallocate_unused"):
                # the share of the device the cache leaves (device.utilization) is spare
                # only if the drive holds nothing there: deallocate it once, now
                freed = self.device.deallocate_unused()
                if freed:
                    log.info("%s: deallocated the %d bytes past the cache's %d (device.utilization = %g)",
                             self.device.path, freed, self.device.size, cfg.device.utilization)
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
        self.write_through = c.write_through          # False, True or "sync"
        # every request's decisions (DRAM, flash, promotion, demotion, TTL, counting,
        # latency): flashcache/core.py; this class is the API in front of it
        self.core = RequestCore(dram=self.dram, navy=self.navy, device=self.device, clock=clock, get_hist=None,
                                set_hist=None, codec=codec, max_key_size=self.max_key_size,
                                default_ttl=self.default_ttl, write_through=bool(self.write_through),
                                sync=self.write_through == "sync")
        # since-open figures of the engines' lifetime counters are their growth since now
        self._opened_at = clock()
        self._lifetime_at_open = stats_mod.flash_lifetime(self.navy.stats())
        self._waf_lock = threading.Lock()
        self._waf_window = c.waf_window
        self._waf_samples: deque = deque()
        self._waf_reason = self.device.waf_unavailable_reason()
        self._waf_open = self._waf_snapshot()
        if self._waf_open is not None:
            self._waf_samples.append((time.monotonic(), self._waf_open))
        self.metrics = CacheMetrics(self.stats, registry, name)
        self.core.get_hist, self.core.set_hist = self.metrics.get_seconds, self.metrics.set_seconds
        # get and set in one C call each for the common case: the core's accelerator (it
        # hands everything else to the Python methods below)
        if HOT_PATH and self.core.accelerate(Cache.get.__get__(self), Cache.set.__get__(self)) is not None:
            self.get = self.core.hot.get
            if self.core.hot.sets:           # else (write-through, a default TTL) sets stay Python's
                self.set = self.core.hot.set
        log.info("cache on %s: %s; DRAM %d MiB; placement %s", self.device.path, self.navy.start,
                 c.dram_size >> 20, {k: v["state"] for k, v in self._placement().items()})
        self._pid = forksafe.track(self)

    def _inherited(self) -> None:
        """In a forked child (flashcache.forksafe): every call raises ForkedError (as a
        closed cache's raises ClosedError, through the same checks) and close() does
        nothing: no demotion, no metadata, no device I/O; the flash is the parent's."""
        self.core.forked_pid = self._pid
        self._close_core()

    def _close_core(self) -> None:
        self.core.closed = True
        if self.core.hot is not None:
            self.core.hot.closed = True      # every get/set takes the Python path, which checks

    @property
    def max_value_size(self) -> int:
        """Largest value (with the shortest key) that flash can hold."""
        return self.navy.max_item_size - 1

    # -- the API ----------------------------------------------------------------------------
    # Each method checks its arguments and hands the request to the core (flashcache/core.py),
    # which decides it; get_many drives the core's flash lookups as one batch.

    def get(self, key: Any, default: Any = None) -> Any:
        """The value for ``key``, or ``default``. Expired items are never returned."""
        core = self.core
        if core.closed:
            core.check_open("get")
        t0 = _now()
        v = core.get(core.key(key), t0)
        if v is None:
            return default
        return v if self.codec is None else core.decode(v)

    def __contains__(self, key: Any) -> bool:
        """Whether ``key`` is held (counts as a get; a flash hit is promoted)."""
        return self.get(key, _MISSING) is not _MISSING

    def set(self, key: Any, value: Any, ttl: float | None = None) -> None:
        """Store ``value`` under ``key`` for ``ttl`` seconds (None: the default TTL, 0: no
        expiry). DRAM first; flash when DRAM evicts it (or at once with write_through)."""
        core = self.core
        if core.closed:
            core.check_open("set")
        t0 = _now()
        k, v, exp = core.item(key, value, ttl)
        core.set(k, v, exp, t0)

    def delete(self, key: Any) -> bool:
        """Remove ``key`` from every tier; True if it was held."""
        self.core.check_open("delete")
        return self.core.delete(self.core.key(key))

    def touch(self, key: Any, ttl: float | None) -> bool:
        """Give ``key`` a new time to live; False if it is not held."""
        core = self.core
        core.check_open("touch")
        k = core.key(key)
        return core.touch(k, core.expiry(ttl))

    def get_many(self, keys: Iterable[Any]) -> dict[Any, Any]:
        """The values of the keys that are held, as {key: value} (keys as given). All flash
        lookups of one call go to the device together: one submission per round. Counted
        and timed per key, as ``get``."""
        core = self.core
        core.check_open("get_many")
        given = list(keys)
        checked = [(orig, core.key(orig)) for orig in given]     # every key, before any is read
        many_keys(given)
        out: dict[Any, Any] = {}
        missing: list[tuple[Any, bytes, int, float]] = []
        for orig, k in checked:
            t0 = _now()
            v, ticket = core.get_step(k, t0)
            if v is not None:
                out[orig] = core.decode(v)
            else:
                missing.append((orig, k, ticket, t0))
        if missing:
            items = run_many([core.lookup(k) for _, k, _, _ in missing], self.device)
            for (orig, k, ticket, t0), item in zip(missing, items):
                v = core.finish_get(k, item, ticket, t0)
                if v is not None:
                    out[orig] = core.decode(v)
        return out

    def set_many(self, mapping: Mapping[Any, Any], ttl: float | None = None) -> None:
        """``set`` each item of ``mapping`` with the same ``ttl``. Every item is checked
        first: a bad key, value or ttl raises before any item is stored."""
        core = self.core
        core.check_open("set_many")
        for item in [core.item(k, v, ttl) for k, v in mapping.items()]:
            core.set(*item, _now())

    # -- the dict forms and read-modify-write -------------------------------------------------
    # Each read-modify-write runs as one ``core.change`` step: under the key's lock, the read
    # (DRAM, else flash: ``core.held``) and the write cannot interleave with any other change
    # of the key.

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

    def add(self, key: Any, value: Any, ttl: float | None = None) -> bool:
        """Store ``value`` under ``key`` only if the key holds no live item; True if stored.
        Atomic: of many threads adding one new key, exactly one gets True."""
        core = self.core
        core.check_open("add")
        k, v, exp = core.item(key, value, ttl)

        def step() -> tuple[bool, list | None, int | None]:
            if core.held(k) is not None:
                return False, None, None
            return (True,) + core.set_step(k, v, exp)[1:]
        added = core.change(k, step)
        if added:
            core.count(sets=1, item_bytes_set=len(k) + len(v))
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
        core = self.core
        core.check_open(op)
        k = core.key(key)
        _check_u64(op, "delta", delta)
        if default is not None:
            _check_u64(op, "default", default)
        exp_new = core.expiry(None) if default is not None else 0.0

        def step() -> tuple[Any, list | None, int | None]:
            item = core.held(k)
            if item is None:
                if default is None:
                    return Raise(KeyError(key)), None, None
                n, exp = default, exp_new
            else:
                try:
                    n, exp = self._counter(key, item[0]), item[1]
                except ValueError as e:
                    return Raise(e), None, None
            n = (n + delta) % _U64 if op == "incr" else max(n - delta, 0)
            v = b"%d" % n if self.codec is None else core.encode(n)
            core.count(sets=1, item_bytes_set=len(k) + len(v))
            return (n,) + core.set_step(k, v, exp)[1:]
        return core.change(k, step)

    def _counter(self, key: Any, raw: bytes) -> int:
        """The counter a stored value holds (incr/decr); ValueError if it holds none."""
        if self.codec is None:
            if raw.isdigit() and len(raw) <= 20 and int(raw) < _U64:
                return int(raw)
            what = f"{show(raw[:24])} is not"
        else:
            n = self.core.decode(raw)
            if type(n) is int and 0 <= n < _U64:
                return n
            what = f"{show(n)} ({type(n).__name__}) is not"
        raise ValueError(f"flashcache: incr/decr of {show(key)}: its value {what} an unsigned 64-bit integer; "
                         + ('store counters as ASCII digits, like b"0"' if self.codec is None else
                            "store counters as ints from 0 to 2**64 - 1"))

    def pop(self, key: Any, default: Any = _MISSING) -> Any:
        """Remove ``key`` and return its value, atomically (of threads popping one key, one
        gets the value); ``default`` if it held nothing, else KeyError."""
        core = self.core
        core.check_open("pop")
        k = core.key(key)
        core.count(deletes=1)

        def step() -> tuple[Any, None, int]:
            item = core.held(k)
            core.delete_step(k)
            return item, None, 0
        item = core.change(k, step)
        if item is None:
            if default is _MISSING:
                raise KeyError(key)
            return default
        return core.decode(item[0])

    def clear(self) -> None:
        """Drop every item, from DRAM and from flash (both engines start a new generation:
        no I/O but the superblock). Every value set before ``clear`` began is gone once it
        returns; a set made while it runs may survive it or not."""
        self.core.check_open("clear")
        self.core.clear()

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
        self.core.expiry(ttl)                    # a bad ttl fails here, not at every call
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

    def _recovery(self, fl: dict[str, Any]) -> dict[str, Any]:
        return _recovery_figures(fl, self.navy.recovery)

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
             "bytes": {"dram": 40960, "flash": None}, "write_through": False,
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
        c = self.core.counts()
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
            "recovery": self._recovery(fl),
            "placement": self._placement(),
            "items": {"dram": dr["items"], "flash": flash_items, "flash_exact": exact},
            "bytes": {"dram": dr["bytes"], "flash": None},
            "write_through": self.write_through,
            "since_open": {
                "seconds": self._clock() - self._opened_at,
                "gets": c["gets"], "sets": c["sets"], "deletes": c["deletes"], "touches": c["touches"],
                "misses": c["misses"], "hits": {"dram": c["hits_dram"], "flash": c["hits_flash"]},
                "hit_ratio": hits / c["gets"] if c["gets"] else None,
                "promotions": c["promotions"], "demotions": c["demotions"],
                "demotions_skipped_clean": c["demotions_skipped_clean"],
                "demotions_written_back": c["demotions_written_back"],
                "demotions_raced": c["demotions_raced"], "promotions_raced": c["promotions_raced"],
                "syncs": c["syncs"], "item_bytes_set": c["item_bytes_set"],
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
        if self.core.closed:
            return
        self._close_core()                   # from now on every call takes the Python path, which refuses
        failed: list[tuple[bytes, BaseException]] = []
        errors: list[tuple[str, BaseException]] = []     # (what it cost, the error)
        done: list[str] = []                              # what went through all the same
        try:
            items = list(self.dram.drain())
            self.core.demote(items, self.core.ticket(), failed=failed)
            if failed:
                errors.append((f"{len(failed)} of {len(items)} DRAM items could not be written to flash and are "
                               f"lost (the first: key {show(failed[0][0])})", failed[0][1]))
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
        return f"<flashcache.Cache on {self.device.path} ({'closed' if self.core.closed else self.navy.start})>"


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
        raise ValueError(f"flashcache: {op}: {what} = {show(n)}: use an int from 0 to 2**64 - 1"
                         + ("; use decr to subtract" if op == "incr" and n < 0 else ""))


def _recovery_figures(navy_stats: dict[str, Any], recovery: dict[str, Any] | None) -> dict[str, Any]:
    r = recovery or {}
    ck = navy_stats.get("checkpoint") or {}
    return {"crash": recovery is not None, "bytes_read": r.get("bytes_read", 0), "seconds": r.get("seconds"),
            "regions_replayed": r.get("regions_replayed", 0), "entries_replayed": r.get("entries_replayed", 0),
            "checkpoints": ck.get("written", 0), "checkpoints_skipped": ck.get("skipped", 0)}


def blockcache_options(f: "config_mod.FlashConfig", durable: bool = False) -> dict[str, Any]:
    """BlockCache's keyword arguments from [cache.flash] (``durable``: cache.write_through)."""
    return {"eviction": f.eviction, "reinsertion_hits": f.reinsertion_hits,
            "reinsertion_percent": f.reinsertion_percent, "trim_on_reclaim": f.trim_on_reclaim,
            "checkpoint_regions": f.checkpoint_regions, "checkpoint_seconds": f.checkpoint_seconds,
            "durable": durable}


def open(config: "config_mod.Config | str | Path | None" = None, **kw: Any) -> Cache:  # noqa: A001
    """``flashcache.open("config/default.toml")`` -> a Cache (see ``Cache``); ``config`` may
    also be a dict shaped like the TOML file, a ``Config``, or nothing for the defaults."""
    return Cache(config, **kw)
