"""flashcache.Cache: the DRAM item tier in front of the flash engines, with TTL, metrics
and WAF reporting.

Owns the public API (get/set/delete/touch/get_many/set_many/stats/close), key and value
checking, the optional msgpack codec, promotion (flash hit -> DRAM) and demotion (DRAM
eviction -> flash through admission), and the device WAF windows. It composes a device
(flashcache.devices), the Navy router (engines.navy) and the DRAM tier (dram.py). The
surprise: a ``set`` removes any older copy of the key from flash at once (a DRAM-only
write must never let a stale flash copy come back after a rejected demotion or a crash),
and a promoted item stays on flash too, so evicting it again costs no write.

Threads (``KeyOrder``, flashcache/_hot.c). DRAM evicts an item inside one thread's call,
and that thread writes it to flash afterwards; a get that misses DRAM reads flash and may
promote what it read. Both steps are late copies of a key's value, and either could undo a
newer set or delete of the key made in between. The rule that prevents it, with one
counter of tickets, a stamp per key (slot) and a lock per key (slot):

* a set, delete or touch runs its DRAM and flash steps under the key's lock, then stamps
  the key with a fresh ticket;
* a demotion takes a ticket before the DRAM change that evicts the item, and writes the
  item to flash under the key's lock only if the key has no later stamp;
* a promotion takes a ticket before its flash lookup, and adds the item to DRAM only if
  it gets the key's lock at once and the key has no later stamp (else it skips: a get
  never waits for another thread's write).

Why that suffices. A demotion's write and any change of the key hold the same lock, so
one runs wholly before the other. A change before the write stamped the key after its own
DRAM step; if that stamp is later than the demotion's ticket the write is dropped, and if
it is earlier, the change happened before the eviction, so the evicted item is the newer
value. A change after the write removes flash's copy itself. Likewise a promotion adds
only what flash held after every change that completed before its lookup began. Hence
flash never holds a value older than the last completed change of its key, DRAM holds the
newest, and a get (DRAM, then flash) returns a miss or a value no older than the last set
or delete that completed before it began. Two keys sharing a slot can only cost a skipped
demotion or promotion (a later miss), never a wrong value; no path holds two key locks at
once (evictions are demoted after the change's own lock is let go), so none deadlocks.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import msgpack
from prometheus_client import CollectorRegistry

from engines import admission as admission_mod
from engines.device import run, run_many
from engines.navy import Navy

from . import config as config_mod
from .devices import open_device
from .devices.base import WafUnavailableError
from ._hot_c import HotPath, KeyOrder
from .dram import DramTier, Evicted
from .errors import ClosedError
from .metrics import CacheMetrics

log = logging.getLogger("flashcache.cache")
_now = time.perf_counter

_MISSING = object()
CODECS = (None, "msgpack")
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


class Cache:
    """A key-value cache: DRAM first, then flash (BigHash for small items, BlockCache for
    large ones) on the configured device.

    ::

        import flashcache
        with flashcache.open("config/default.toml") as cache:
            cache.set("user:42", b"...", ttl=300)
            cache.get("user:42")            # -> b"..."
            cache.stats()["hit_ratio"]

    ``config`` is the path of a TOML file (relative paths in it start at its folder), a dict
    shaped like that file (``{"device": {"path": "var/c.img"}, "cache": {"dram_size":
    "64MiB"}}``, validated the same way; relative paths start at the working directory), a
    ``flashcache.config.Config``, or None: the defaults, from the repo root the same cache
    as ``config/default.toml``. A bad config raises one ConfigError listing every problem
    (``.errors``).

    Keys are bytes or str (UTF-8); values are bytes-like, or any msgpack-able object with
    ``codec="msgpack"``. ``ttl`` is seconds (None: ``cache.default_ttl`` from the config,
    0: never expires). Thread-safe: the DRAM tier has its own short lock, BlockCache one
    lock per engine, BigHash a lock per bucket stripe; no lock is held across another
    engine's I/O. ``close()`` writes warm-restart metadata; use the context manager.
    """

    def __init__(self, config: "config_mod.Config | str | Path | None" = None, *, device: Any = None,
                 codec: str | None = None, registry: CollectorRegistry | None = None, name: str = "default",
                 clock: Callable[[], float] = time.time):
        if codec not in CODECS:
            raise ValueError(f'flashcache.Cache: codec = {codec!r}: use None (bytes values) or "msgpack"')
        cfg = _as_config(config)
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
        self.write_through = c.write_through
        self._counters = {"gets": 0, "sets": 0, "deletes": 0, "touches": 0, "misses": 0, "hits_dram": 0,
                          "hits_flash": 0, "item_bytes_set": 0, "demotions": 0, "demotions_skipped_clean": 0,
                          "promotions": 0, "demotions_raced": 0, "promotions_raced": 0}
        self._order = KeyOrder()    # one key's changes in order across DRAM and flash (module docstring)
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
        if isinstance(value, bytes):
            return value
        if isinstance(value, (bytearray, memoryview)):
            return bytes(value)
        raise TypeError(f"flashcache: a value must be bytes-like, not {type(value).__name__}; "
                        'open the cache with codec="msgpack" to store Python objects')

    def _decode(self, raw: bytes) -> Any:
        return msgpack.unpackb(raw, raw=False) if self.codec == "msgpack" else raw

    def _expiry(self, ttl: float | None) -> float:
        if ttl is None:
            ttl = self.default_ttl
        if isinstance(ttl, bool) or not isinstance(ttl, (int, float)):
            raise TypeError(f"flashcache: ttl must be a number of seconds or None, not {type(ttl).__name__}")
        if ttl < 0:
            raise ValueError(f"flashcache: ttl = {ttl}: use seconds >= 0 (0 = never expires)")
        return self._clock() + ttl if ttl else 0.0

    def _check_open(self, what: str) -> None:
        if self._closed:
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
        if self._hot is not None:
            for k, v in self._hot.counters().items():
                c[k] += v
        return c

    def _demote(self, evicted: Iterable[Evicted], ticket: int, mine: int = 0) -> None:
        """Write DRAM's evicted items to flash (through admission); ``ticket``: taken before
        the DRAM change that evicted them, ``mine``: that change's own stamp, if it was a
        set (KeyOrder.changed_since). An item whose key changed since is dropped."""
        c = self._counters
        order = self._order
        for e in evicted:
            if e.clean:
                c["demotions_skipped_clean"] += 1
                continue
            order.lock(e.key)
            try:
                if order.changed_since(e.key, ticket, mine):
                    c["demotions_raced"] += 1
                    continue
                c["demotions"] += 1
                self.navy.insert_now(self.device, e.key, e.value, e.expiry)
            finally:
                order.unlock(e.key)

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
        """Run ``step`` (a set, delete or touch of ``key``: its DRAM and flash parts) under
        the key's lock and stamp the key after it. A step returns (result, evicted,
        ticket): what DRAM evicted, with the ticket taken before that DRAM change, is
        demoted once the lock is let go."""
        order = self._order
        order.lock(key)
        try:
            result, out, ticket = step()
        finally:
            mine = order.stamp(key)   # even after an error: flash's copy may be gone
            order.unlock(key)
        if out:
            self._demote(out, ticket, mine)
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
        k = key if type(key) is bytes and 0 < len(key) <= self.max_key_size else self._key(key)
        v = value if type(value) is bytes and self.codec is None else self._encode(value)
        if len(k) + len(v) > self._fits_max:
            self._check_size(k, v)
        exp = self._expiry(ttl) if ttl is not None or self.default_ttl else 0.0
        c = self._counters
        c["sets"] += 1
        c["item_bytes_set"] += len(k) + len(v)
        self._change(k, lambda: self._set_step(k, v, exp))
        self._set_hist.observe(_now() - t0)

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

        def step() -> tuple[bool, None, int]:
            in_dram = self.dram.delete(k)
            on_flash = run(self.navy.remove(k), self.device) if self.navy.may_hold(k) else False
            return in_dram or on_flash, None, 0
        return self._change(k, step)

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
        expiry) goes; or a flash-resident item moves to DRAM, dirty, and flash's copy goes.
        ``looked_up``: flash's item as a lookup begun after ``ticket`` found it (AsyncCache),
        used if the key has not changed since; else flash is read here."""
        if self.dram.touch(k, exp):
            if self.navy.may_hold(k):
                run(self.navy.remove(k), self.device)
            return True, None, 0
        if looked_up is not _MISSING and not self._order.changed_since(k, ticket):
            item = looked_up
        else:
            item = self.navy.lookup_item_now(self.device, k)
        if item is None or (item[1] and item[1] <= self._clock()):
            return False, None, 0
        run(self.navy.remove(k), self.device)
        ticket = self._order.ticket()
        return True, self.dram.set(k, item[0], exp), ticket   # dirty: goes back to flash on eviction

    def get_many(self, keys: Iterable[Any]) -> dict[Any, Any]:
        """The values of the keys that are held, as {key: value} (keys as given). All flash
        lookups of one call go to the device together: one submission per round."""
        self._check_open("get_many")
        t0 = time.perf_counter()
        given = list(keys)
        out: dict[Any, Any] = {}
        missing: list[tuple[Any, bytes]] = []
        hits = 0
        for orig in given:
            k = self._key(orig)
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
        """``set`` each item of ``mapping`` with the same ``ttl``."""
        for k, v in mapping.items():
            self.set(k, v, ttl)

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
        if self._waf_reason is not None or self._waf_open is None:
            return {"status": f"unavailable: {self._waf_reason}", "window": None, "window_seconds": None,
                    "since_open": None}
        now = time.monotonic()
        snap = self._waf_snapshot()
        if snap is None:
            return {"status": f"unavailable: {self._waf_reason}", "window": None, "window_seconds": None,
                    "since_open": None}
        with self._waf_lock:
            s = self._waf_samples
            s.append((now, snap))
            # keep one sample at or before the window's start, so the window is covered
            while len(s) > 2 and s[1][0] <= now - self._waf_window:
                s.popleft()
            t_old, old = s[0]
        return {"status": "available", "window": snap.waf_since(old), "window_seconds": now - t_old,
                "since_open": snap.waf_since(self._waf_open), "hbmw": snap.hbmw, "mbmw": snap.mbmw,
                "mbe": snap.mbe}

    def _placement(self) -> dict[str, dict[str, Any]]:
        out = {}
        for name, s in self.navy.streams.items():
            out[name] = ({"state": "on", "pid": s.pid} if s.pid is not None else
                         {"state": "off", "reason": str(s.placement).removeprefix("off: ")})
        return out

    def stats(self) -> dict[str, Any]:
        """A plain dict:

        * ``gets``, ``sets``, ``deletes``, ``touches``, ``misses``; ``hits`` per tier
          (``dram``, ``flash``) and ``hit_ratio`` (None before any get);
        * ``items`` and ``bytes`` per tier (flash: None where an engine cannot count cheaply);
        * ``item_bytes_set`` (keys + values the application set), ``device_bytes_written``
          per engine and ``app_write_amplification`` (device bytes / item bytes set);
        * ``device_waf``: ``status`` ("available" or "unavailable: why"), ``window`` (over
          the last ``cache.waf_window`` seconds, ``window_seconds`` long), ``since_open``;
        * ``placement`` per engine: ``{"state": "on", "pid": n}`` or ``{"state": "off",
          "reason": why}``;
        * ``start`` (how the flash cache came up: warm, cold or formatted, and why), and
          ``dram``, ``flash`` and ``device``: each layer's own stats.
        """
        c = self._counts()
        fl = self.navy.stats()
        dr = self.dram.stats()
        hits = c["hits_dram"] + c["hits_flash"]
        written = {n: (fl[n]["device_bytes_written"] if fl.get(n) else 0) for n in ("bighash", "blockcache")}
        flash_items = fl["blockcache"].get("items") if fl.get("blockcache") else None
        total_written = sum(written.values())
        return {
            "gets": c["gets"], "sets": c["sets"], "deletes": c["deletes"], "touches": c["touches"],
            "hits": {"dram": c["hits_dram"], "flash": c["hits_flash"]}, "misses": c["misses"],
            "hit_ratio": hits / c["gets"] if c["gets"] else None,
            "items": {"dram": dr["items"], "flash": flash_items if not fl.get("bighash") else None},
            "bytes": {"dram": dr["bytes"], "flash": None},
            "item_bytes_set": c["item_bytes_set"],
            "device_bytes_written": written,
            "app_write_amplification": total_written / c["item_bytes_set"] if c["item_bytes_set"] else None,
            "device_waf": self._device_waf(),
            "placement": self._placement(),
            "promotions": c["promotions"], "demotions": c["demotions"],
            "demotions_skipped_clean": c["demotions_skipped_clean"],
            "start": self.navy.start,
            "dram": dr, "flash": fl, "device": self.device.stats(),
        }

    # -- lifecycle ----------------------------------------------------------------------------
    def close(self) -> None:
        """Write DRAM's items to flash (through admission), save warm-restart metadata and
        close the device (if the cache opened it). Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._hot is not None:
            self._hot.closed = True          # from now on every call takes the Python path
        try:
            ticket = self._order.ticket()
            self._demote(self.dram.drain(), ticket)
            saved = self.navy.close()
            log.info("cache on %s closed: %s", self.device.path, saved)
        finally:
            self.metrics.close()
            if self._own_device:
                self.device.close()

    def __enter__(self) -> "Cache":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<flashcache.Cache on {self.device.path} ({'closed' if self._closed else self.navy.start})>"


def blockcache_options(f: "config_mod.FlashConfig") -> dict[str, Any]:
    """BlockCache's keyword arguments from [cache.flash]."""
    return {"eviction": f.eviction, "reinsertion_hits": f.reinsertion_hits,
            "reinsertion_percent": f.reinsertion_percent, "trim_on_reclaim": f.trim_on_reclaim}


def open(config: "config_mod.Config | str | Path | None" = None, **kw: Any) -> Cache:  # noqa: A001
    """``flashcache.open("config/default.toml")`` -> a Cache (see ``Cache``); ``config`` may
    also be a dict shaped like the TOML file, a ``Config``, or nothing for the defaults."""
    return Cache(config, **kw)
