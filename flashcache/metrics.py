"""Prometheus metrics for a cache: a collector that reads ``stats()`` at scrape time, plus
the get/set latency histograms the cache observes on its hot path.

Owns metric names and their mapping from the stats dict; it opens no socket (the caller
or the server exposes the registry: README.md, "Prometheus"). Names follow Prometheus
conventions (``flashcache_..._total``, ``_bytes``, ``_seconds``) and say the interval
where it matters (``_since_open``, ``_window``, ``_lifetime``). The surprise: placement
and WAF availability are gauges with a ``reason`` label, so "placement off: too few
handles" is visible on a dashboard, not only in a log.
"""
from __future__ import annotations

from typing import Any, Callable, Iterable

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from ._hot_c import Histogram
from .stats import FIGURES

LATENCY_BUCKETS = (1e-6, 2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3,
                   1e-2, 2.5e-2, 0.1, 1.0)


def _nan(v: float | None) -> float:
    return float("nan") if v is None else float(v)


class CacheCollector(Collector):
    """Turns a cache's ``stats()`` dict into metric families at each scrape.

    Since-open figures are Prometheus counters (``_total``: they start at zero with the
    cache, as a counter does with its process) or, for ratios, gauges named
    ``..._since_open``; lifetime figures are gauges named ``..._lifetime``. Help strings
    are the figures' descriptions (``flashcache.stats.FIGURES``). A ratio without a value
    (no writes yet, or unavailable) is NaN."""

    def __init__(self, stats: Callable[[], dict[str, Any]], name: str = "default"):
        self._stats = stats
        self._name = name

    def collect(self) -> Iterable:
        s = self._stats()
        so, life = s["since_open"], s["lifetime"]
        lab = ["cache"]
        me = self._name

        def one(kind, name, path, value, **extra):
            m = kind(name, FIGURES[path], labels=lab + list(extra))
            m.add_metric([me, *extra.values()], value)
            return m

        def by(kind, name, path, label, values):
            m = kind(name, FIGURES[path], labels=lab + [label])
            for k, v in values.items():
                if v is not None:
                    m.add_metric([me, k], v)
            return m

        # since open: counters
        for key in ("gets", "sets", "deletes", "touches", "misses", "promotions", "demotions", "syncs"):
            yield one(CounterMetricFamily, f"flashcache_{key}", f"since_open.{key}", so[key])
        yield by(CounterMetricFamily, "flashcache_hits", "since_open.hits", "tier", so["hits"])
        yield one(CounterMetricFamily, "flashcache_item_set_bytes", "since_open.item_bytes_set", so["item_bytes_set"])
        for key in ("inserts", "admission_rejects"):
            yield one(CounterMetricFamily, f"flashcache_flash_{key}", f"since_open.flash.{key}", so["flash"][key])
        yield by(CounterMetricFamily, "flashcache_device_written_bytes", "since_open.device_bytes_written", "engine",
                 so["device_bytes_written"])
        waf = so["device_waf"]
        if waf["hbmw"] is not None:
            yield one(CounterMetricFamily, "flashcache_device_host_written_bytes", "since_open.device_waf.hbmw",
                      waf["hbmw"])
            yield one(CounterMetricFamily, "flashcache_device_media_written_bytes", "since_open.device_waf.mbmw",
                      waf["mbmw"])
        # ratios, each over its own interval
        yield one(GaugeMetricFamily, "flashcache_app_write_amplification_since_open",
                  "since_open.app_write_amplification", _nan(so["app_write_amplification"]["value"]))
        for span, w in (("since_open", waf), ("window", s["window"]["device_waf"]),
                        ("lifetime", life["device_waf"])):
            yield one(GaugeMetricFamily, f"flashcache_device_write_amplification_{span}", f"{span}.device_waf",
                      _nan(w["value"]))
        yield one(GaugeMetricFamily, "flashcache_device_waf_window_seconds", "window.seconds",
                  _nan(s["window"]["seconds"]))
        # lifetime: gauges (they survive restarts, so they are not this process's counters)
        yield by(GaugeMetricFamily, "flashcache_device_written_bytes_lifetime", "lifetime.device_bytes_written",
                 "engine", life["device_bytes_written"])
        if life["device_waf"]["hbmw"] is not None:
            yield one(GaugeMetricFamily, "flashcache_device_host_written_bytes_lifetime", "lifetime.device_waf.hbmw",
                      life["device_waf"]["hbmw"])
            yield one(GaugeMetricFamily, "flashcache_device_media_written_bytes_lifetime", "lifetime.device_waf.mbmw",
                      life["device_waf"]["mbmw"])
        # now
        yield by(GaugeMetricFamily, "flashcache_items", "items", "tier", {t: s["items"][t] for t in ("dram", "flash")})
        yield one(GaugeMetricFamily, "flashcache_flash_items_exact", "items.flash_exact",
                  1.0 if s["items"]["flash_exact"] else 0.0)
        yield by(GaugeMetricFamily, "flashcache_item_bytes", "bytes", "tier", s["bytes"])
        st = waf["status"]
        off = st.startswith("unavailable: ")
        yield one(GaugeMetricFamily, "flashcache_device_waf_available", "since_open.device_waf.status",
                  0.0 if off else 1.0, reason=st.removeprefix("unavailable: ") if off else "")
        pl = GaugeMetricFamily("flashcache_placement_enabled", FIGURES["placement"],
                               labels=lab + ["engine", "pid", "reason"])
        for engine, p in s["placement"].items():
            on = p["state"] == "on"
            pl.add_metric([me, engine, str(p.get("pid")) if on else "", "" if on else p["reason"]],
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
    and two additions, atomic under the GIL; flashcache/_metrics.c), against ~1.4 us for
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
