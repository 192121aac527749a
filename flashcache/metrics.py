"""Prometheus metrics for a cache: a collector that reads ``stats()`` at scrape time, plus
the get/set latency histograms the cache observes on its hot path.

Owns metric names and their mapping from the stats dict; it opens no socket (the server
exposes the registry). Names follow Prometheus conventions (``flashcache_..._total``,
``_bytes``, ``_seconds``). The surprise: placement and WAF availability are gauges with a
``reason`` label, so "placement off: too few handles" is visible on a dashboard, not only
in a log.
"""
from __future__ import annotations

from typing import Any, Callable, Iterable

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from ._hot_c import Histogram

LATENCY_BUCKETS = (1e-6, 2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3,
                   1e-2, 2.5e-2, 0.1, 1.0)


class CacheCollector(Collector):
    """Turns a cache's ``stats()`` dict into metric families at each scrape."""

    def __init__(self, stats: Callable[[], dict[str, Any]], name: str = "default"):
        self._stats = stats
        self._name = name

    def collect(self) -> Iterable:
        s = self._stats()
        lab = ["cache"]

        def counter(name, doc, value, **extra):
            m = CounterMetricFamily(name, doc, labels=lab + list(extra))
            m.add_metric([self._name, *extra.values()], value)
            return m

        yield counter("flashcache_gets", "get operations", s["gets"])
        yield counter("flashcache_sets", "set operations", s["sets"])
        yield counter("flashcache_deletes", "delete operations", s["deletes"])
        hits = CounterMetricFamily("flashcache_hits", "gets answered, by tier", labels=lab + ["tier"])
        for tier, v in s["hits"].items():
            hits.add_metric([self._name, tier], v)
        yield hits
        yield counter("flashcache_misses", "gets not answered", s["misses"])
        items = GaugeMetricFamily("flashcache_items", "items held, by tier", labels=lab + ["tier"])
        nbytes = GaugeMetricFamily("flashcache_item_bytes", "bytes of items held, by tier", labels=lab + ["tier"])
        for tier, v in s["items"].items():
            if v is not None:
                items.add_metric([self._name, tier], v)
        for tier, v in s["bytes"].items():
            if v is not None:
                nbytes.add_metric([self._name, tier], v)
        yield items
        yield nbytes
        yield counter("flashcache_item_set_bytes", "bytes of keys and values set by the application",
                      s["item_bytes_set"])
        dw = CounterMetricFamily("flashcache_device_written_bytes", "bytes written to the device, by writer",
                                 labels=lab + ["writer"])
        for w, v in s["device_bytes_written"].items():
            dw.add_metric([self._name, w], v)
        yield dw
        alwa = GaugeMetricFamily("flashcache_app_write_amplification",
                                 "device bytes written / item bytes set (NaN before any set)", labels=lab)
        alwa.add_metric([self._name], float("nan") if s["app_write_amplification"] is None
                        else s["app_write_amplification"])
        yield alwa
        waf = s["device_waf"]
        g = GaugeMetricFamily("flashcache_device_write_amplification",
                              "device WAF from the FDP statistics log: media / host bytes written (NaN when unknown)",
                              labels=lab + ["window"])
        for window in ("window", "since_open"):
            v = waf.get(window)
            g.add_metric([self._name, window], float("nan") if v is None else v)
        yield g
        avail = GaugeMetricFamily("flashcache_device_waf_available",
                                  "1 when the device reports media writes; reason says why not",
                                  labels=lab + ["reason"])
        st = waf["status"]
        avail.add_metric([self._name, "" if st == "available" else st.removeprefix("unavailable: ")],
                         1.0 if st == "available" else 0.0)
        yield avail
        pl = GaugeMetricFamily("flashcache_placement_enabled",
                               "1 when an engine's writes carry an FDP placement identifier",
                               labels=lab + ["engine", "pid", "reason"])
        for engine, p in s["placement"].items():
            on = p["state"] == "on"
            pl.add_metric([self._name, engine, str(p.get("pid")) if on else "", "" if on else p["reason"]],
                          1.0 if on else 0.0)
        yield pl


class DeviceCollector(Collector):
    """A device's own metrics: bytes per placement stream, placement state with its
    reason, and whether device WAF can be read (and why not). For tools and servers that
    run a device without a cache; a cache's collector covers the same through stats()."""

    def __init__(self, device: Any, name: str = "default"):
        self._dev = device
        self._name = name

    def collect(self) -> Iterable:
        st = self._dev.stats()
        lab = ["device", "path"]
        base = [self._name, st["path"]]
        w = CounterMetricFamily("flashcache_device_stream_written_bytes", "bytes written, by placement stream",
                                labels=lab + ["stream"])
        for stream, v in st["bytes_written_by_stream"].items():
            w.add_metric(base + [stream], v)
        yield w
        r = CounterMetricFamily("flashcache_device_read_bytes", "bytes read from the device", labels=lab)
        r.add_metric(base, st["bytes_read"])
        yield r
        pl = GaugeMetricFamily("flashcache_device_placement_enabled",
                               "1 when a stream's writes carry an FDP placement identifier",
                               labels=lab + ["stream", "pid", "reason"])
        for name, s in self._dev.streams.items():
            on = s.pid is not None
            pl.add_metric(base + [name, str(s.pid) if on else "", "" if on else s.placement.removeprefix("off: ")],
                          1.0 if on else 0.0)
        yield pl
        reason = self._dev.waf_unavailable_reason()
        a = GaugeMetricFamily("flashcache_device_waf_available",
                              "1 when the device reports media writes; reason says why not", labels=lab + ["reason"])
        a.add_metric(base + [reason or ""], 0.0 if reason else 1.0)
        yield a


class LatencyHistogram(Histogram):
    """A histogram for the hot path: ``observe(seconds)`` is one C call (a binary search
    and two additions, atomic under the GIL; flashcache/_hot.c), against ~1.4 us for
    prometheus_client's locked Histogram. ``bounds``, ``counts`` (a new list; the last
    bucket counts what is above every bound) and ``sum`` read it."""

    __slots__ = ()

    def __init__(self, bounds: Iterable[float] = LATENCY_BUCKETS):
        super().__init__(tuple(bounds))

    def family(self, name: str, doc: str, cache: str) -> HistogramMetricFamily:
        """The histogram as a Prometheus metric family (cumulative buckets, sum, count)."""
        m = HistogramMetricFamily(name, doc, labels=["cache"])
        acc = 0
        buckets = []
        counts = self.counts                    # one snapshot
        for bound, n in zip(self.bounds, counts):
            acc += n
            buckets.append((repr(float(bound)), acc))
        acc += counts[-1]
        buckets.append(("+Inf", acc))
        m.add_metric([cache], buckets, self.sum)
        return m


class _LatencyCollector(Collector):
    def __init__(self, hists: dict[str, tuple[LatencyHistogram, str]], name: str):
        self._hists = hists
        self._name = name

    def collect(self) -> Iterable:
        for metric, (h, doc) in self._hists.items():
            yield h.family(metric, doc, self._name)


class CacheMetrics:
    """The metrics of one cache: the scrape-time collector and the latency histograms."""

    def __init__(self, stats: Callable[[], dict[str, Any]], registry: CollectorRegistry | None = None,
                 name: str = "default"):
        self.registry = registry if registry is not None else CollectorRegistry()
        self.collector = CacheCollector(stats, name)
        self.registry.register(self.collector)
        self.get_seconds = LatencyHistogram()
        self.set_seconds = LatencyHistogram()
        self.latency = _LatencyCollector({"flashcache_get_latency_seconds": (self.get_seconds, "get latency"),
                                          "flashcache_set_latency_seconds": (self.set_seconds, "set latency")},
                                         name)
        self.registry.register(self.latency)

    def close(self) -> None:
        """Unregister this cache's collectors from the registry."""
        for c in (self.collector, self.latency):
            try:
                self.registry.unregister(c)
            except KeyError:
                pass
