"""AsyncCache: the same API with await; flash reads completed via the ring's eventfd, and
concurrent gets coalesced into batched submissions."""
from __future__ import annotations

import asyncio

import pytest

import flashcache

from flashcache.async_cache import AsyncCache
from tests.test_cache import cfg


def run(coro):
    return asyncio.run(coro)


RING = 'async_reads = "ring"'
MODES = {"ring": ('async_reads = "ring"', "io_uring eventfd"),
         "auto": ("", "inline: emulated SSD: a read is a copy from its backing file's page cache"),
         "inline": ('async_reads = "inline"', 'inline: cache.async_reads = "inline"')}


@pytest.mark.parametrize("mode", sorted(MODES))
def test_basic_api(tmp_path, mode):
    extra, want = MODES[mode]

    async def main():
        async with AsyncCache(cfg(tmp_path, cache_extra=extra)) as c:
            await c.set("k", b"v", ttl=100)
            assert await c.get("k") == b"v"
            assert await c.get("nope", 3) == 3
            assert await c.contains("k") and not await c.contains("nope")
            await c.set_many({"a": b"1", "b": b"2"})
            assert await c.get_many(["a", "b", "c"]) == {"a": b"1", "b": b"2"}
            assert await c.delete("a") and await c.get("a") is None
            assert await c.touch("b", 50)
            assert c.stats()["async_io"]["mode"] == want
    run(main())


def test_flash_hits_the_same_whether_read_inline_or_through_the_ring(tmp_path):
    """The same operations give the same answers and counters either way; inline reads
    (the emulated SSD's default, "auto") submit no batch, ring reads do."""
    vals = {b"key%d" % i: bytes([i % 256]) * (200 if i % 4 else 6000) for i in range(600)}

    async def main(mode):
        async with AsyncCache(cfg(tmp_path / mode, dram="64KiB", cache_extra=MODES[mode][0])) as c:
            await c.set_many(vals)
            got = [await c.get(k) for k in vals]
            one_by_one = {k: c.stats()["since_open"][k] for k in ("hits", "misses", "promotions", "demotions")}
            # get_many: the same values; which keys DRAM still holds may differ (the ring
            # does every key's DRAM step before the first promotion, inline goes key by key)
            many = await c.get_many(list(vals)[::7])
            touched = [await c.touch(k, 100) for k in list(vals)[::11]]
            st = c.stats()
            return (got, one_by_one, many, touched, st["since_open"]["misses"]), st["async_io"]

    runs = {}
    for mode in ("ring", "auto"):
        (tmp_path / mode).mkdir()
        runs[mode] = run(main(mode))
    (got, since, many, touched, _), aio = runs["auto"]
    assert since["hits"]["flash"] > 300                  # flash served most of the gets
    assert sum(g == vals[k] for g, k in zip(got, vals)) > 500
    assert all(g in (vals[k], None) for g, k in zip(got, vals))
    assert aio["batches"] == 0 and aio["mode"].startswith("inline: ")
    assert runs["ring"][1]["batches"] > 0
    assert runs["ring"][0] == runs["auto"][0]


def test_a_thousand_concurrent_tasks_coalesce_their_flash_reads(tmp_path):
    async def main():
        async with AsyncCache(cfg(tmp_path, dram="64KiB", cache_extra=RING)) as c:
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


def test_the_api_matches_cache(tmp_path):
    """add, incr, decr, pop, clear, touch, len, close: Cache's methods with await."""
    async def main():
        c = AsyncCache(cfg(tmp_path, dram="64KiB"))
        assert await c.add("a", b"1") is True and await c.add("a", b"2") is False
        assert await c.incr("n", default=0) == 1 and await c.incr("n", 9) == 10 and await c.decr("n", 20) == 0
        with pytest.raises(KeyError):
            await c.incr("missing")
        await c.set_many({b"f%d" % i: b"v" * 300 for i in range(400)})     # "a" and "n" go to flash
        assert c.cache.dram.latest(b"a") is None
        assert await c.touch("a", 100) is True and await c.get("a") == b"1"
        assert await c.pop("a") == b"1" and await c.pop("a", None) is None
        with pytest.raises(KeyError):
            await c.pop("a")
        assert len(c) >= 1 and len(c) == len(c.cache) and bool(c)
        with pytest.raises(TypeError, match=r"`key in cache` cannot await a flash read; use `await cache.contains"):
            "n" in c  # noqa: B015 - the test is that `in` raises
        assert await c.contains("n")
        await c.clear()
        assert len(c) == 0 and await c.get("n") is None and await c.get_many([b"f1", b"f399"]) == {}
        assert c.stats()["since_open"]["sets"] >= 400
        await c.close()
        await c.close()                                     # idempotent
        with pytest.raises(flashcache.ClosedError):
            await c.add("b", b"1")
    run(main())


def test_every_entry_point_counts_and_times_a_get_the_same_way(tmp_path):
    """One request core: Cache.get, each key of Cache.get_many, AsyncCache.get and each key
    of AsyncCache.get_many take one latency sample and the same counters per key (DRAM
    hits, flash hits and misses alike)."""
    keys = [b"key%d" % i for i in range(60)] + [b"absent1", b"absent2"]

    def gets_and_samples(st, hist):
        s = st["since_open"]
        return (s["gets"], s["hits"]["dram"] + s["hits"]["flash"] + s["misses"], sum(hist.counts))

    async def main():
        seen = []
        for how in ("get", "get_many", "aget", "aget_many"):
            (tmp_path / how).mkdir()
            async with AsyncCache(cfg(tmp_path / how, dram="16KiB")) as a:
                c = a.cache
                for k in keys[:60]:
                    c.set(k, b"v" * 400)                  # most of them pushed to flash
                before = gets_and_samples(c.stats(), c.metrics.get_seconds)
                if how == "get":
                    found = sum(c.get(k) is not None for k in keys)
                elif how == "get_many":
                    found = len(c.get_many(keys))
                elif how == "aget":
                    found = sum(v is not None for v in await asyncio.gather(*(a.get(k) for k in keys)))
                else:
                    found = len(await a.get_many(keys))
                after = gets_and_samples(c.stats(), c.metrics.get_seconds)
                assert [y - x for x, y in zip(before, after)] == [len(keys)] * 3, how
                assert c.stats()["since_open"]["hits"]["flash"] > 10, how
                seen.append(found)
        assert seen == [60] * 4
    run(main())
