"""flashcache.AsyncCache: the Cache API with ``await``, flash reads completed by io_uring
on the running asyncio loop.

Owns the event-loop side only: it wraps a ``Cache`` (same config, tiers, stats) and
drives the flash lookups of its request core (``cache.core``, flashcache/core.py: the same
get steps, counters and latency samples as ``Cache.get``) itself. Every ``get`` that
misses DRAM parks its lookup (an engine generator); once per loop iteration all parked
lookups advance together and their reads go to the device's async reader in one
submission; the reader's eventfd wakes the loop when completions arrive
(``loop.add_reader``), with no thread per request. Where a read is a copy from memory
(the emulated SSD: ``cache.async_reads = "auto"``, or ``"inline"`` by choice) a lookup
runs at once on the loop instead, through the core's blocking (C) get: the same steps,
without a submission, a wake-up and a loop round trip per read. The surprise:
``set``/``delete`` are not awaited on I/O: they complete on the loop thread at once (a
DRAM write plus short flash writes of evicted items), which also keeps every engine
mutation serial, as the engines require; so do the read-modify-writes (``add``, ``incr``,
``decr``, ``pop``: ``Cache``'s, whose flash read under the key's lock is synchronous) and
``clear``.
"""
from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import time
from collections import deque
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from engines.device import Read, Trim, Write

from . import config as config_mod
from . import memoize as memoize_mod
from .cache import Cache, many_keys
from .core import MISSING

log = logging.getLogger("flashcache.async")
_now = time.perf_counter


class AsyncCache:
    """``Cache`` for asyncio (see the module docstring)::

        async with flashcache.AsyncCache("config/default.toml") as cache:
            await cache.set("k", b"v")
            await cache.get("k")

    Concurrent ``get``s from many tasks coalesce into batched submissions. Without an
    async-capable device (a psync file, NVMe passthrough for now) lookups still coalesce
    but their reads run synchronously on the loop. With inline reads (``inline``: why, or
    None) each lookup runs at once. ``stats()["async_io"]`` says which.

    The API is ``Cache``'s with ``await``: ``get``, ``get_many``, ``set``, ``set_many``,
    ``delete``, ``touch``, ``add``, ``incr``, ``decr``, ``pop``, ``clear``, ``memoize``
    (for ``async def`` functions), ``close``; ``stats()`` and ``len()`` are plain calls.
    ``key in cache`` cannot await a flash read: use ``await cache.contains(key)``.
    """

    def __init__(self, config: "config_mod.Config | str | Path | None" = None, **kw: Any):
        self.cache = Cache(config, **kw)
        self.core = self.cache.core               # the request core it drives (flashcache/core.py)
        self._reader = None
        self._reader_error: str | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._parked: deque = deque()             # (op, future, pending request result)
        self._kick_scheduled = False
        self._waiting: dict[int, tuple[Any, asyncio.Future]] = {}   # token -> (op, future)
        self._backlog: deque = deque()            # (op, future, Read) waiting for ring room
        self.batches = 0
        self.batched_reads = 0
        mode = self.cache.config.cache.async_reads
        dev = self.cache.device
        self.inline: str | None = ('cache.async_reads = "inline"' if mode == "inline" else
                                   dev.inline_read_reason() if mode == "auto" else None)
        """Why flash lookups run at once on the loop (a blocking read), or None: they are
        submitted to the device's ring and completed on the loop."""

    # -- the loop side ---------------------------------------------------------------------
    def _bind(self) -> asyncio.AbstractEventLoop:
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._loop = loop
            reason = self.cache.device.async_unavailable_reason()
            if self.inline is not None:
                log.info("%s: flash reads inline on the loop (%s)", self.cache.device.path, self.inline)
            elif reason is None:
                try:
                    self._reader = self.cache.device.async_reader()
                except Exception as e:            # noqa: BLE001 - reported, then synchronous
                    self._reader_error = f"async reader failed: {e}"
                    log.warning("%s: %s; flash reads run synchronously on the loop", self.cache.device.path,
                                self._reader_error)
                else:
                    loop.add_reader(self._reader.eventfd, self._on_completions)
            else:
                self._reader_error = reason
                log.warning("%s: %s", self.cache.device.path, reason)
        elif loop is not self._loop:
            raise RuntimeError("flashcache.AsyncCache is bound to the event loop that first used it")
        return loop

    def _lookup(self, key: bytes) -> "asyncio.Future":
        loop = self._bind()
        fut = loop.create_future()
        if self.inline is not None:
            try:
                fut.set_result(self.core.lookup_now(key))
            except Exception as e:              # noqa: BLE001 - goes to the awaiting task
                fut.set_exception(e)
            return fut
        self._parked.append((self.core.lookup(key), fut, None))
        if not self._kick_scheduled:
            self._kick_scheduled = True
            loop.call_soon(self._kick)
        return fut

    def _advance(self, op, fut, send: Any, reads: list) -> None:
        """Run ``op`` until it needs a read (collected into ``reads``) or finishes."""
        dev = self.cache.device
        try:
            while True:
                if isinstance(send, BaseException):
                    req = op.throw(send)
                else:
                    req = op.send(send)
                if isinstance(req, Read):
                    reads.append((op, fut, req))
                    return
                if isinstance(req, Write):        # lookups do not write; be correct if one does
                    dev.write(req.offset, req.data, req.stream)
                elif isinstance(req, Trim):
                    dev.trim(req.offset, req.length)
                send = None
        except StopIteration as stop:
            if not fut.done():
                fut.set_result(stop.value)
        except BaseException as e:               # noqa: BLE001 - goes to the awaiting task
            if not fut.done():
                fut.set_exception(e)

    def _kick(self) -> None:
        self._kick_scheduled = False
        reads: list = []
        while self._parked:
            op, fut, send = self._parked.popleft()
            self._advance(op, fut, send, reads)
        self._submit(reads)

    def _submit(self, reads: list) -> None:
        self._backlog.extend(reads)
        if not self._backlog:
            return
        if self._reader is None:
            # no ring: one synchronous batched read per round, still coalesced
            while self._backlog:
                batch = list(self._backlog)
                self._backlog.clear()
                self.batches += 1
                self.batched_reads += len(batch)
                try:
                    got = self.cache.device.read_many([(r.offset, r.length) for _, _, r in batch])
                except BaseException as e:       # noqa: BLE001
                    got = [e] * len(batch)
                more: list = []
                for (op, fut, _), data in zip(batch, got):
                    self._advance(op, fut, data, more)
                self._backlog.extend(more)
            return
        limit = getattr(self._reader, "max_io", None)
        if limit is not None and any(r.length > limit for _, _, r in self._backlog):
            # larger than one passthrough command: read those synchronously (the device splits)
            keep: deque = deque()
            more: list = []
            for op, fut, r in self._backlog:
                if r.length <= limit:
                    keep.append((op, fut, r))
                    continue
                try:
                    data: Any = self.cache.device.read(r.offset, r.length)
                except BaseException as e:       # noqa: BLE001 - goes to that lookup only
                    data = e
                self._advance(op, fut, data, more)
            self._backlog = keep
            self._backlog.extend(more)
            if more:
                return self._submit([])
        n = min(self._reader.free, len(self._backlog))
        if not n:
            return
        batch = [self._backlog.popleft() for _ in range(n)]
        try:
            tokens = self._reader.submit([(r.offset, r.length) for _, _, r in batch])
        except BaseException as e:               # noqa: BLE001 - a bad request fails its lookups only
            for op, fut, _ in batch:
                self._advance(op, fut, e, [])
            return
        self.batches += 1
        self.batched_reads += n
        for tok, (op, fut, _) in zip(tokens, batch):
            self._waiting[tok] = (op, fut)

    def _on_completions(self) -> None:
        reads: list = []
        for tok, data in self._reader.reap():
            op, fut = self._waiting.pop(tok)
            self._advance(op, fut, data, reads)
        self._submit(reads)

    # -- the API -----------------------------------------------------------------------------
    async def get(self, key: Any, default: Any = None) -> Any:
        """The value for ``key``, or ``default``; a DRAM miss awaits the flash lookup.
        Counted and timed as ``Cache.get`` (the core's steps; the wait on the loop included)."""
        self._bind()
        if self.inline is not None:
            return self.cache.get(key, default)   # RequestCore.get (its C form): the same steps, blocking
        core = self.core
        core.check_open("get")
        t0 = _now()
        k = core.key(key)
        v, ticket = core.get_step(k, t0)
        if v is None:
            v = core.finish_get(k, await self._lookup(k), ticket, t0)
            if v is None:
                return default
        return core.decode(v)

    async def get_many(self, keys: Iterable[Any]) -> dict[Any, Any]:
        """{key: value} for the keys held; all flash lookups in one submission."""
        keys = many_keys(keys)
        if self.inline is not None:
            self._bind()
            get = self.cache.get
            return {k: v for k in keys if (v := get(k, MISSING)) is not MISSING}
        vals = await asyncio.gather(*(self.get(k, MISSING) for k in keys))
        return {k: v for k, v in zip(keys, vals) if v is not MISSING}

    async def contains(self, key: Any) -> bool:
        """Whether ``key`` is held (awaits a flash lookup on a DRAM miss; a hit is promoted)."""
        return (await self.get(key, MISSING)) is not MISSING

    async def set(self, key: Any, value: Any, ttl: float | None = None) -> None:
        """``Cache.set``: completes on the loop thread at once (DRAM, plus short flash writes of evicted items)."""
        self._bind()
        self.cache.set(key, value, ttl)

    async def set_many(self, mapping: Mapping[Any, Any], ttl: float | None = None) -> None:
        """``set`` each item of ``mapping`` with the same ``ttl``."""
        self._bind()
        self.cache.set_many(mapping, ttl)

    async def delete(self, key: Any) -> bool:
        """Remove ``key`` from every tier; True if it was held."""
        self._bind()
        return self.cache.delete(key)

    async def touch(self, key: Any, ttl: float | None) -> bool:
        """Give ``key`` a new time to live; False if it is not held (a flash item is looked up asynchronously)."""
        self._bind()
        core = self.core
        core.check_open("touch")
        k = core.key(key)
        exp = core.expiry(ttl)
        ticket = core.ticket()
        item = await self._lookup(k) if core.dram.peek_expiry(k) is None else MISSING
        return core.touch(k, exp, item, ticket)

    async def add(self, key: Any, value: Any, ttl: float | None = None) -> bool:
        """``Cache.add``: store only if the key holds nothing; True if stored (runs on the loop)."""
        self._bind()
        return self.cache.add(key, value, ttl)

    async def incr(self, key: Any, delta: int = 1, default: int | None = None) -> int:
        """``Cache.incr``: memcached's incr, atomic (runs on the loop)."""
        self._bind()
        return self.cache.incr(key, delta, default)

    async def decr(self, key: Any, delta: int = 1, default: int | None = None) -> int:
        """``Cache.decr``: memcached's decr, stopping at 0, atomic (runs on the loop)."""
        self._bind()
        return self.cache.decr(key, delta, default)

    async def pop(self, key: Any, default: Any = MISSING) -> Any:
        """``Cache.pop``: remove and return the value; ``default``, else KeyError (runs on the loop)."""
        self._bind()
        return self.cache.pop(key, default)

    async def clear(self) -> None:
        """``Cache.clear``: drop every item from DRAM and flash. A get awaiting its flash
        read across the clear may still return what it read (it began before)."""
        self._bind()
        self.cache.clear()

    def __len__(self) -> int:
        """``len(Cache)``: approximate (see ``Cache.__len__``)."""
        return len(self.cache)

    def __bool__(self) -> bool:
        """Always true, as ``Cache``."""
        return True

    def __contains__(self, key: Any) -> bool:
        raise TypeError("flashcache.AsyncCache: `key in cache` cannot await a flash read; "
                        "use `await cache.contains(key)`")

    def memoize(self, ttl: float | None = None, key: Callable[..., Any] | None = None,
                typed: bool = False) -> Callable[[Callable], Callable]:
        """``Cache.memoize`` for ``async def`` functions (same arguments, same keys): the
        wrapper awaits the cache's get, then on a miss the function, then sets."""
        self.cache.memoize(ttl, key, typed)      # the same checks of the arguments

        def decorate(fn: Callable) -> Callable:
            if not inspect.iscoroutinefunction(fn):
                raise TypeError(f"flashcache AsyncCache.memoize: {getattr(fn, '__qualname__', fn)!r} is not an "
                                "async def function; use Cache.memoize (or AsyncCache.cache.memoize) for plain ones")
            cache_key = memoize_mod.key_function(fn, key, typed)

            @functools.wraps(fn)
            async def memoized(*args: Any, **kwargs: Any) -> Any:
                k = cache_key(*args, **kwargs)
                v = await self.get(k, MISSING)
                if v is MISSING:
                    v = await fn(*args, **kwargs)
                    memoize_mod.check_result(self.cache.codec, fn, v)
                    await self.set(k, v, ttl)
                return v
            memoized.cache_key = cache_key
            return memoized
        return decorate

    def stats(self) -> dict[str, Any]:
        """``Cache.stats()`` plus ``async_io``: "io_uring eventfd", "inline: <why>" or why reads
        are synchronous, and how many read batches were submitted."""
        st = self.cache.stats()
        st["async_io"] = {"mode": f"inline: {self.inline}" if self.inline is not None else
                          "io_uring eventfd" if self._reader is not None else
                          f"synchronous: {self._reader_error or self.cache.device.async_unavailable_reason()}",
                          "batches": self.batches, "reads": self.batched_reads}
        return st

    async def aclose(self) -> None:
        """Wait for reads in flight, then close the cache (warm-restart metadata)."""
        while self._waiting or self._parked or self._backlog:
            await asyncio.sleep(0.001)
        if self._reader is not None:
            if self._loop is not None:
                self._loop.remove_reader(self._reader.eventfd)
            self._reader.close()
            self._reader = None
        self.cache.close()

    async def close(self) -> None:
        """``aclose()`` under ``Cache.close``'s name: ``await cache.close()``."""
        await self.aclose()

    async def __aenter__(self) -> "AsyncCache":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()
