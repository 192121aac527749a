"""What ``Cache.stats()`` reports: its shape, one description per figure (the one place
``Cache.stats.__doc__``, ``describe()`` and the Prometheus help strings take them from),
and the helpers that turn counters and FDP snapshots into since-open, window and lifetime
figures. No state, no I/O.

The surprise: "lifetime" is two lifetimes. The engines' counters (bytes written, inserts,
...) live in the warm-restart metadata, so they run from the cache's format across clean
restarts and start again after a crash (a cold start); the FDP counters (HBMW, MBMW, MBE)
are the device's own and run from its manufacture (or the emulated SSD's creation).
"""
from __future__ import annotations

import textwrap
from typing import Any

from engines.navy import COUNTERS as ROUTER_COUNTERS

AVAILABLE = "available"
NO_SETS = "no item bytes set yet since open"
NO_WRITES = {"since_open": "no writes yet since open", "window": "no writes in the window",
             "lifetime": "no writes yet"}

_ROUTER = {
    "lookups": "flash lookups", "hits": "flash lookups that found the item",
    "misses": "flash lookups that found nothing",
    "inserts": "items offered to flash (demotions that passed the size check)",
    "admission_rejects": "items the admission policy kept off flash", "too_large": "items too large for flash",
    "removes": "flash removes (a set, delete or touch of a key flash may hold)",
    "removed": "flash removes that found the key",
}
_WAF_SPAN = {"since_open": "since open", "window": "over the window", "lifetime": "over the device's life"}


def _waf_figures(span: str) -> dict[str, str]:
    when = _WAF_SPAN[span]
    what = "its counters" if span == "lifetime" else "deltas"
    ratio = "MBMW / HBMW" if span == "lifetime" else "ΔMBMW / ΔHBMW"
    return {
        f"{span}.device_waf": (f"device write amplification {when} from the device's counters (FDP Statistics "
                               f"log, LID 0x22): {ratio}"),
        f"{span}.device_waf.value": f"{ratio} {when}; None unless status is available",
        f"{span}.device_waf.status": (f'"available"; "{NO_WRITES[span]}" (HBMW did not move); or "unavailable: '
                                      '<why>" when the device cannot report media writes (no FDP log, no permission)'),
        f"{span}.device_waf.hbmw": f"host bytes with metadata written (HBMW) {when} ({what})",
        f"{span}.device_waf.mbmw": (f"media bytes with metadata written (MBMW) {when} ({what}): host writes "
                                    "plus garbage-collection copies"),
        f"{span}.device_waf.mbe": f"media bytes erased (MBE) {when} ({what})",
    }


FIGURES: dict[str, str] = {
    # -- now
    "start": 'how the flash cache came up at open: "warm", "cold: <why>" or "formatted: <why>"',
    "recovery": ("how BlockCache came back after a crash (the numbers are also in start), and its checkpoints "
                 "since open"),
    "recovery.crash": "whether this open recovered BlockCache after a crash (checkpoint + log replay)",
    "recovery.bytes_read": ("bytes the crash recovery read (the checkpoint, one block per region, the tombstone "
                            "journal, then the regions written since the checkpoint); 0 without one"),
    "recovery.seconds": "seconds the recovery took at open (engines' recovery and replay); None without one",
    "recovery.regions_replayed": "regions the crash recovery replayed (written after its checkpoint)",
    "recovery.entries_replayed": "log entries (items, tombstones, markers) the crash recovery replayed",
    "recovery.checkpoints": "index checkpoints written since open (periodic, before reclaiming an unsaved "
                            "region, and at close)",
    "recovery.checkpoints_skipped": ("checkpoints skipped since open because they did not fit their slot (half "
                                     "the metadata area; raise cache.flash.metadata_fraction)"),
    "placement": ('FDP placement per engine: {"state": "on", "pid": n} (writes carry placement identifier n) or '
                  '{"state": "off", "reason": why}'),
    "items": "items held now, by tier (dram, flash)",
    "items.dram": "items held in the DRAM tier now (exact)",
    "items.flash": ("items held on flash now: BlockCache's index entries plus BigHash's kept count, expired "
                    "items not yet dropped included; exact when items.flash_exact, else an estimate "
                    "(BigHash after a cold start, a corrupt bucket or a failed bucket write)"),
    "items.flash_exact": "whether items.flash is exact (see items.flash)",
    "bytes": "bytes of keys and values held now, by tier (flash: None, the engines do not count them)",
    "write_through": ('cache.write_through: false (a set reaches flash when DRAM evicts it), true (every set and '
                      'delete is written to the device before it returns: survives a process crash) or "sync" '
                      "(and flushed to stable media before it returns: survives a power loss)"),
    # -- since open
    "since_open": "figures counted from zero at this open of the cache",
    "since_open.seconds": "seconds since this open, by the cache's clock",
    "since_open.gets": "get operations since open (a get_many counts each key)",
    "since_open.sets": "set operations since open",
    "since_open.deletes": "delete operations since open",
    "since_open.touches": "touch operations since open",
    "since_open.misses": "gets answered by no tier since open",
    "since_open.hits": "gets answered since open, by tier (dram, flash)",
    "since_open.hit_ratio": "hits / gets since open; None before any get",
    "since_open.promotions": "flash hits copied into the DRAM tier since open",
    "since_open.demotions": "items the DRAM tier evicted and offered to flash since open",
    "since_open.demotions_skipped_clean": "DRAM evictions of items flash already held (nothing written) since open",
    "since_open.demotions_written_back": "DRAM evictions of promoted items whose flash copy flash had evicted "
                                         "meanwhile (as the engines' indexes and bloom filters tell, without I/O), "
                                         "so they were written again (counted in demotions too), since open",
    "since_open.demotions_raced": "DRAM evictions not written to flash because another thread changed the key "
                                  "first (KeyOrder), since open",
    "since_open.promotions_raced": "flash hits not put in DRAM because the key changed, or was being changed, "
                                   "during the lookup, since open",
    "since_open.syncs": ('device flushes (fdatasync, or an NVMe Flush) a change waited for before it returned, '
                         'since open: one per set, delete, touch, read-modify-write and clear() with '
                         'write_through = "sync", else 0'),
    "since_open.item_bytes_set": "bytes of keys and values the application set since open",
    "since_open.flash": "the flash router's counters since open",
    **{f"since_open.flash.{k}": f"{v} since open" for k, v in _ROUTER.items()},
    "since_open.device_bytes_written": "bytes the flash engines wrote to the device since open, by engine",
    "since_open.app_write_amplification": ("application write amplification since open: bytes the engines wrote "
                                           "(since_open.device_bytes_written, all engines) / "
                                           "since_open.item_bytes_set"),
    "since_open.app_write_amplification.value": "the ratio; None unless status is available",
    "since_open.app_write_amplification.status": f'"available", or "{NO_SETS}"',
    **_waf_figures("since_open"),
    # -- window
    "window": "figures over the last cache.waf_window seconds",
    "window.seconds": "how many seconds the window covers (less than cache.waf_window just after open)",
    **_waf_figures("window"),
    # -- lifetime
    "lifetime": ("figures that persist: the engines' since the cache was formatted (kept across clean restarts, "
                 "begun anew by a cold start), the device's since it was made"),
    "lifetime.flash": "the flash router's counters since the cache was formatted",
    **{f"lifetime.flash.{k}": f"{v} since the cache was formatted" for k, v in _ROUTER.items()},
    "lifetime.device_bytes_written": "bytes the flash engines wrote to the device since the cache was formatted, "
                                     "by engine",
    **_waf_figures("lifetime"),
    # -- the layers' own stats
    "dram": "the DRAM tier's own stats (since open)",
    "flash": "the Navy router's and engines' own stats (counters lifetime, as lifetime.flash)",
    "device": "the device's own stats (counters since the device was opened)",
}


def describe(path: str | None = None) -> str | dict[str, str]:
    """The description of one figure of ``Cache.stats()`` by its dotted path
    (``describe("since_open.device_waf")``), or all of them as {path: description}."""
    if path is None:
        return dict(FIGURES)
    try:
        return FIGURES[path]
    except KeyError:
        raise KeyError(f"flashcache.stats.describe: no figure {path!r}; the figures are: "
                       + ", ".join(FIGURES)) from None


def doc(width: int = 80) -> str:
    """The figures as text, for ``Cache.stats.__doc__``."""
    return "\n".join(textwrap.fill(f"* ``{path}``: {text}", width, subsequent_indent="  ")
                     for path, text in FIGURES.items())


def ratio(num: int, den: int, empty: str) -> dict[str, Any]:
    """``{"value": num / den, "status": "available"}``, or value None and ``empty`` as the
    status when ``den`` is 0."""
    return {"value": num / den, "status": AVAILABLE} if den > 0 else {"value": None, "status": empty}


def waf(new: Any, old: Any, empty: str) -> dict[str, Any]:
    """Device WAF between two FDP snapshots (``old`` None: since the device was made)."""
    d = {k: getattr(new, k) - (getattr(old, k) if old is not None else 0) for k in ("hbmw", "mbmw", "mbe")}
    return {**ratio(d["mbmw"], d["hbmw"], empty), **d}


def waf_unavailable(why: str) -> dict[str, Any]:
    return {"value": None, "status": f"unavailable: {why}", "hbmw": None, "mbmw": None, "mbe": None}


def delta(now: dict[str, int], then: dict[str, int]) -> dict[str, int]:
    """Counter by counter, ``now - then`` (a counter absent then counts from 0)."""
    return {k: v - then.get(k, 0) for k, v in now.items()}


def flash_lifetime(flash: dict[str, Any]) -> dict[str, Any]:
    """From ``Navy.stats()``: the lifetime figures the cache also reports since open (by
    subtracting what they were at open): the router's counters and each engine's bytes
    written (0 for an engine the layout has not)."""
    return {"flash": {k: flash[k] for k in ROUTER_COUNTERS},
            "device_bytes_written": {e: flash[e]["device_bytes_written"] if flash[e] else 0 for e in flash["engines"]}}


def flash_items(flash: dict[str, Any]) -> tuple[int | None, bool]:
    """From ``Navy.stats()``: (items on flash, whether that is exact); None when an engine
    does not know its count."""
    engines = [flash[e] for e in flash["engines"] if flash[e]]
    counts = [e["items"] for e in engines]
    return (None if None in counts else sum(counts)), all(e["items_exact"] for e in engines)
