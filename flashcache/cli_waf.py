"""`flashcache waf`: write-amplification tools for researchers.

Owns argument parsing and output: ``waf validate`` (the emulator against the formulas;
flashcache.emulator.validate), ``waf run`` (one experiment on the whole stack;
flashcache.waf.experiment), ``waf sweep`` (many, in parallel; flashcache.waf.sweep) and
``waf plot`` (flashcache.waf.plot). Exit codes: 0 ok (a run that never became steady says
so in its report), 1 a validation point missed or a sweep point failed, 2 bad usage or
config, 130 interrupted.
"""
from __future__ import annotations

import argparse
import json
import sys


def _floats(s: str) -> tuple[float, ...]:
    try:
        v = tuple(float(x) for x in s.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{s!r}: give comma-separated numbers, e.g. 0.07,0.28") from None
    if any(x <= 0 for x in v):
        raise argparse.ArgumentTypeError(f"{s!r}: over-provisioning must be above 0")
    return v


def _ints(s: str) -> tuple[int, ...]:
    try:
        v = tuple(int(x) for x in s.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{s!r}: give comma-separated whole numbers, e.g. 64,256") from None
    if any(x < 1 for x in v):
        raise argparse.ArgumentTypeError(f"{s!r}: pages per RU must be at least 1")
    return v


def _policies(s: str) -> tuple[str, ...]:
    v = tuple(s.split(","))
    bad = [p for p in v if p not in ("greedy", "fifo", "cost-benefit")]
    if bad:
        raise argparse.ArgumentTypeError(f"{bad[0]!r}: use greedy, fifo (cost-benefit has no closed formula)")
    if "cost-benefit" in v:
        raise argparse.ArgumentTypeError("cost-benefit has no closed formula to validate against; use greedy or fifo")
    return v


def _share(s: str) -> float:
    """0.5, 50 or "50%" -> 0.5."""
    t = s.strip().rstrip("%")
    try:
        v = float(t)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{s!r}: give a share like 0.5 or 50%") from None
    if s.strip().endswith("%") or v > 1:
        v /= 100
    if not 0 < v <= 1:
        raise argparse.ArgumentTypeError(f"{s!r}: a share must be above 0 and at most 100 %")
    return v


def _onoff(s: str) -> bool:
    if s.lower() in ("on", "true", "1", "yes"):
        return True
    if s.lower() in ("off", "false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"{s!r}: use on or off")


def _add_rules(p) -> None:
    from .waf.experiment import Rules
    r = Rules()
    g = p.add_argument_group("warm-up and windows (lengths in device writes: host bytes / device capacity)")
    g.add_argument("--window", type=float, default=r.window, help=f"one window (default {r.window:g})")
    g.add_argument("--windows", type=int, default=r.windows, help=f"measured windows after warm-up (default {r.windows})")
    g.add_argument("--min-wraps", type=float, default=r.min_wraps,
                   help=f"BlockCache log wraps before warm-up may end (default {r.min_wraps:g})")
    g.add_argument("--tolerance", type=float, default=r.tolerance,
                   help=f"steady: WAF of the last windows vs the ones before, relative (default {r.tolerance:g})")
    g.add_argument("--steady-windows", type=int, default=r.steady_windows,
                   help=f"windows per block compared for steadiness (default {r.steady_windows})")
    g.add_argument("--max-warmup", type=float, default=r.max_warmup,
                   help=f"warm-up limit; measured anyway past it, marked not steady (default {r.max_warmup:g})")
    g.add_argument("--max-seconds", type=float, default=0.0, help="wall-clock limit for a run (default none)")


def _rules(args):
    from .waf.experiment import Rules
    return Rules(window=args.window, windows=args.windows, min_wraps=args.min_wraps, tolerance=args.tolerance,
                 steady_windows=args.steady_windows, max_warmup=args.max_warmup, max_seconds=args.max_seconds)


def _add_workload(p) -> None:
    g = p.add_argument_group("workload")
    g.add_argument("-w", "--workload", default="kvcache",
                   help="a preset (kvcache, write-only, twitter-like) or a workload TOML file (default kvcache)")
    g.add_argument("--trace", help="replay a Twitter cache-trace CSV file (plain, .gz or .zst) instead")
    g.add_argument("--no-loop", action="store_true", help="stop at the trace's end instead of replaying it again")
    g.add_argument("--no-cache-aside", action="store_true", help="a get that misses is not followed by a set")
    g.add_argument("--seed", type=int, help="the workload's seed (default: the preset's)")


def _workload(args):
    import dataclasses

    from .workload import load
    if args.trace:
        return {"path": args.trace, "loop": not args.no_loop, "cache_aside": not args.no_cache_aside}
    spec = load(args.workload)
    if args.seed is not None:
        spec = dataclasses.replace(spec, seed=args.seed)
    if args.no_cache_aside:
        spec = dataclasses.replace(spec, cache_aside=False)
    return spec


def add_parser(sub) -> None:
    p = sub.add_parser("waf", help="write amplification: experiments on the whole stack, and the emulator's validation")
    ws = p.add_subparsers(dest="waf_cmd", required=True)
    r = ws.add_parser("run", help="one experiment: a cache, a device, a workload; warm-up, then measured windows",
                      description="Runs a workload through the cache's public API on a device (by default the "
                                  "emulated FDP SSD of config/waf.toml), warms up until the device's WAF is "
                                  "steady, then measures windows: host and media bytes, device WAF (from the FDP "
                                  "Statistics log, or the emulator's FTL when FDP is off), application write "
                                  "amplification, hit ratio and ops/s. Writes run.json and windows.csv to the "
                                  "output folder. Ctrl-C keeps the windows done so far. The models and the "
                                  "published results: docs/waf-model.md.")
    r.add_argument("-c", "--config", help="a flashcache config whose device and cache to use (default: the "
                   "emulated SSD and cache of config/waf.toml); kind = nvme runs on a real FDP namespace")
    r.add_argument("--fdp", type=_onoff, help="placement on or off (default: as the config says; emulated: "
                   "FDP enabled or a conventional SSD; nvme: placement directives or none)")
    r.add_argument("--utilization", "-u", type=_share, help="the cache's share of the device, e.g. 0.5 or 50%%")
    r.add_argument("--bighash", type=_share, help="BigHash's share of the cache's flash, e.g. 4%%")
    r.add_argument("--handle-type", choices=("II", "PI"), help="emulated SSD: initially or persistently isolated handles")
    r.add_argument("--trim", type=_onoff, help="BlockCache deallocates each region it reclaims (on/off)")
    _add_workload(r)
    _add_rules(r)
    r.add_argument("-o", "--out", help="output folder (default var/waf/run-<point>-<time>)")
    r.add_argument("--keep-device", action="store_true", help="keep the emulated SSD's files afterwards")
    r.add_argument("--no-progress", action="store_true", help="no progress bar")

    sw = ws.add_parser("sweep", help="many runs: FDP on/off x utilisation x BigHash share x handle type x trim",
                       description="Runs `waf run` for each point of a grid, in parallel processes up to the core "
                                   "count (or on a Dask cluster with --executor), and writes one summary table "
                                   "(summary.csv, summary.json) and each point's run under OUT/points/. Run the "
                                   "same command again to resume: finished points with the same settings are kept.")
    sw.add_argument("-c", "--config", help="as for waf run (default: config/waf.toml's device and cache)")
    sw.add_argument("--fdp", type=lambda x: tuple(_onoff(v) for v in x.split(",")), default=(True, False),
                    help="placement values (default on,off)")
    sw.add_argument("--utilization", type=lambda x: tuple(_share(v) for v in x.split(",")),
                    default=(0.5, 0.75, 0.9, 1.0), help="cache shares of the device (default 50,75,90,100)")
    sw.add_argument("--bighash", type=lambda x: tuple(_share(v) for v in x.split(",")),
                    default=(0.04, 0.16, 0.32, 0.64), help="BigHash shares of the flash (default 4,16,32,64)")
    sw.add_argument("--handle-type", type=lambda x: tuple(v.strip().upper() for v in x.split(",")), default=("II",),
                    help="emulated SSD handle types (default II; II,PI for both)")
    sw.add_argument("--trim", type=lambda x: tuple(_onoff(v) for v in x.split(",")), default=(False,),
                    help="BlockCache region trim (default off; off,on for both)")
    sw.add_argument("--design", choices=("one-at-a-time", "cross"), default="one-at-a-time",
                    help="one-at-a-time: vary each setting with the others at utilisation 100 %%, BigHash 4 %%, "
                         "II, no trim (default); cross: every combination")
    _add_workload(sw)
    _add_rules(sw)
    sw.add_argument("-o", "--out", default="var/waf/sweep", help="output folder (default var/waf/sweep)")
    sw.add_argument("-j", "--jobs", type=int, default=0, help="parallel runs here (default: the core count)")
    sw.add_argument("--executor", help="a Dask distributed scheduler address (tcp://host:8786) to run the points "
                                       "on instead (needs the [cluster] extra)")
    sw.add_argument("--list", action="store_true", help="print the points and exit")
    sw.add_argument("--no-progress", action="store_true", help="no progress bar")

    pl = ws.add_parser("plot", help="PNG and SVG figures of runs and sweeps",
                       description="Draws device WAF over time per run, WAF vs utilisation (FDP on vs off) and WAF "
                                   "vs BigHash share, from sweep or run folders.")
    pl.add_argument("folders", nargs="+", help="sweep or run folders (or run.json files)")
    pl.add_argument("-o", "--out", help="where to write the figures (default: the first folder)")
    v = ws.add_parser("validate", help="uniform random overwrites on the emulated SSD vs Desnoyers' formulas",
                      description="Runs uniform random single-page overwrites on an emulated conventional SSD "
                                  "for each OP x RU size x GC policy, measures WAF over a window after a "
                                  "warm-up, and compares it with the analytical value (docs/waf-model.md).")
    v.add_argument("--pages", type=int, default=1 << 18, help="exported 4 KiB pages (default 262144 = 1 GiB)")
    v.add_argument("--op", type=_floats, default=(0.07, 0.12, 0.28, 0.50),
                   help="over-provisioning values, (T-U)/U (default 0.07,0.12,0.28,0.5)")
    v.add_argument("--ru-pages", type=_ints, default=(64, 256), help="pages per reclaim unit (default 64,256)")
    v.add_argument("--policy", type=_policies, default=("greedy", "fifo"), help="GC policies (default greedy,fifo)")
    v.add_argument("--warm", type=int, default=8, help="warm-up, in device writes (default 8)")
    v.add_argument("--window", type=int, default=4, help="measuring window, in device writes (default 4)")
    v.add_argument("--seed", type=int, default=7)
    v.add_argument("--tolerance", type=float, default=0.02, help="allowed relative error (default 0.02)")
    v.add_argument("-o", "--output", choices=("normal", "json"), default="normal")


def run(args, out=None) -> int:
    out = out or sys.stdout
    if args.waf_cmd == "run":
        return run_one(args, out)
    if args.waf_cmd == "sweep":
        return run_sweep(args, out)
    if args.waf_cmd == "plot":
        return run_plot(args, out)
    return validate(args, out)


def _log_level(data: dict) -> None:
    import logging
    level = str(data.get("log", {}).get("level", "error")).upper()
    logging.basicConfig(level=getattr(logging, level, logging.ERROR), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def run_one(args, out=None) -> int:
    out = out or sys.stdout
    import time
    from pathlib import Path

    from .waf import experiment as ex
    data, source, base = ex.config_data(args.config)
    point = ex.Point(fdp=args.fdp, utilization=args.utilization, bighash_fraction=args.bighash,
                     handle_type=args.handle_type, trim=args.trim)
    wl = _workload(args)
    _log_level(data)
    folder = Path(args.out) if args.out else Path("var/waf") / f"run-{point.label()}-{time.strftime('%Y%m%d-%H%M%S')}"
    res = ex.run(data, source, base, point, wl, _rules(args), folder, progress=not args.no_progress,
                 echo=lambda s: print(s, file=out, flush=True), keep_device=args.keep_device)
    return 130 if res.interrupted and "Ctrl-C" in res.summary.get("stopped", "") else 0


def run_sweep(args, out=None) -> int:
    out = out or sys.stdout
    from pathlib import Path

    from .waf import experiment as ex
    from .waf import sweep as sw
    grid = sw.Grid(fdp=args.fdp, utilization=args.utilization, bighash_fraction=args.bighash,
                   handle_type=args.handle_type, trim=args.trim, design=args.design)
    for h in args.handle_type:
        if h not in ("II", "PI"):
            print(f"flashcache waf sweep: --handle-type {h}: use II, PI or II,PI", file=sys.stderr)
            return 2
    if args.list:
        for p in grid.points():
            print(p.label(), file=out)
        return 0
    data, source, base = ex.config_data(args.config)
    _log_level(data)
    try:
        rows = sw.sweep(data, source, base, grid, _workload(args), _rules(args), Path(args.out), jobs=args.jobs,
                        executor=args.executor, progress=not args.no_progress,
                        echo=lambda s: print(s, file=out, flush=True))
    except KeyboardInterrupt:
        return 130
    return 0 if len(rows) == len(grid.points()) else 1


def run_plot(args, out=None) -> int:
    out = out or sys.stdout
    from pathlib import Path

    from .waf.plot import plot
    try:
        files = plot([Path(f) for f in args.folders], Path(args.out or args.folders[0]))
    except FileNotFoundError as e:
        print(f"flashcache waf plot: {e}", file=sys.stderr)
        return 2
    for f in files:
        print(f, file=out)
    return 0


def validate(args, out=None) -> int:
    out = out or sys.stdout
    from .emulator.validate import grid

    if args.pages < 1024:
        print("flashcache waf validate: --pages must be at least 1024", file=sys.stderr)
        return 2
    rows = []
    if args.output == "normal":
        print(f"uniform random single-page overwrites, {args.pages} pages ({args.pages * 4096 / 2**30:.2f} GiB), "
              f"warm-up {args.warm} device writes, window {args.window}, seed {args.seed}", file=out)
        print(f"{'policy':8} {'OP':>6} {'Np':>5} {'measured':>9} {'expected':>9} {'error':>7} "
              f"{'textbook':>9} {'time':>6}  verdict", file=out)
    for r in grid(pages=args.pages, ops=args.op, ru_pages=args.ru_pages, policies=args.policy,
                  warm=args.warm, window=args.window, seed=args.seed):
        ok = abs(r.error) <= args.tolerance
        rows.append((r, ok))
        if args.output == "normal":
            print(f"{r.policy:8} {r.op * 100:5.0f}% {r.ru_pages:5d} {r.measured:9.3f} {r.expected:9.3f} "
                  f"{r.error * 100:+6.2f}% {r.textbook:9.3f} {r.seconds:5.1f}s  {'ok' if ok else 'MISS'}",
                  file=out, flush=True)
    failed = sum(not ok for _, ok in rows)
    if args.output == "json":
        print(json.dumps({"pages": args.pages, "warm": args.warm, "window": args.window, "seed": args.seed,
                          "tolerance": args.tolerance, "rows": [
                              {"policy": r.policy, "op": r.op, "ru_pages": r.ru_pages, "measured": r.measured,
                               "expected": r.expected, "error": r.error, "textbook": r.textbook, "ok": ok}
                              for r, ok in rows]}), file=out)
    else:
        print(f"{len(rows) - failed}/{len(rows)} points within {args.tolerance * 100:g} % of the formula "
              "(expected: alpha corrected for the GC reserve and half-written open frontiers; "
              "textbook: the formula at nominal OP)", file=out)
    return 1 if failed else 0
