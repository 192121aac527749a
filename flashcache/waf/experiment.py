"""One write-amplification experiment (``flashcache waf run``): a cache on a device, a
workload, a warm-up judged from the data, then measurement windows.

Owns the run: building the config of one point (FDP on or off, utilisation, BigHash share,
handle type, region trim), a fresh device, the loop of windows, the steadiness rule, and
the result (terminal table, CSV and JSON stamped with the config, the device's geometry
and the seed). It drives the cache only through its public API (flashcache.workload).

The surprise: a few device writes are far from steady. BlockCache gets only part of the
host bytes, so its log wraps slowly, and a conventional FTL reads WAF near 1 until its
spare is used up and then climbs for several more device writes. So warm-up ends only
when the data says so: BlockCache's log has wrapped ``min_wraps`` times, the FTL has
erased at least a device's worth, and the WAF of the last ``steady_windows`` windows
agrees within ``tolerance`` with that of the windows before them; past ``max_warmup`` the
run measures anyway and says it was not steady.
"""
from __future__ import annotations

import copy
import csv
import dataclasses
import json
import logging
import math
import os
import platform
import sys
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from .. import config as config_mod
from ..errors import ConfigError

log = logging.getLogger("flashcache.waf")

# The experiment's default device and cache (config/waf.toml says the same in TOML; a test
# keeps them equal): the emulated FDP SSD with 8 initially isolated handles, 1 RG, 144
# reclaim units of 8 MiB (12 % OP), and BlockCache regions 32 times smaller than an RU.
DEFAULT_CONFIG: dict[str, Any] = {
    "device": {"kind": "emulated", "path": "device.img",
               "emulator": {"capacity": "1GiB", "preset": "qemu-like", "lba_size": 4096, "ru_size": "8MiB",
                            "op": 0.12, "handles": 8, "handle_type": "II", "reclaim_groups": 1}},
    "cache": {"dram_size": "8MiB",
              "flash": {"bighash_fraction": 0.04, "region_size": "256KiB", "small_item_max": "2KiB"}},
    "log": {"level": "error"},
}


@dataclass(frozen=True)
class Rules:
    """When warm-up ends and how much is measured. Lengths are in device writes: host
    bytes over the device's capacity (the cache's share and the rest)."""

    window: float = 1.0          # one window, in device writes
    windows: int = 5             # measurement windows after warm-up
    min_wraps: float = 2.0       # BlockCache's log must have wrapped this often
    tolerance: float = 0.01      # WAF of two consecutive blocks of windows within this (relative)
    steady_windows: int = 3      # windows per block
    max_warmup: float = 40.0     # device writes of warm-up at most; then measure anyway
    max_seconds: float = 0.0     # wall-clock limit for the whole run (0: none)

    def check(self) -> None:
        bad = []
        if not self.window > 0:
            bad.append(f"window = {self.window}: use device writes above 0, e.g. 1.0")
        if self.windows < 1:
            bad.append(f"windows = {self.windows}: measure at least 1 window")
        if self.min_wraps < 0 or self.tolerance <= 0 or self.steady_windows < 1:
            bad.append("min_wraps >= 0, tolerance > 0 and steady_windows >= 1, please")
        if self.max_warmup < 0 or self.max_seconds < 0:
            bad.append("max_warmup and max_seconds cannot be negative")
        if bad:
            raise ConfigError(*(f"waf run: {b}" for b in bad))


@dataclass(frozen=True)
class Point:
    """What one run sets on top of the config (None: as the config says)."""

    fdp: bool | None = None               # placement on or off
    utilization: float | None = None      # the cache's share of the device
    bighash_fraction: float | None = None
    handle_type: str | None = None        # "II" or "PI" (emulated SSD)
    trim: bool | None = None              # BlockCache deallocates each region it reclaims

    def label(self) -> str:
        parts = []
        if self.fdp is not None:
            parts.append(f"fdp-{'on' if self.fdp else 'off'}")
        if self.utilization is not None:
            parts.append(f"util-{self.utilization * 100:g}")
        if self.bighash_fraction is not None:
            parts.append(f"bighash-{self.bighash_fraction * 100:g}")
        if self.handle_type is not None:
            parts.append(self.handle_type.lower())
        if self.trim is not None:
            parts.append("trim" if self.trim else "notrim")
        return "_".join(parts) or "as-configured"


def _set(d: dict, path: str, value: Any) -> None:
    *head, last = path.split(".")
    for k in head:
        d = d.setdefault(k, {})
        if not isinstance(d, dict):
            raise ConfigError(f"waf run: {path}: the config has a value where a table is needed")
    d[last] = value


def config_data(source: str | Path | None) -> tuple[dict[str, Any], str, Path | None]:
    """(the config as a dict, its name, the folder relative paths start at)."""
    if source is None:
        return copy.deepcopy(DEFAULT_CONFIG), "<waf defaults>", None
    p = Path(source)
    try:
        return tomllib.loads(p.read_text()), str(p), p.parent
    except FileNotFoundError:
        raise ConfigError(f"{p}: config file not found") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{p}: not valid TOML: {e}") from None


def point_config(data: dict[str, Any], point: Point, source: str, base_dir: Path | None,
                 scratch: Path, notes: list[str] | None = None) -> config_mod.Config:
    """The validated config of one point. An emulated SSD always starts afresh in
    ``scratch`` (its path in the config is not used: an experiment needs a new drive).

    Persistently isolated handles each need a GC frontier of their own, so 8 of them may
    not fit a drive's spare RUs where 8 initially isolated ones do; then the point uses as
    many as fit (at least 3: the default handle and one per engine) and says so in
    ``notes``."""
    d = copy.deepcopy(data)
    kind = d.get("device", {}).get("kind", "emulated")
    if point.fdp is not None:
        _set(d, "device.emulator.fdp" if kind == "emulated" else "device.placement", point.fdp)
    if point.utilization is not None:
        _set(d, "device.utilization", point.utilization)
    if point.bighash_fraction is not None:
        _set(d, "cache.flash.bighash_fraction", point.bighash_fraction)
    if point.handle_type is not None:
        if kind != "emulated":
            raise ConfigError(f"waf run: handle type {point.handle_type}: a real drive's handle types are fixed by "
                              "its FDP configuration (choose one with nvme-cli); this sets the emulated SSD's")
        _set(d, "device.emulator.handle_type", point.handle_type)
    if point.trim is not None:
        _set(d, "cache.flash.trim_on_reclaim", point.trim)
    if kind == "emulated":
        _set(d, "device.path", str(scratch / "device.img"))
        _set(d, "device.format", True)
    try:
        return config_mod.from_dict(d, source, base_dir)
    except ConfigError as e:
        if point.handle_type != "PI" or not any("spare reclaim units" in x for x in e.errors):
            raise
        asked = d["device"]["emulator"].get("handles") or 8
        for n in range(asked - 1, 2, -1):
            d["device"]["emulator"]["handles"] = n
            try:
                cfg = config_mod.from_dict(d, source, base_dir)
            except ConfigError:
                continue
            if notes is not None:
                notes.append(f"{asked} persistently isolated handles need more spare reclaim units than the "
                             f"drive has (each keeps its own GC frontier): this point uses {n}")
            return cfg
        raise


# -- the device ---------------------------------------------------------------------------------

def describe_device(dev, cfg: config_mod.Config) -> dict[str, Any]:
    """Geometry and OP as the report states them (a real drive does not report its OP)."""
    region = cfg.cache.flash.region_size
    out: dict[str, Any] = {"kind": dev.kind, "path": dev.path, "capacity_bytes": dev.capacity,
                           "cache_bytes": dev.size, "utilization": dev.size / dev.capacity,
                           "region_bytes": region}
    ftl = getattr(dev, "ftl", None)
    if ftl is not None:
        g = ftl.geometry
        out.update(ru_bytes=g.ru_bytes, reclaim_units=g.nru, reclaim_groups=g.nrg,
                   handles=len(g.handles), handle_types=sorted(set(g.handles)), op=g.op_actual,
                   op_convention="(physical - exported) / exported", physical_bytes=g.physical_pages * g.page_bytes,
                   gc_policy=g.gc_policy, gc_reserve_rus=g.gc_reserve_rus, fdp=g.fdp, lba_size=g.lba_size,
                   waf_source=dev.waf_source(), describe=g.describe())
    else:
        info = dev.info() if hasattr(dev, "info") else {}
        out.update(ru_bytes=info.get("reclaim_unit_bytes"), reclaim_units=None,
                   reclaim_groups=info.get("reclaim_groups"), handles=info.get("handles"),
                   handle_types=info.get("handle_types"), op=None, fdp=info.get("fdp_enabled"),
                   lba_size=info.get("lba_size"), model=info.get("model"),
                   waf_source="FDP Statistics log (LID 0x22)",
                   describe=f"{info.get('model', dev.kind)}: {dev.capacity / 2**30:.2f} GiB, "
                            f"RU {(info.get('reclaim_unit_bytes') or 0) / 2**20:g} MiB, "
                            f"{info.get('reclaim_groups')} RG, {info.get('handles')} handles, OP not reported")
    ru = out.get("ru_bytes")
    out["region_to_ru"] = region / ru if ru else None
    return out


def _fresh(dev) -> None:
    """Deallocate the whole device once: the experiment's format, so a real drive starts
    like a fresh one (nothing left live from earlier use) and the cache formats itself."""
    dev.trim(0, dev.size)
    dev.deallocate_unused()


# -- the run --------------------------------------------------------------------------------------

@dataclass
class Window:
    index: int
    phase: str                  # "warmup" or "measure"
    device_writes: float        # host bytes so far / capacity, at the window's end
    host_bytes: int             # HBMW delta
    media_bytes: int            # MBMW delta
    erased_bytes: int           # MBE delta
    waf: float | None
    app_wa: float | None        # device bytes the cache wrote / item bytes set
    hit_ratio: float | None
    ops: int
    ops_per_s: float
    seconds: float
    bighash_bytes: int          # host bytes of each engine
    blockcache_bytes: int
    blockcache_wraps: float     # regions written / regions, so far

    def row(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class Result:
    out_dir: Path
    meta: dict[str, Any]
    windows: list[Window] = field(default_factory=list)
    warmup: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    interrupted: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {**self.meta, "warmup": self.warmup, "summary": self.summary, "interrupted": self.interrupted,
                "windows": [w.row() for w in self.windows]}


def _waf_of(ws: list[Window]) -> float | None:
    h = sum(w.host_bytes for w in ws)
    return sum(w.media_bytes for w in ws) / h if h else None


def steadiness(windows: list[Window], wraps: float, erased: int, host: int, capacity: int,
               rules: Rules, has_blockcache: bool) -> list[str]:
    """What still keeps warm-up going (empty: steady). The WAF test compares the last
    ``steady_windows`` windows with the ones just before them, as blocks (media bytes over
    host bytes of each): single windows of a few hundred RUs swing by a few per cent as
    the log and GC drift in and out of phase, which is noise, not warm-up."""
    why = []
    if has_blockcache and wraps < rules.min_wraps:
        why.append(f"BlockCache wrapped {wraps:.2f} of {rules.min_wraps:g} times")
    if erased < capacity and not (erased == 0 and host >= 3 * capacity):
        # a drive that reports no erases (QEMU) is taken as reclaimed after 3 device writes
        why.append(f"the FTL erased {erased / capacity:.2f} of 1 device's worth")
    k = rules.steady_windows
    if len(windows) < 2 * k:
        why.append(f"{len(windows)} of {2 * k} windows")
    else:
        a, b = _waf_of(windows[-2 * k:-k]), _waf_of(windows[-k:])
        if a is None or b is None:
            why.append("no host writes in a window")
        elif abs(b / a - 1) > rules.tolerance:
            why.append(f"the last {k} windows' WAF {b:.3f} differs from the {k} before ({a:.3f}) by "
                       f"{abs(b / a - 1):.1%} (> {rules.tolerance:.1%})")
    return why


def batches(workload, cache_bytes: int) -> tuple[Iterator, dict[str, Any], Any]:
    """(batches, the workload as reported, the trace reader or None)."""
    from ..workload import Generator, TraceReader, WorkloadSpec
    if isinstance(workload, WorkloadSpec):
        spec = workload.bind(cache_bytes)
        return Generator(spec).batches(), {"kind": "generator", **spec.as_dict(), "describe": spec.describe()}, None
    reader = TraceReader(workload["path"], loop=workload.get("loop", True))
    return reader.batches(), {"kind": "trace", "path": str(workload["path"]), "loop": reader.loop,
                              "cache_aside": workload.get("cache_aside", True)}, reader


def run(data: dict[str, Any], source: str, base_dir: Path | None, point: Point, workload, rules: Rules,
        out_dir: Path, *, progress: bool = True, echo: Callable[[str], None] | None = print,
        keep_device: bool = False, scratch: Path | None = None) -> Result:
    """One experiment; writes ``out_dir``/run.json and windows.csv and returns the Result.
    ``workload`` is a WorkloadSpec or {"path": trace, "loop": bool}; an emulated SSD lives
    in ``scratch`` (default ``out_dir``) and is deleted afterwards unless ``keep_device``.
    Ctrl-C ends the run early and keeps the windows done so far (``interrupted``)."""
    from ..cache import Cache
    from ..devices import open_device
    from ..workload import VirtualClock

    rules.check()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    scratch = Path(scratch) if scratch is not None else out_dir
    scratch.mkdir(parents=True, exist_ok=True)
    notes: list[str] = []
    cfg = point_config(data, point, source, base_dir, scratch, notes)
    if cfg.device.kind == "emulated":
        for p in (cfg.device.path, cfg.device.path + ".ftl"):
            if os.path.exists(p):
                os.unlink(p)
    if cfg.device.kind != "emulated" and not cfg.device.format:
        raise ConfigError(f"{source}: waf run deallocates the whole of {cfg.device.path} first, so the drive "
                          "starts as a fresh one (its data is lost); set format = true in [device] to allow it")
    t_start = time.time()
    dev = open_device(cfg.device)
    clock = VirtualClock()
    result = Result(out_dir, {})
    try:
        reason = dev.waf_unavailable_reason()
        if reason is not None:
            raise ConfigError(f"{source}: waf run needs the device's media writes, and {dev.path} cannot "
                              f"report them: {reason}")
        _fresh(dev)
        cache = Cache(cfg, device=dev, clock=clock)
        try:
            result = _loop(cache, dev, cfg, point, workload, rules, out_dir, clock, source, t_start,
                           progress, echo, notes)
        finally:
            cache.close()
    finally:
        dev.close()
        if cfg.device.kind == "emulated" and not keep_device:
            for p in (cfg.device.path, cfg.device.path + ".ftl"):
                if os.path.exists(p):
                    os.unlink(p)
    return result


def _snapshot(dev) -> tuple[int, int, int]:
    s = dev.waf_snapshot()
    return s.hbmw, s.mbmw, s.mbe


def _loop(cache, dev, cfg, point: Point, workload, rules: Rules, out_dir: Path, clock, source: str,
          t_start: float, progress: bool, echo, notes: list[str]) -> Result:
    from ..workload import Driver, WorkloadSpec

    navy = cache.navy
    it, wl, reader = batches(workload, dev.size)
    aside = workload.cache_aside if isinstance(workload, WorkloadSpec) else workload.get("cache_aside", True)
    drv = Driver(cache, clock, cache_aside=aside, check_sizes=isinstance(workload, WorkloadSpec))
    capacity = dev.capacity
    window_bytes = int(rules.window * capacity)
    nregions = navy.blockcache.nregions if navy.blockcache else 0
    meta = {
        "tool": "flashcache waf run", "command": sys.argv, "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "host": platform.node(), "python": platform.python_version(),
        "config_source": source, "config": dataclasses.asdict(cfg), "point": dataclasses.asdict(point),
        "label": point.label(), "workload": wl, "seed": wl.get("seed"), "rules": dataclasses.asdict(rules),
        "device": describe_device(dev, cfg),
        "layout": navy.layout["engines"],   # per engine: offset, size and its own geometry
        "notes": notes,
    }
    res = Result(out_dir, meta)
    if echo:
        echo(_header(meta))
    bar = _bar(progress, rules)

    def engine_bytes() -> tuple[int, int]:
        per = dev.io_counts()["bytes_written_by_stream"]
        return per.get("bighash", 0), per.get("blockcache", 0)

    def wraps() -> float:
        return navy.blockcache.stats()["region_writes"] / nregions if nregions else 0.0

    def written() -> int:
        return dev.io_counts()["bytes_written"]

    prev = _snapshot(dev)
    base_host, base_mbe = prev[0], prev[2]
    warm_t0 = time.perf_counter()
    warm: dict[str, Any] = {}
    measuring = False
    n_measured = 0
    prev_counts = drv.counts.copy()
    prev_written = written()
    prev_eng = engine_bytes()
    t_prev = time.perf_counter()
    deadline = time.perf_counter() + rules.max_seconds if rules.max_seconds else math.inf
    try:
        while True:
            goal = prev_written + window_bytes
            ended = False
            while written() < goal:
                batch = next(it, None)
                if batch is None:           # a trace without --loop ran out
                    ended = True
                    break
                drv.apply(batch)
                if time.perf_counter() > deadline:
                    break
                if bar is not None:
                    bar.update_to((written() - base_host) / capacity)
            snap = _snapshot(dev)
            now = time.perf_counter()
            c = drv.counts.minus(prev_counts)
            eng = engine_bytes()
            dh, dm, de = snap[0] - prev[0], snap[1] - prev[1], snap[2] - prev[2]
            cache_bytes = written() - prev_written
            w = Window(index=len(res.windows), phase="measure" if measuring else "warmup",
                       device_writes=(snap[0] - base_host) / capacity, host_bytes=dh, media_bytes=dm,
                       erased_bytes=de, waf=dm / dh if dh else None,
                       app_wa=cache_bytes / c.item_bytes_set if c.item_bytes_set else None,
                       hit_ratio=c.hit_ratio, ops=c.ops, ops_per_s=c.ops / (now - t_prev) if now > t_prev else 0.0,
                       seconds=now - t_prev, bighash_bytes=eng[0] - prev_eng[0], blockcache_bytes=eng[1] - prev_eng[1],
                       blockcache_wraps=wraps())
            res.windows.append(w)
            prev, prev_counts, prev_written, prev_eng, t_prev = snap, drv.counts.copy(), written(), eng, now
            if bar is not None:
                bar.window(w, measuring)
            if now > deadline or ended:
                res.interrupted = not ended     # a trace's end is the end of the run
                res.summary["stopped"] = (f"max_seconds = {rules.max_seconds:g} reached" if not ended else
                                          "the trace ended (replay it again with loop)")
                break
            if measuring:
                n_measured += 1
                if n_measured >= rules.windows:
                    break
                continue
            erased = snap[2] - base_mbe
            why = steadiness(res.windows, w.blockcache_wraps, erased, snap[0] - base_host, capacity, rules,
                             nregions > 0)
            dw = (snap[0] - base_host) / capacity
            if not why or dw >= rules.max_warmup:
                warm = {"device_writes": dw, "seconds": now - warm_t0, "windows": len(res.windows),
                        "steady": not why, "why_not": why, "blockcache_wraps": w.blockcache_wraps}
                measuring = True
                if bar is not None:
                    bar.measuring(len(res.windows), rules.windows)
    except KeyboardInterrupt:
        res.interrupted = True
        res.summary["stopped"] = "interrupted (Ctrl-C): the windows done so far are kept"
    finally:
        if bar is not None:
            bar.close()
    res.warmup = warm or {"device_writes": (prev[0] - base_host) / capacity, "seconds": time.perf_counter() - warm_t0,
                          "windows": len(res.windows), "steady": False, "why_not": ["the run ended during warm-up"]}
    res.summary.update(_summary(res, drv, reader, t_start))
    write_outputs(res)
    if echo:
        echo(table(res))
    return res


def _summary(res: Result, drv, reader, t_start: float) -> dict[str, Any]:
    m = [w for w in res.windows if w.phase == "measure"] or []
    s: dict[str, Any] = {"measured_windows": len(m), "elapsed_seconds": time.time() - t_start,
                         "counts": dataclasses.asdict(drv.counts)}
    if reader is not None:
        s["trace"] = reader.report()
    if m:
        h = sum(w.host_bytes for w in m)
        md = sum(w.media_bytes for w in m)
        ops = sum(w.ops for w in m)
        secs = sum(w.seconds for w in m)
        hits = [w.hit_ratio for w in m if w.hit_ratio is not None]
        app = [w.app_wa for w in m if w.app_wa is not None]
        bh = sum(w.bighash_bytes for w in m)
        bc = sum(w.blockcache_bytes for w in m)
        s.update(waf=md / h if h else None, host_bytes=h, media_bytes=md,
                 waf_min=min(w.waf for w in m if w.waf), waf_max=max(w.waf for w in m if w.waf),
                 app_wa=sum(app) / len(app) if app else None,
                 hit_ratio=sum(hits) / len(hits) if hits else None, ops_per_s=ops / secs if secs else None,
                 bighash_share_of_host_writes=bh / (bh + bc) if bh + bc else None)
    return s


# -- output ------------------------------------------------------------------------------------

CSV_FIELDS = [f.name for f in dataclasses.fields(Window)]


def write_outputs(res: Result) -> None:
    res.out_dir.mkdir(parents=True, exist_ok=True)
    with open(res.out_dir / "windows.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CSV_FIELDS)
        w.writeheader()
        for win in res.windows:
            w.writerow(win.row())
    tmp = res.out_dir / "run.json.tmp"
    tmp.write_text(json.dumps(res.as_dict(), indent=2, default=str))
    os.replace(tmp, res.out_dir / "run.json")


def _mib(n: float | None) -> str:
    return "?" if n is None else f"{n / 2**20:g} MiB"


def _header(meta: dict[str, Any]) -> str:
    d = meta["device"]
    wl = meta["workload"]
    bh = meta["config"]["cache"]["flash"]["bighash_fraction"]
    lines = [f"device    {d['describe']}",
             f"cache     {d['cache_bytes'] / 2**20:.0f} MiB of {d['capacity_bytes'] / 2**20:.0f} MiB "
             f"(utilisation {d['utilization']:.0%}), BigHash {bh if isinstance(bh, str) else f'{bh:.0%}'}, "
             f"region {_mib(d['region_bytes'])} vs RU {_mib(d['ru_bytes'])}"
             + (f" (1:{1 / d['region_to_ru']:g})" if d.get("region_to_ru") else ""),
             f"point     {meta['label']}",
             f"workload  {wl.get('describe') or wl.get('path')}",
             f"WAF from  {d['waf_source']}"]
    lines += [f"note      {n}" for n in meta.get("notes", [])]
    return "\n".join(lines)


def table(res: Result) -> str:
    """The windows and the result as a terminal table."""
    out = [f"{'win':>3} {'phase':7} {'DW':>6} {'host MiB':>9} {'media MiB':>9} {'WAF':>6} {'app WA':>6} "
           f"{'hit':>6} {'ops/s':>8} {'BC wraps':>8}"]
    for w in res.windows:
        out.append(f"{w.index:3d} {w.phase:7} {w.device_writes:6.2f} {w.host_bytes / 2**20:9.0f} "
                   f"{w.media_bytes / 2**20:9.0f} {_f(w.waf, 3):>6} {_f(w.app_wa, 2):>6} "
                   f"{_f(w.hit_ratio, 3):>6} {w.ops_per_s:8.0f} {w.blockcache_wraps:8.2f}")
    wu, s = res.warmup, res.summary
    if wu:
        out.append(f"warm-up   {wu['device_writes']:.1f} device writes in {wu['seconds']:.0f} s, "
                   + ("steady" if wu.get("steady") else "NOT steady: " + "; ".join(wu.get("why_not", []))))
    if s.get("waf") is not None:
        out.append(f"result    WAF {s['waf']:.3f} over {s['measured_windows']} windows "
                   f"({s['waf_min']:.3f}-{s['waf_max']:.3f}), app WA {_f(s['app_wa'], 2)}, hit ratio "
                   f"{_f(s['hit_ratio'], 3)}, {s['ops_per_s']:.0f} ops/s, BigHash "
                   f"{_f(s['bighash_share_of_host_writes'], 2)} of host writes")
    elif res.windows:
        out.append(f"result    none: the run stopped during warm-up (the last window's WAF: "
                   f"{_f(res.windows[-1].waf, 3)})")
    if s.get("stopped"):
        out.append(f"stopped   {s['stopped']}")
    if s.get("trace"):
        t = s["trace"]
        out.append(f"trace     {t['lines']} lines, {t['ops']} ops, {t['malformed']} malformed, "
                   f"{t['unknown_op']} unknown operations {t['unknown_ops'] or ''}")
    out.append(f"output    {res.out_dir}/run.json, windows.csv")
    return "\n".join(out)


def _f(x: float | None, nd: int) -> str:
    return "-" if x is None else f"{x:.{nd}f}"


class _Bar:
    """tqdm in device writes: warm-up's length is unknown, so the total grows with it."""

    def __init__(self, rules: Rules):
        from tqdm import tqdm
        self.rules = rules
        self.t = tqdm(total=(2 * rules.steady_windows + rules.windows) * rules.window, unit="DW",
                      desc="warm-up", bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.1f}/{total:.1f} DW "
                      "[{elapsed}<{remaining}{postfix}]", file=sys.stderr, leave=False)

    def update_to(self, dw: float) -> None:
        if dw - self.t.n >= 0.02:
            self.t.total = max(self.t.total, dw)      # a window ends after its last batch
            self.t.update(dw - self.t.n)

    def window(self, w: Window, measuring: bool) -> None:
        if not measuring:       # warm-up goes on: at least one more window, then the measured ones
            self.t.total = max(self.t.total, w.device_writes + self.rules.window * (1 + self.rules.windows))
        self.t.set_postfix_str(f"WAF {_f(w.waf, 3)}, {w.ops_per_s:.0f} ops/s")

    def measuring(self, done: int, windows: int) -> None:
        self.t.set_description_str("measure")
        self.t.total = self.t.n + windows * self.rules.window

    def close(self) -> None:
        self.t.close()


def _bar(progress: bool, rules: Rules) -> _Bar | None:
    return _Bar(rules) if progress else None
