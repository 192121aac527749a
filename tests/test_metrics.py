"""Metrics: names, labels, and that placement-off and WAF-unavailable carry their reason."""
import pytest
import math

from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest

from flashcache.metrics import CacheMetrics


def stats(placement_off=False, waf=None):
    return {
        "gets": 10, "sets": 4, "deletes": 1, "hits": {"dram": 5, "flash": 3}, "misses": 2,
        "items": {"dram": 7, "flash": None}, "bytes": {"dram": 700, "flash": None},
        "item_bytes_set": 4000, "device_bytes_written": {"bighash": 8192, "blockcache": 0},
        "app_write_amplification": 2.048,
        "device_waf": waf or {"status": "unavailable: uring device on a regular file cannot report media writes",
                              "window": None, "since_open": None},
        "placement": {"bighash": {"state": "off", "reason": "device has no FDP"} if placement_off
                      else {"state": "on", "pid": 1},
                      "blockcache": {"state": "on", "pid": 2}},
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
    assert reg.get_sample_value("flashcache_items", {"cache": "t", "tier": "flash"}) is None
    assert sample(reg, "flashcache_device_written_bytes_total", cache="t", writer="bighash") == 8192
    assert sample(reg, "flashcache_app_write_amplification", cache="t") == 2.048
    m.get_seconds.observe(3e-6)
    assert sample(reg, "flashcache_get_latency_seconds_count", cache="t") == 1


def test_placement_off_and_waf_unavailable_have_reasons():
    reg = CollectorRegistry()
    CacheMetrics(lambda: stats(placement_off=True), reg, name="t")
    assert sample(reg, "flashcache_placement_enabled", cache="t", engine="bighash", pid="",
                  reason="device has no FDP") == 0
    assert sample(reg, "flashcache_placement_enabled", cache="t", engine="blockcache", pid="2", reason="") == 1
    assert sample(reg, "flashcache_device_waf_available", cache="t",
                  reason="uring device on a regular file cannot report media writes") == 0
    assert math.isnan(sample(reg, "flashcache_device_write_amplification", cache="t", window="window"))


def test_waf_available():
    reg = CollectorRegistry()
    CacheMetrics(lambda: stats(waf={"status": "available", "window": 1.04, "since_open": 1.2}), reg, name="t")
    assert sample(reg, "flashcache_device_waf_available", cache="t", reason="") == 1
    assert sample(reg, "flashcache_device_write_amplification", cache="t", window="since_open") == 1.2


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
