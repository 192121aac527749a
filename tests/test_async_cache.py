"""AsyncCache: the same API with await; flash reads completed via the ring's eventfd, and
concurrent gets coalesced into batched submissions."""
from __future__ import annotations

import asyncio

import pytest

from flashcache.async_cache import AsyncCache
from tests.test_cache import cfg


def run(coro):
    return asyncio.run(coro)


def test_basic_api(tmp_path):
    async def main():
        async with AsyncCache(cfg(tmp_path)) as c:
            await c.set("k", b"v", ttl=100)
            assert await c.get("k") == b"v"
            assert await c.get("nope", 3) == 3
            assert await c.contains("k") and not await c.contains("nope")
            await c.set_many({"a": b"1", "b": b"2"})
            assert await c.get_many(["a", "b", "c"]) == {"a": b"1", "b": b"2"}
            assert await c.delete("a") and await c.get("a") is None
            assert await c.touch("b", 50)
            assert c.stats()["async_io"]["mode"] == "io_uring eventfd"
    run(main())


def test_a_thousand_concurrent_tasks_coalesce_their_flash_reads(tmp_path):
    async def main():
        async with AsyncCache(cfg(tmp_path, dram="64KiB")) as c:
            vals = {b"key%d" % i: bytes([i % 256]) * (200 if i % 4 else 6000) for i in range(1000)}
            await c.set_many(vals)                          # most of them end up on flash
            assert c.cache.stats()["since_open"]["demotions"] > 500

            async def one(k):
                return k, await c.get(k)

            got = dict(await asyncio.gather(*(one(k) for k in vals)))
            st = c.stats()
            flash_hits = st["since_open"]["hits"]["flash"]
            assert flash_hits > 500
            assert all(got[k] in (vals[k], None) for k in vals)
            assert sum(got[k] == vals[k] for k in vals) > 900  # evicted from flash is the only excuse
            a = st["async_io"]
            assert a["mode"] == "io_uring eventfd"
            # hits in BlockCache's DRAM buffer need no read; the rest were read in few batches
            assert a["reads"] > 500 and a["batches"] < a["reads"] / 10
    run(main())


def test_ttl_with_async_lookups(tmp_path):
    from tests.clock import FakeClock
    clock = FakeClock()

    async def main():
        async with AsyncCache(cfg(tmp_path, dram="64KiB"), clock=clock) as c:
            await c.set("t", b"x" * 300, ttl=10)
            await c.set_many({b"f%d" % i: b"y" * 300 for i in range(400)})
            assert await c.get("t") == b"x" * 300
            await c.set_many({b"g%d" % i: b"y" * 300 for i in range(400)})
            clock.t += 11
            assert await c.get("t") is None
    run(main())


def test_a_device_without_a_ring_says_reads_are_synchronous(tmp_path):
    async def main():
        async with AsyncCache(cfg(tmp_path, kind="file", device_extra='engine = "psync"', dram="64KiB")) as c:
            await c.set_many({b"k%d" % i: b"v" * 300 for i in range(300)})
            got = await asyncio.gather(*(c.get(b"k%d" % i) for i in range(300)))
            assert sum(g == b"v" * 300 for g in got) > 250
            mode = c.stats()["async_io"]["mode"]
            assert mode.startswith("synchronous: file device (psync) has no io_uring ring")
    run(main())


def test_bound_to_one_loop(tmp_path):
    c = AsyncCache(cfg(tmp_path))
    run(c.set("k", b"v"))
    with pytest.raises(RuntimeError, match="bound to the event loop that first used it"):
        run(c.get("k"))
    c.cache.close()
