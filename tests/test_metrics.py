"""Metrics: names, labels, and that placement-off and WAF-unavailable carry their reason."""
import pytest
import math

from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest

from flashcache.metrics import CacheMetrics


def waf_off(why="uring device on a regular file cannot report media writes"):
    return {"value": None, "status": f"unavailable: {why}", "hbmw": None, "mbmw": None, "mbe": None}


def waf_of(value, hbmw=8192):
    return {"value": value, "status": "available", "hbmw": hbmw, "mbmw": int(hbmw * value), "mbe": 0}


def stats(placement_off=False, waf=None):
    """A stats() dict as Cache.stats() shapes it (``waf``: since_open, window, lifetime)."""
    since, window, life = waf or (waf_off(), waf_off(), waf_off())
    flash = dict.fromkeys(("lookups", "hits", "misses", "inserts", "admission_rejects", "too_large", "removes",
                           "removed"), 0)
    return {
        "start": "warm",
        "placement": {"bighash": {"state": "off", "reason": "device has no FDP"} if placement_off
                      else {"state": "on", "pid": 1},
                      "blockcache": {"state": "on", "pid": 2}},
        "items": {"dram": 7, "flash": 30, "flash_exact": True}, "bytes": {"dram": 700, "flash": None},
        "write_through": False,
        "since_open": {
            "seconds": 1.0, "gets": 10, "sets": 4, "deletes": 1, "touches": 0, "misses": 2,
            "hits": {"dram": 5, "flash": 3}, "hit_ratio": 0.8, "promotions": 3, "demotions": 6,
            "demotions_skipped_clean": 0, "syncs": 0, "item_bytes_set": 4000, "flash": {**flash, "inserts": 6},
            "device_bytes_written": {"bighash": 8192, "blockcache": 0},
            "app_write_amplification": {"value": 2.048, "status": "available"},
            "device_waf": since,
        },
        "window": {"seconds": None if window["value"] is None else 60.0, "device_waf": window},
        "lifetime": {"flash": {**flash, "inserts": 50}, "device_bytes_written": {"bighash": 1 << 20, "blockcache": 0},
                     "device_waf": life},
    }


def sample(reg, name, **labels):
    v = reg.get_sample_value(name, labels)
    assert v is not None, (name, labels, generate_latest(reg).decode())
    return v


def test_counters_and_gauges():
    reg = CollectorRegistry()
    m = CacheMetrics(lambda: stats(), reg, name="t")
    assert sample(reg, "flashcache_gets_total", cache="t") == 10
    assert sample(reg, "flashcache_hits_total", cache="t", tier="flash") == 3
    assert sample(reg, "flashcache_items", cache="t", tier="dram") == 7
    assert sample(reg, "flashcache_items", cache="t", tier="flash") == 30
    assert sample(reg, "flashcache_flash_items_exact", cache="t") == 1
    assert sample(reg, "flashcache_flash_inserts_total", cache="t") == 6
    m.get_seconds.observe(3e-6)
    assert sample(reg, "flashcache_get_latency_seconds_count", cache="t") == 1


def test_names_say_since_open_or_lifetime():
    """Since-open figures are counters (or ..._since_open gauges); lifetime figures, which
    survive restarts, are ..._lifetime gauges, never counters."""
    reg = CollectorRegistry()
    CacheMetrics(lambda: stats(waf=(waf_of(1.5), waf_of(1.25), waf_of(2.0, hbmw=1 << 30))), reg, name="t")
    assert sample(reg, "flashcache_device_written_bytes_total", cache="t", engine="bighash") == 8192
    assert sample(reg, "flashcache_device_written_bytes_lifetime", cache="t", engine="bighash") == 1 << 20
    assert sample(reg, "flashcache_app_write_amplification_since_open", cache="t") == 2.048
    assert sample(reg, "flashcache_device_write_amplification_since_open", cache="t") == 1.5
    assert sample(reg, "flashcache_device_write_amplification_window", cache="t") == 1.25
    assert sample(reg, "flashcache_device_waf_window_seconds", cache="t") == 60.0
    assert sample(reg, "flashcache_device_write_amplification_lifetime", cache="t") == 2.0
    assert sample(reg, "flashcache_device_host_written_bytes_total", cache="t") == 8192
    assert sample(reg, "flashcache_device_media_written_bytes_lifetime", cache="t") == 2 << 30
    kinds = {m.name: m.type for m in reg.collect()}
    assert all(t == "gauge" for n, t in kinds.items() if n.endswith(("_lifetime", "_since_open")))
    assert kinds["flashcache_device_written_bytes"] == "counter"


def test_help_strings_are_the_figures_descriptions():
    from flashcache.stats import FIGURES
    reg = CollectorRegistry()
    CacheMetrics(lambda: stats(), reg, name="t")
    docs = {m.name: m.documentation for m in reg.collect()}
    assert docs["flashcache_gets"] == FIGURES["since_open.gets"]
    assert docs["flashcache_device_written_bytes_lifetime"] == FIGURES["lifetime.device_bytes_written"]
    assert docs["flashcache_placement_enabled"] == FIGURES["placement"]


def test_placement_off_and_waf_unavailable_have_reasons():
    reg = CollectorRegistry()
    CacheMetrics(lambda: stats(placement_off=True), reg, name="t")
    assert sample(reg, "flashcache_placement_enabled", cache="t", engine="bighash", pid="",
                  reason="device has no FDP") == 0
    assert sample(reg, "flashcache_placement_enabled", cache="t", engine="blockcache", pid="2", reason="") == 1
    assert sample(reg, "flashcache_device_waf_available", cache="t",
                  reason="uring device on a regular file cannot report media writes") == 0
    for span in ("since_open", "window", "lifetime"):
        assert math.isnan(sample(reg, f"flashcache_device_write_amplification_{span}", cache="t"))
    assert reg.get_sample_value("flashcache_device_host_written_bytes_total", {"cache": "t"}) is None


def test_waf_available_but_no_writes_yet():
    reg = CollectorRegistry()
    none = {"value": None, "status": "no writes yet since open", "hbmw": 0, "mbmw": 0, "mbe": 0}
    CacheMetrics(lambda: stats(waf=(none, {**none, "status": "no writes in the window"}, waf_of(1.2))), reg,
                 name="t")
    assert sample(reg, "flashcache_device_waf_available", cache="t", reason="") == 1
    assert math.isnan(sample(reg, "flashcache_device_write_amplification_since_open", cache="t"))
    assert sample(reg, "flashcache_device_write_amplification_lifetime", cache="t") == 1.2
    assert sample(reg, "flashcache_device_host_written_bytes_total", cache="t") == 0


def test_device_collector_says_why_placement_is_off(tmp_path):
    from flashcache.devices.file import FileDevice
    from flashcache.metrics import DeviceCollector
    reg = CollectorRegistry()
    with FileDevice(str(tmp_path / "d.img"), 1 << 20) as d:
        s = d.open_stream("bighash")
        d.write(0, bytes(4096), s)
        reg.register(DeviceCollector(d, "t"))
        path = str(tmp_path / "d.img")
        assert sample(reg, "flashcache_device_stream_written_bytes_total", device="t", path=path,
                      stream="bighash") == 4096
        reason = s.placement.removeprefix("off: ")
        assert reason.startswith("psync regular file device has no FDP placement")
        assert sample(reg, "flashcache_device_placement_enabled", device="t", path=path, stream="bighash",
                      pid="", reason=reason) == 0
        assert sample(reg, "flashcache_device_waf_available", device="t", path=path,
                      reason=d.waf_unavailable_reason()) == 0


def test_latency_histogram_buckets_are_cumulative():
    reg = CollectorRegistry()
    m = CacheMetrics(lambda: stats(), reg, name="t")
    for v in (2e-6, 2e-6, 3e-4, 5.0):
        m.set_seconds.observe(v)
    get = lambda le: reg.get_sample_value("flashcache_set_latency_seconds_bucket", {"cache": "t", "le": le})
    assert get("2.5e-06") == 2 and get("0.0005") == 3 and get("1.0") == 3 and get("+Inf") == 4
    assert reg.get_sample_value("flashcache_set_latency_seconds_sum", {"cache": "t"}) == pytest.approx(5.000304)
    m.close()
    assert reg.get_sample_value("flashcache_set_latency_seconds_count", {"cache": "t"}) is None


@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(min_value=0, max_value=20, allow_nan=False), max_size=200))
def test_latency_histogram_counts_as_bisect_left(values):
    """The C histogram puts a value equal to a bound in that bound's bucket, as
    bisect_left over the bounds does; the sum is the plain sum."""
    from bisect import bisect_left

    from flashcache.metrics import LATENCY_BUCKETS, LatencyHistogram
    h = LatencyHistogram()
    want = [0] * (len(LATENCY_BUCKETS) + 1)
    for v in values + list(LATENCY_BUCKETS):
        h.observe(v)
        want[bisect_left(LATENCY_BUCKETS, v)] += 1
    assert h.counts == want and h.bounds == tuple(float(b) for b in LATENCY_BUCKETS)
    assert h.sum == pytest.approx(sum(values) + sum(LATENCY_BUCKETS))


def test_latency_histogram_rejects_bad_bounds():
    from flashcache.metrics import LatencyHistogram
    with pytest.raises(ValueError, match="bounds must increase"):
        LatencyHistogram([1.0, 0.5])
    with pytest.raises(TypeError):
        LatencyHistogram(["a"])


def test_a_registry_that_collects_to_learn_names_takes_a_cache(tmp_path):
    """prometheus_client's default REGISTRY collects each collector once when it is
    registered: the cache must answer stats() that early, while it is being opened."""
    import flashcache
    from tests.test_cache import cfg
    reg = CollectorRegistry(auto_describe=True)
    with flashcache.Cache(cfg(tmp_path), registry=reg, name="t") as c:
        c.set("k", b"v")
        assert sample(reg, "flashcache_items", cache="t", tier="dram") == 1
