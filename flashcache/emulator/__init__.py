"""The emulated FDP SSD's FTL: reclaim units, groups, handles, GC and FDP counters.

Owns only accounting (where bytes would sit in NAND and what GC copies); the device that
stores bytes and speaks NVMe is flashcache.devices.emulated. ``model`` holds the
analytical WAF formulas the FTL is validated against.
"""
from .ftl import Ftl, FtlError
from .geometry import PRESETS, Geometry, preset

__all__ = ["Ftl", "FtlError", "Geometry", "PRESETS", "preset"]
