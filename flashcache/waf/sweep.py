"""Sweeps of write-amplification experiments (``flashcache waf sweep``): many points, each
an independent run, in parallel processes here or on a Dask cluster, resumable.

Owns the grid (which points), running them (a process pool of up to the core count, or
``executor``: the address of a Dask distributed scheduler; we do not schedule anything
ourselves), resuming (a point whose run.json holds a finished run of the same settings is
not run again) and the summary table. The surprise: a point's job returns its whole
result to the client, which writes it into the sweep folder, so Dask workers need no
shared filesystem; only a trace replayed on another machine must exist there at the same
path.
"""
from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import multiprocessing
import os
import sys
import tempfile
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

from ..errors import ConfigError
from .experiment import Point, Rules

BASE = {"utilization": 1.0, "bighash_fraction": 0.04, "handle_type": "II", "trim": False}


@dataclass(frozen=True)
class Grid:
    """The values of each axis. ``design``: "one-at-a-time" varies one axis at a time with
    the others at their base value (BASE, or the axis's only value); "cross" takes every
    combination. FDP on and off are run for every point either way; the handle type only
    matters with FDP on (a conventional SSD has one write frontier)."""

    fdp: tuple[bool, ...] = (True, False)
    utilization: tuple[float, ...] = (0.5, 0.75, 0.9, 1.0)
    bighash_fraction: tuple[float, ...] = (0.04, 0.16, 0.32, 0.64)
    handle_type: tuple[str, ...] = ("II",)
    trim: tuple[bool, ...] = (False,)
    design: str = "one-at-a-time"

    def points(self) -> list[Point]:
        axes = {"utilization": self.utilization, "bighash_fraction": self.bighash_fraction,
                "handle_type": self.handle_type, "trim": self.trim}
        for name, vals in axes.items():
            if not vals:
                raise ConfigError(f"waf sweep: no values for {name}")
        combos: list[dict[str, Any]] = []
        if self.design == "cross":
            import itertools
            for vals in itertools.product(*axes.values()):
                combos.append(dict(zip(axes, vals)))
        elif self.design == "one-at-a-time":
            base = {n: (v[0] if len(v) == 1 else (BASE[n] if BASE[n] in v else v[0])) for n, v in axes.items()}
            for name, vals in axes.items():
                for v in vals:
                    combos.append({**base, name: v})
        else:
            raise ConfigError(f'waf sweep: design "{self.design}": use one-at-a-time or cross')
        out: list[Point] = []
        for fdp in self.fdp:
            for c in combos:
                if not fdp:             # handle types mean nothing without FDP
                    if c["handle_type"] != axes["handle_type"][0]:
                        continue
                    c = {**c, "handle_type": None}
                p = Point(fdp=fdp, **c)
                if p not in out:
                    out.append(p)
        return out


def point_key(data: dict[str, Any], point: Point, workload: Any, rules: Rules) -> str:
    """A fingerprint of everything that decides a point's result."""
    wl = dataclasses.asdict(workload) if dataclasses.is_dataclass(workload) else workload
    blob = json.dumps([data, dataclasses.asdict(point), wl, dataclasses.asdict(rules)], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def run_point(job: dict[str, Any]) -> dict[str, Any]:
    """One point, in a worker process (here or on a Dask worker): runs it in a temporary
    folder and returns the run's JSON and its windows' CSV text."""
    from . import experiment as ex
    point = Point(**job["point"])
    rules = Rules(**job["rules"])
    workload = job["workload"]
    if isinstance(workload, dict) and "path" not in workload:
        from ..workload.spec import WorkloadSpec, from_dict
        workload = from_dict({k: v for k, v in workload.items() if k not in ("source", "describe")},
                             workload.get("source", "<sweep>"))
        assert isinstance(workload, WorkloadSpec)
    base = Path(job["base_dir"]) if job["base_dir"] else None
    with tempfile.TemporaryDirectory(prefix="flashcache-waf-") as tmp:
        res = ex.run(job["data"], job["source"], base, point, workload, rules, Path(tmp), progress=False,
                     echo=None)
        d = res.as_dict()
        d["key"] = job["key"]
        d["worker"] = os.uname().nodename
        return {"run": d, "csv": (Path(tmp) / "windows.csv").read_text()}


def _finished(folder: Path, key: str) -> dict[str, Any] | None:
    f = folder / "run.json"
    if not f.exists():
        return None
    try:
        d = json.loads(f.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if d.get("key") != key or d.get("interrupted") or not d.get("summary", {}).get("measured_windows"):
        return None
    return d


def _save(folder: Path, out: dict[str, Any]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "windows.csv").write_text(out["csv"])
    tmp = folder / "run.json.tmp"
    tmp.write_text(json.dumps(out["run"], indent=2, default=str))
    os.replace(tmp, folder / "run.json")


class _DaskPool:
    """The few calls of a concurrent.futures executor we use, on a Dask distributed client."""

    def __init__(self, address: str):
        try:
            from distributed import Client
        except ImportError:
            raise ConfigError("waf sweep --executor needs Dask: pip install 'flashcache[cluster]'") from None
        self.client = Client(address)

    def submit(self, fn, job):
        return self.client.submit(fn, job, pure=False)

    def shutdown(self, cancel: bool = False) -> None:
        self.client.close()


def sweep(data: dict[str, Any], source: str, base_dir: Path | None, grid: Grid | list[Point], workload: Any,
          rules: Rules, out_dir: Path, *, jobs: int = 0, executor: str | None = None, progress: bool = True,
          echo: Callable[[str], None] | None = print) -> list[dict[str, Any]]:
    """Run every point of ``grid`` (or a list of points) not already done in ``out_dir``;
    write summary.csv and summary.json there and return the summary rows. ``jobs``:
    processes here (0: the core count); ``executor``: a Dask scheduler address
    ("tcp://host:8786") instead."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    points = grid.points() if isinstance(grid, Grid) else list(grid)
    wl = workload.as_dict() if hasattr(workload, "as_dict") else dict(workload)
    todo, done = [], {}
    for p in points:
        key = point_key(data, p, wl, rules)
        folder = out_dir / "points" / p.label()
        prev = _finished(folder, key)
        if prev is not None:
            done[p] = prev
        else:
            todo.append({"point": dataclasses.asdict(p), "rules": dataclasses.asdict(rules), "workload": wl,
                         "data": data, "source": source, "base_dir": str(base_dir) if base_dir else None,
                         "key": key})
    (out_dir / "sweep.json").write_text(json.dumps(
        {"source": source, "config": data, "workload": wl, "rules": dataclasses.asdict(rules),
         "grid": dataclasses.asdict(grid) if isinstance(grid, Grid) else None,
         "points": [p.label() for p in points]}, indent=2, default=str))
    if echo:
        echo(f"sweep     {len(points)} points: {len(done)} done before, {len(todo)} to run "
             f"({'on ' + executor if executor else f'{jobs or os.cpu_count()} processes here'}); output {out_dir}")
    failed: list[str] = []
    t0 = time.time()
    if todo:
        # forked (spawn would re-run a calling script that lacks a __main__ guard), all
        # workers at the first submissions, before tqdm starts its monitor thread
        pool = _DaskPool(executor) if executor else ProcessPoolExecutor(
            max_workers=min(jobs or os.cpu_count() or 1, len(todo)), mp_context=multiprocessing.get_context("fork"))
        futures = {pool.submit(run_point, j): j for j in todo}
        bar = None
        if progress:
            from tqdm import tqdm
            bar = tqdm(total=len(points), initial=len(done), unit="point", desc="sweep", file=sys.stderr)
        try:
            pending = set(futures)
            while pending:
                finished, pending = wait(pending, return_when=FIRST_COMPLETED) if not executor else _dask_wait(pending)
                for f in finished:
                    j = futures[f]
                    p = Point(**j["point"])
                    try:
                        out = f.result()
                    except Exception as e:          # one point's failure does not stop the others
                        failed.append(f"{p.label()}: {type(e).__name__}: {e}")
                        if echo:
                            echo(f"point     {p.label()} failed: {type(e).__name__}: {e}")
                    else:
                        _save(out_dir / "points" / p.label(), out)
                        done[p] = out["run"]
                        if echo and not progress:
                            s = out["run"]["summary"]
                            echo(f"point     {p.label()}: WAF {_f(s.get('waf'), 3)} ({time.time() - t0:.0f} s)")
                    if bar is not None:
                        bar.update(1)
        except KeyboardInterrupt:
            for f in futures:
                f.cancel()
            if echo:
                echo("sweep     interrupted: finished points are kept; run the same command to resume")
            raise
        finally:
            if bar is not None:
                bar.close()
            pool.shutdown(cancel=True) if executor else pool.shutdown(wait=True, cancel_futures=True)
    rows = [summary_row(done[p]) for p in points if p in done]
    write_summary(out_dir, rows, time.time() - t0, failed)
    if echo:
        echo(summary_table(rows))
        for f in failed:
            echo(f"failed    {f}")
    return rows


def _dask_wait(pending):
    from distributed import wait as dwait
    r = dwait(list(pending), return_when="FIRST_COMPLETED")
    return set(r.done), set(r.not_done)


def summary_row(run: dict[str, Any]) -> dict[str, Any]:
    p, s, w, d = run["point"], run["summary"], run["warmup"], run["device"]
    return {"label": run["label"], "fdp": p["fdp"], "utilization": d["utilization"],
            "bighash_fraction": run["config"]["cache"]["flash"]["bighash_fraction"],
            "handle_type": p["handle_type"] or "/".join(d.get("handle_types") or []), "trim": p["trim"],
            "waf": s.get("waf"), "waf_min": s.get("waf_min"), "waf_max": s.get("waf_max"),
            "app_wa": s.get("app_wa"), "hit_ratio": s.get("hit_ratio"), "ops_per_s": s.get("ops_per_s"),
            "bighash_share_of_host_writes": s.get("bighash_share_of_host_writes"),
            "warmup_device_writes": w.get("device_writes"), "warmup_seconds": w.get("seconds"),
            "steady": w.get("steady"), "measured_windows": s.get("measured_windows"),
            "seconds": s.get("elapsed_seconds")}


def write_summary(out_dir: Path, rows: list[dict[str, Any]], seconds: float, failed: Iterable[str] = ()) -> None:
    if rows:
        with open(out_dir / "summary.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
    (out_dir / "summary.json").write_text(json.dumps({"rows": rows, "seconds_this_time": seconds,
                                                      "failed": list(failed)}, indent=2))


def _f(x: Any, nd: int) -> str:
    return "-" if x is None else f"{x:.{nd}f}"


def summary_table(rows: list[dict[str, Any]]) -> str:
    n = max([len(r["label"]) for r in rows] + [5])
    out = [f"{'point':{n}} {'FDP':>4} {'util':>5} {'BigHash':>7} {'WAF':>6} {'range':>13} {'app WA':>6} "
           f"{'hit':>5} {'ops/s':>7} {'warm-up':>8} {'steady':>6}"]
    for r in rows:
        out.append(f"{r['label']:{n}} {'on' if r['fdp'] else 'off':>4} {r['utilization'] * 100:4.0f}% "
                   f"{r['bighash_fraction'] * 100:6.0f}% {_f(r['waf'], 3):>6} "
                   f"{_f(r['waf_min'], 3) + '-' + _f(r['waf_max'], 3):>13} {_f(r['app_wa'], 2):>6} "
                   f"{_f(r['hit_ratio'], 3):>5} {_f(r['ops_per_s'], 0):>7} "
                   f"{_f(r['warmup_device_writes'], 1) + ' DW':>8} {'yes' if r['steady'] else 'NO':>6}")
    return "\n".join(out)
