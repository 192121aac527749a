"""flashcache/workload/driver.py: operations go through the cache's public API, a miss is
followed by a set (cache-aside), and the cache runs on the workload's clock."""
from __future__ import annotations

import pytest

import flashcache
from flashcache.workload import DELETE, GET, SET, Batch, Driver, Generator, VirtualClock, loads

SMALL = {"device": {"kind": "emulated", "size": "64MiB", "format": True, "emulator": {"preset": "small-test"}},
         "cache": {"dram_size": "256KiB", "flash": {"region_size": "1MiB"}}}


@pytest.fixture
def cache(tmp_path):
    clock = VirtualClock()
    cfg = {**SMALL, "device": {**SMALL["device"], "path": str(tmp_path / "d.img")}}
    with flashcache.Cache(cfg, clock=clock) as c:
        yield c, clock


def test_cache_aside_sets_after_a_miss_and_hits_come_back_whole(cache):
    c, clock = cache
    d = Driver(c, clock, check_sizes=True)
    spec = loads("[workload]\nkeys = 2000\nops = {get = 1}\nvalue_size = {range = [10, 3000]}")
    g = Generator(spec)
    for _ in range(10):
        d.apply(g.batch(2000))
    n = d.counts
    assert n.gets == n.ops == 20_000
    assert n.aside_sets == n.gets - n.hits > 0       # every miss was followed by a set
    assert n.hits > 15_000 and n.wrong_size == 0
    st = c.stats()["since_open"]
    assert st["gets"] == n.gets and st["sets"] == n.aside_sets
    assert n.item_bytes_set == st["item_bytes_set"]


def test_sets_deletes_and_ttls_on_the_virtual_clock(cache):
    c, clock = cache
    d = Driver(c, clock, cache_aside=False)
    d.apply(Batch([SET, SET, GET], [b"a", b"b", b"a"], [5, 6, 5], [60.0, 0.0, 0.0], 100.0))
    assert d.counts.hits == 1 and c.get(b"a") == bytes(range(5))
    d.apply(Batch([GET, GET, DELETE, GET], [b"a", b"b", b"b", b"b"], [5, 6, 6, 6], [0.0] * 4, 161.0))
    assert clock() == 161.0
    assert d.counts.hits == 2                          # "a" expired at 160 s of workload time
    assert d.counts.deletes == 1 and c.get(b"b") is None


def test_items_too_large_for_flash_are_counted_not_fatal(cache):
    c, clock = cache
    d = Driver(c, clock)
    d.apply(Batch([SET, SET], [b"big", b"ok"], [c.max_value_size + 1, 10], [0.0, 0.0], 0.0))
    assert (d.counts.too_large, d.counts.sets) == (1, 1)
