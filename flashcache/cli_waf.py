"""`flashcache waf`: write-amplification tools for researchers.

Owns argument parsing and output of the emulator's validation (``waf validate``); the
experiments live in flashcache.emulator.validate. Exit code 1 when a point misses.
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


def add_parser(sub) -> None:
    p = sub.add_parser("waf", help="write amplification: validate the emulated SSD against the formulas")
    ws = p.add_subparsers(dest="waf_cmd", required=True)
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


def run(args, out=sys.stdout) -> int:
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
