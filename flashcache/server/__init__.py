"""`flashcache serve`: the cache as a memcached-compatible server (text and meta protocol)
with a Prometheus endpoint.

Modules, one idea each: ``protocol`` (bytes in, requests out; no I/O), ``store`` (the one
adapter to ``flashcache.AsyncCache``: item format, CAS, expiry, per-key locks),
``handler`` (what each command does), ``server`` (asyncio connections, limits, signals),
``metrics`` (the /metrics endpoint). Only this package opens sockets. The common requests
(get/gets DRAM hits, plain sets) are answered by a C accelerator of that same path,
``TextPath`` (flashcache/_server.c; ``Store.text_path`` makes it, ``server.accelerate``
turns it off), tested against it by tests/server/test_fastpath.py.
"""
from __future__ import annotations

import asyncio
import logging
import os
from typing import Any, Callable

log = logging.getLogger("flashcache.server")


def event_loop_factory() -> "Callable[[], asyncio.AbstractEventLoop] | None":
    """uvloop's loop (a default dependency), else None (asyncio's default, with a warning:
    about a third slower under memaslap); FLASHCACHE_EVENT_LOOP=asyncio asks for asyncio's."""
    if os.environ.get("FLASHCACHE_EVENT_LOOP") == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        log.warning("uvloop is not installed (a dependency of flashcache): serving on asyncio's own loop, "
                    "which is slower; pip install uvloop")
        return None
    return uvloop.new_event_loop


def check_fits(cfg: Any, max_value_size: int) -> None:
    """server.item_size_max must fit the flash engines (with the longest key and the item header)."""
    from ..errors import ConfigError
    from .protocol import KEY_MAX
    if cfg.server.item_size_max + KEY_MAX > max_value_size:
        raise ConfigError(f"{cfg.source}: server.item_size_max = {cfg.server.item_size_max}: the flash engines "
                          f"take values up to {max_value_size - KEY_MAX} bytes with a {KEY_MAX}-byte key; lower "
                          "it or raise cache.flash.region_size")


async def run(cfg: Any, ready: "Callable[[Any], None] | None" = None, signals: bool = True) -> None:
    """Open the cache of ``cfg``, serve until SIGTERM/SIGINT, close the cache warm."""
    from ..async_cache import AsyncCache
    from .server import Server
    from .store import Store

    cache = AsyncCache(cfg)
    try:
        store = Store(cache)
        check_fits(cfg, store.max_value_size)
        srv = Server(store, cfg.server)
        await srv.start()
    except BaseException:
        await cache.aclose()
        raise
    if ready is not None:
        ready(srv)
    await srv.serve_until_stopped(signals)


def serve(cfg: Any, ready: "Callable[[Any], None] | None" = None) -> None:
    """Run the server on ``cfg`` in this thread until it is stopped (see ``run``)."""
    factory = event_loop_factory()
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(run(cfg, ready))
