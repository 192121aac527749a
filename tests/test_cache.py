"""flashcache.Cache: the API, TTL, codec, errors, promotion and demotion, warm restart,
threads, and the WAF and placement it reports."""
from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry

import flashcache
from flashcache import config
from flashcache.errors import ClosedError
from tests.clock import FakeClock


def cfg(tmp_path, *, dram="256KiB", device_extra="", cache_extra="", emulator="", kind="emulated"):
    text = f"""
[device]
kind = "{kind}"
path = "{tmp_path}/dev.img"
size = "64MiB"
{device_extra}
[device.emulator]
preset = "small-test"
{emulator}
[cache]
dram_size = "{dram}"
{cache_extra}
[cache.flash]
region_size = "1MiB"
bighash_fraction = 0.25
small_item_max = "1KiB"
"""
    return config.loads(text, "test.toml")


def fill_until_flash(c, n=1000, size=300, prefix=b"fill"):
    """Set enough items that the DRAM tier must push most of them to flash."""
    for i in range(n):
        c.set(prefix + b"%d" % i, bytes([i % 251]) * size)


def test_basic_api(cache):
    cache.set(b"k", b"v")
    cache.set("str-key", bytearray(b"w"))
    assert cache.get(b"k") == b"v" and cache.get("str-key") == b"w"
    assert cache.get(b"str-key") == b"w"                     # str keys are UTF-8
    assert cache.get("nope") is None and cache.get("nope", 7) == 7
    assert "k" in cache and "nope" not in cache
    assert cache.delete("k") is True and cache.delete("k") is False
    assert cache.get("k") is None
    cache.set_many({"a": b"1", "b": b"2"})
    assert cache.get_many(["a", "b", "c"]) == {"a": b"1", "b": b"2"}


def test_values_of_every_size_go_through_flash_and_back(cache):
    sizes = [1, 100, 900, 1500, 40_000, 500_000]
    for s in sizes:
        cache.set(b"big%d" % s, bytes([s % 256]) * s)
    fill_until_flash(cache)
    st = cache.stats()["since_open"]
    assert st["demotions"] > 0
    for s in sizes:
        assert cache.get(b"big%d" % s) == bytes([s % 256]) * s
    assert cache.stats()["since_open"]["hits"]["flash"] >= 1


def test_ttl_never_returns_expired_in_any_tier(cache, clock):
    cache.set("short", b"x" * 100, ttl=10)
    cache.set("big-short", b"y" * 50_000, ttl=10)
    cache.set("long", b"z", ttl=1000)
    cache.set("forever", b"f", ttl=0)
    assert cache.get("short") == b"x" * 100
    fill_until_flash(cache)                                  # push them out to flash
    clock.t += 11
    assert cache.get("short") is None and cache.get("big-short") is None
    assert cache.get("long") == b"z" and cache.get("forever") == b"f"
    assert cache.touch("long", 5) is True
    clock.t += 6
    assert cache.get("long") is None
    assert cache.touch("long", 5) is False
    with pytest.raises(ValueError, match="ttl = -1: use seconds >= 0"):
        cache.set("k", b"v", ttl=-1)


def test_touch_of_a_flash_resident_item(cache, clock):
    cache.set("t", b"v" * 200, ttl=10)
    fill_until_flash(cache)
    assert cache.touch("t", 100)
    clock.t += 50
    fill_until_flash(cache, prefix=b"again")                # the touched copy goes to flash too
    assert cache.get("t") == b"v" * 200


def test_default_ttl_from_config(tmp_path, clock):
    with flashcache.Cache(cfg(tmp_path, cache_extra='default_ttl = "30s"'), clock=clock) as c:
        c.set("k", b"v")
        clock.t += 31
        assert c.get("k") is None


def test_codec(tmp_path):
    with flashcache.Cache(cfg(tmp_path), codec="msgpack") as c:
        c.set("obj", {"a": [1, 2, 3], "b": "text", "c": b"raw"})
        assert c.get("obj") == {"a": [1, 2, 3], "b": "text", "c": b"raw"}
        fill_until_flash(c)
        assert c.get("obj") == {"a": [1, 2, 3], "b": "text", "c": b"raw"}
        with pytest.raises(TypeError, match="not storable with the msgpack codec"):
            c.set("bad", object())
    with pytest.raises(ValueError, match="codec = 'json'"):
        flashcache.Cache(cfg(tmp_path), codec="json")


@pytest.mark.parametrize("call, exc, msg", [
    (lambda c: c.set(42, b"v"), TypeError, "a key must be bytes or str, not int"),
    (lambda c: c.set("", b"v"), ValueError, "the empty key is not allowed"),
    (lambda c: c.set("k" * 5000, b"v"), ValueError, r"key of 5000 bytes is longer than cache.max_key_size \(4096\)"),
    (lambda c: c.set("k", "text"), TypeError, 'a value must be bytes-like, not str; open the cache with codec="msgpack"'),
    (lambda c: c.set("k", bytes(2 << 20)), ValueError, "larger than the largest the flash engines take"),
    (lambda c: c.set("k", b"v", ttl="1h"), TypeError, "ttl must be a number of seconds or None"),
])
def test_errors_are_clear(cache, call, exc, msg):
    with pytest.raises(exc, match=msg):
        call(cache)


def test_use_after_close(tmp_path):
    c = flashcache.Cache(cfg(tmp_path))
    c.close()
    c.close()                                                # idempotent
    with pytest.raises(ClosedError, match="get on a closed cache"):
        c.get("k")


def test_promotion_and_clean_demotion(cache):
    cache.set("p", b"p" * 300)
    fill_until_flash(cache)
    assert cache.dram.get(b"p") is None                       # it lives on flash now
    assert cache.get("p") == b"p" * 300                       # a flash hit...
    assert cache.dram.get(b"p") == b"p" * 300                 # ...promoted to DRAM
    st = cache.stats()["since_open"]
    assert st["promotions"] >= 1 and st["hits"]["flash"] >= 1
    before = st["demotions_skipped_clean"]
    fill_until_flash(cache, prefix=b"more")
    assert cache.stats()["since_open"]["demotions_skipped_clean"] > before  # evicting a clean copy writes nothing
    assert cache.get("p") == b"p" * 300


def test_a_newer_set_is_never_shadowed_by_an_older_flash_copy(tmp_path):
    c = flashcache.Cache(cfg(tmp_path, cache_extra='[cache.admission]\npolicy = "random"\nprobability = 0.0'))
    try:
        c.set("k", b"old" * 50)
        # nothing is admitted, so "k" never reaches flash; write it there by hand as "old"
        from engines.device import run
        c.navy.admission = flashcache.cache.admission_mod.AcceptAll()
        fill_until_flash(c)
        c.navy.admission = flashcache.cache.admission_mod.RandomAdmission(0.0)
        c.set("k", b"new" * 50)                               # DRAM only, and flash's copy removed
        fill_until_flash(c, prefix=b"push")                   # "new" is evicted and rejected
        assert c.get("k") in (None, b"new" * 50)
        assert run(c.navy.lookup(b"k"), c.device) is None
    finally:
        c.close()


def test_warm_restart_keeps_items(tmp_path):
    conf = cfg(tmp_path)
    items = {b"w%d" % i: bytes([i]) * (100 if i % 3 else 20_000) for i in range(60)}
    with flashcache.Cache(conf) as c:
        c.set_many(items)
    with flashcache.Cache(conf) as c:
        assert c.stats()["start"] == "warm"
        got = c.get_many(list(items))
        assert got == items


def test_get_many_submits_flash_reads_together(cache):
    keys = [b"g%d" % i for i in range(30)]
    for k in keys:
        cache.set(k, k * 50)
    fill_until_flash(cache)
    calls = []
    real = cache.device.read_many

    def spy(reqs):
        calls.append(len(reqs))
        return real(reqs)

    cache.device.read_many = spy
    got = cache.get_many(keys)
    assert got == {k: k * 50 for k in keys}
    assert calls and max(calls) > 1                          # one batch, not one read per key


def test_stats_report_waf_and_placement_on_the_emulated_fdp_ssd(cache):
    fill_until_flash(cache, n=2000)
    st = cache.stats()
    assert st["placement"] == {"bighash": {"state": "on", "pid": 1}, "blockcache": {"state": "on", "pid": 2}}
    so = st["since_open"]
    for w in (so["device_waf"], st["window"]["device_waf"], st["lifetime"]["device_waf"]):
        assert w["status"] == "available" and w["value"] >= 1.0
    assert so["device_bytes_written"]["bighash"] > 0
    assert so["app_write_amplification"]["value"] > 1.0      # 4 KiB bucket writes for ~300 B items
    assert so["hit_ratio"] is None or 0 <= so["hit_ratio"] <= 1
    hb = cache.device.ftl.handle_counters()
    assert hb[1]["hbmw"] > 0                                  # BigHash's writes went through handle 1


def test_stats_say_why_when_fdp_is_off(tmp_path):
    with flashcache.Cache(cfg(tmp_path, emulator="fdp = false")) as c:
        st = c.stats()
        for eng in ("bighash", "blockcache"):
            assert st["placement"][eng]["state"] == "off"
            assert st["placement"][eng]["reason"].startswith("FDP is disabled in endurance group 1")
        assert st["lifetime"]["device_waf"]["status"] == "available"  # the conventional SSD's FTL still counts


def test_stats_on_a_plain_file_say_waf_unavailable(tmp_path):
    with flashcache.Cache(cfg(tmp_path, kind="file")) as c:
        st = c.stats()
        for span in ("since_open", "window", "lifetime"):
            assert st[span]["device_waf"]["status"].startswith("unavailable: ")
            assert st[span]["device_waf"]["value"] is None
        assert st["placement"]["bighash"]["state"] == "off"


def test_prometheus_registry_is_the_callers(tmp_path):
    reg = CollectorRegistry()
    with flashcache.Cache(cfg(tmp_path), registry=reg, name="t") as c:
        c.set("k", b"v")
        c.get("k")
        assert reg.get_sample_value("flashcache_sets_total", {"cache": "t"}) == 1
        assert reg.get_sample_value("flashcache_hits_total", {"cache": "t", "tier": "dram"}) == 1
        assert reg.get_sample_value("flashcache_placement_enabled",
                                    {"cache": "t", "engine": "bighash", "pid": "1", "reason": ""}) == 1
        assert reg.get_sample_value("flashcache_get_latency_seconds_count", {"cache": "t"}) == 1


# --------------------------------------------------------------------------- the C hot path


def _twin_ops():
    from hypothesis import strategies as st
    return st.lists(st.tuples(st.sampled_from(["get", "get", "set", "set", "set_none", "set_ttl", "delete", "touch", "tick",
                                               "many", "get_str", "big"]),
                              st.integers(0, 30), st.sampled_from([10, 300, 900, 3000])), min_size=60, max_size=250)


@pytest.mark.parametrize("hot", [False, True], ids=["python", "c"])
@pytest.mark.parametrize("size", [300, 20_000], ids=["bighash", "blockcache"])
def test_promoted_item_whose_flash_copy_was_evicted_is_written_back(tmp_path, clock, monkeypatch, hot, size):
    """A promoted (clean) item is written again when DRAM evicts it if flash evicted its
    copy meanwhile (CacheLib's rule); one flash still holds costs no write. Both paths."""
    import flashcache.cache as cache_mod
    monkeypatch.setattr(cache_mod, "HOT_PATH", hot)
    c = flashcache.Cache(cfg(tmp_path, dram="64KiB"), clock=clock)
    try:
        assert (c.core.hot is not None) == hot
        value = b"p" * size
        c.set("p", value)
        c.set("q", value)
        fill_until_flash(c, n=400, size=300, prefix=b"a")
        assert c.navy.lookup_now(b"p") is not None and c.navy.lookup_now(b"q") is not None
        assert c.get("p") == value and c.get("q") == value      # flash hits, promoted clean
        assert c.dram.get(b"p") == value and c.dram.get(b"q") == value
        # flash (only flash: DRAM keeps its clean copies) evicts p's copy, not q's
        dev, i = c.device, 0
        bh = c.navy.bighash

        def on_flash(key):
            # the probe is no use of the item: BigHash's hit bits would give a key looked up
            # after every insert a second chance each time, and p would never go
            found = c.navy.lookup_now(key) is not None
            if bh is not None:
                bh.hits[:] = 0
            return found

        while on_flash(b"p"):
            c.navy.insert_now(dev, b"direct%d" % i, bytes(size))
            i += 1
            if not on_flash(b"q"):                           # q went too: put it back as it was
                c.navy.insert_now(dev, b"q", value)
        before = c.stats()["since_open"]
        fill_until_flash(c, n=400, size=300, prefix=b"b")    # DRAM evicts p and q
        assert c.dram.get(b"p") is None and c.dram.get(b"q") is None
        after = c.stats()["since_open"]
        assert after["demotions_written_back"] - before["demotions_written_back"] >= 1
        assert after["demotions_skipped_clean"] - before["demotions_skipped_clean"] >= 1
        assert c.navy.lookup_now(b"p") == (value, 0)         # written back, not lost
        assert c.get("p") == value and c.get("q") == value
    finally:
        c.close()


def _make_twin(tmp_path, name, clock, hot, monkeypatch, cache_extra=""):
    import flashcache.cache as cache_mod
    (tmp_path / name).mkdir(exist_ok=True)
    monkeypatch.setattr(cache_mod, "HOT_PATH", hot)
    c = flashcache.Cache(cfg(tmp_path / name, dram="4KiB", kind="file", cache_extra=cache_extra), clock=clock)
    assert (c.core.hot is not None) == hot
    assert not hot or c.core.hot.hooked          # flash lookups through the Router's C hook
    assert not hot or c.core.hot.insert_hooked   # demotions through its C insert
    assert not hot or c.core.hot.sets == (not cache_extra)
    return c


def _comparable(st):
    """Stats without what differs between two devices by design: the paths and the
    random generation each format draws (every other counter, device I/O included, must
    match)."""
    if isinstance(st, dict):
        return {k: _comparable(v) for k, v in st.items() if k not in ("path", "generation")}
    return st


@pytest.mark.parametrize("cache_extra", ["", "write_through = true", "default_ttl = 500"],
                         ids=["default", "write_through", "default_ttl"])
def test_hot_path_does_exactly_what_the_python_methods_do(tmp_path, monkeypatch, cache_extra):
    """Cache.get/set bound to the C hot path against the Python methods on twin caches:
    same answers, same stats (every counter and histogram count, the device's I/O), over
    random operations that mix the hot path's common case with everything it hands back
    (str keys, TTLs, too-large values, get_many, delete, touch, expiry). With
    write-through or a default TTL only gets run in C (sets are Python's on both)."""
    from hypothesis import HealthCheck, given, settings
    flash_hits, c_demotions, skipped_clean = [], [], []

    @settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(_twin_ops())
    def run_ops(ops):
        import shutil
        clock = FakeClock()
        for d in ("a", "b"):                     # a fresh device for every example
            shutil.rmtree(tmp_path / d, ignore_errors=True)
        a = _make_twin(tmp_path, "a", clock, False, monkeypatch, cache_extra)
        b = _make_twin(tmp_path, "b", clock, True, monkeypatch, cache_extra)
        try:
            for op, i, n in ops:
                k = b"key%d" % i
                v = bytes([i]) * n
                res = []
                for c in (a, b):
                    if op == "get":
                        res.append(c.get(k, b"dflt"))
                    elif op == "get_str":
                        res.append(c.get("key%d" % i))
                    elif op == "set":
                        res.append(c.set(k, v))
                    elif op == "set_none":           # ttl None said explicitly (as AsyncCache does)
                        res.append(c.set(k, v, None))
                    elif op == "set_ttl":
                        res.append(c.set(k, v, ttl=15))
                    elif op == "big":
                        with pytest.raises(ValueError, match="larger than the largest"):
                            c.set(k, bytes(4 << 20))
                        res.append(None)
                    elif op == "delete":
                        res.append(c.delete(k))
                    elif op == "touch":
                        res.append(c.touch(k, 5))
                    elif op == "many":
                        res.append(c.get_many([b"key%d" % j for j in range(i, i + 5)]))
                    else:
                        clock.t += 10
                        res.append(None)
                assert res[0] == res[1], (op, i, n)
            sa, sb = _comparable(a.stats()), _comparable(b.stats())
            flash_hits.append(sa["since_open"]["hits"]["flash"])
            c_demotions.append(b.core.hot.counters()["demotions"])
            skipped_clean.append(b.core.hot.counters()["demotions_skipped_clean"])
            assert {k: v for k, v in sa.items() if sb[k] != v} == {}, {k: v for k, v in sb.items() if sa[k] != v}
            assert a.metrics.get_seconds.counts and sum(a.metrics.get_seconds.counts) == sum(b.metrics.get_seconds.counts)
            assert sum(a.metrics.set_seconds.counts) == sum(b.metrics.set_seconds.counts)
        finally:
            a.close()
            b.close()

    run_ops()
    assert sum(flash_hits) > 100            # the flash paths ran too
    assert sum(skipped_clean) > 5           # promoted items' evictions decided in C
    if not cache_extra:
        assert sum(c_demotions) > 20        # and demotions through the C insert hook


def test_hot_path_takes_a_set_with_ttl_none_and_async_sets_use_it(tmp_path, clock):
    """set(k, v, None) is the common case too (None: the default TTL, 0 here): the C path
    serves it, so AsyncCache.set, which passes its ttl on, is accelerated as well."""
    import asyncio

    c = flashcache.Cache(cfg(tmp_path, kind="file"), clock=clock)
    try:
        hot = c.core.hot
        assert hot is not None
        before = hot.counters()["sets"]
        c.set(b"k", b"v", None)
        assert hot.counters()["sets"] == before + 1 and c.get(b"k") == b"v"
        c.set(b"t", b"v", 5)                      # a ttl: handed to the Python path, counted there
        assert hot.counters()["sets"] == before + 1 and c.get(b"t") == b"v"
    finally:
        c.close()

    async def go():
        (tmp_path / "async").mkdir()
        async with flashcache.AsyncCache(cfg(tmp_path / "async", kind="file"), clock=clock) as ac:
            hot = ac.core.hot
            assert hot is not None
            before = hot.counters()["sets"]
            for i in range(10):
                await ac.set(b"a%d" % i, b"x")
            assert hot.counters()["sets"] == before + 10
            assert await ac.get(b"a3") == b"x"
    asyncio.run(go())


def test_hot_path_closes_with_the_cache(tmp_path, clock):
    c = flashcache.Cache(cfg(tmp_path, kind="file"), clock=clock)
    assert c.core.hot is not None
    get, set_ = c.get, c.set                  # held by a caller across close()
    set_(b"k", b"v")
    assert get(b"k") == b"v"
    c.close()
    with pytest.raises(ClosedError):
        get(b"k")
    with pytest.raises(ClosedError):
        set_(b"k", b"v")


def test_hot_path_is_off_where_it_does_not_apply(tmp_path, clock):
    """A codec: no C path (values are decoded). A default TTL or write-through: gets in C
    (a get is the same whatever sets do), every set in Python."""
    for extra, codec, gets in (("default_ttl = 60", None, True), ("write_through = true", None, True),
                               ("", "msgpack", False)):
        (tmp_path / str(len(extra))).mkdir(exist_ok=True)
        c = flashcache.Cache(cfg(tmp_path / str(len(extra)), kind="file", cache_extra=extra), clock=clock,
                             codec=codec)
        try:
            if gets:
                assert c.core.hot is not None and not c.core.hot.sets and c.get == c.core.hot.get
                sets = c.core.hot.counters()["sets"]
                c.set(b"k", b"v")
                assert c.core.hot.counters()["sets"] == sets and c.core.hot.set(b"j", b"w") is None
                assert c.core.hot.counters()["sets"] == sets and c.get(b"k") == b"v" and c.get(b"j") == b"w"
            else:
                assert c.core.hot is None and c.get.__func__ is flashcache.Cache.get
            assert c.set.__func__ is flashcache.Cache.set
        finally:
            c.close()


@pytest.mark.parametrize("mode", ['"sync"', "true"])
def test_write_through_sync_flushes_every_change_before_it_returns(tmp_path, clock, monkeypatch, mode):
    """write_through = "sync": each set, delete, touch, read-modify-write and clear() has
    its writes on the device, then waits for device.flush() (fdatasync), before it
    returns; a get, or an add refused, flushes nothing; since_open.syncs counts them.
    write_through = true writes the same but flushes nothing per call (the engines still
    flush their checkpoints, as clear() takes one)."""
    c = flashcache.Cache(cfg(tmp_path, kind="file", cache_extra=f"write_through = {mode}"), clock=clock)
    try:
        assert c.stats()["write_through"] == (mode == "true" or "sync")
        real = c.device.flush
        seen: dict = {}
        op = ""

        def flush():
            real()
            seen.setdefault(op, []).append(c.navy.lookup_now(b"k"))   # what flash held once flushed

        monkeypatch.setattr(c.device, "flush", flush)
        big = b"B" * 20_000
        for op, call in (("set", lambda: c.set(b"k", b"v1")),
                         ("set big", lambda: c.set(b"k", big)),   # BlockCache: its region's tail
                         ("get", lambda: c.get(b"k")),
                         ("add refused", lambda: c.add(b"k", b"x")),
                         ("incr", lambda: c.incr(b"n", default=0)),
                         ("touch", lambda: c.touch(b"k", 100)),
                         ("delete", lambda: c.delete(b"k"))):
            call()
        op = "clear"
        c.clear()
        if mode == "true":
            assert set(seen) <= {"clear"} and c.stats()["since_open"]["syncs"] == 0, seen
        else:
            assert seen["set"] == [(b"v1", 0)] and seen["set big"] == [(big, 0)]
            assert "get" not in seen and "add refused" not in seen
            assert len(seen["incr"]) == len(seen["touch"]) == 1 and seen["delete"] == [None]
            assert seen["clear"][-1] is None
            assert c.stats()["since_open"]["syncs"] == 6
    finally:
        c.close()
