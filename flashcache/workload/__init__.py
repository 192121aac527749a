"""Workloads for experiments: a cachebench-like generator configured in TOML, presets, and
replay of the Twitter cache-trace CSV format, applied to a cache through its public API.

Owns describing and producing operations and the loop that applies them; it measures
nothing about the device (flashcache.waf does). ``load("kvcache")`` reads a preset,
``load("my.toml")`` a file; ``Generator(spec.bind(cache_bytes))`` or ``TraceReader(path)``
give batches; ``Driver(cache, clock)`` applies them.
"""
from .driver import Counts, Driver, VirtualClock
from .generator import DELETE, GET, SET, Batch, Generator
from .spec import Dist, WorkloadSpec, from_dict, load, loads, presets
from .trace import TraceReader

__all__ = ["Batch", "Counts", "DELETE", "Dist", "Driver", "GET", "Generator", "SET", "TraceReader",
           "VirtualClock", "WorkloadSpec", "from_dict", "load", "loads", "presets"]
