"""What durability costs: sets/s of the Cache by default and with write_through.

    .venv/bin/python tools/durability_cost.py [--seconds 3] [--rounds 3] [--dir DIR]

One file device (1 GiB, sparse, page cache), the same seeded workload for each mode: keys
drawn from 20,000, values small (100 to 1,500 B: BigHash) or large (20 to 150 KB:
BlockCache), 4:1. Each mode runs ``--rounds`` rounds of ``--seconds`` on a fresh cache and
reports the median sets/s, for small and large items apart and together. A JSON line at
the end for the record.
"""
from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import flashcache  # noqa: E402
from flashcache import config  # noqa: E402


def conf(path: Path, write_through: bool) -> config.Config:
    return config.from_dict({"device": {"kind": "file", "path": str(path), "size": "1GiB", "engine": "psync"},
                             "cache": {"dram_size": "32MiB", "write_through": write_through}})


def one(path: Path, write_through: bool, seconds: float, seed: int, large: bool | None) -> float:
    if path.exists():
        path.unlink()
    rnd = random.Random(seed)
    small_v = [b"s" * n for n in (100, 500, 1500)]
    large_v = [b"L" * n for n in (20_000, 60_000, 150_000)]
    with flashcache.open(conf(path, write_through)) as c:
        n = 0
        t0 = time.perf_counter()
        end = t0 + seconds
        while True:
            for _ in range(64):
                big = rnd.random() < 0.2 if large is None else large
                c.set(b"key%d" % rnd.randrange(20_000), rnd.choice(large_v if big else small_v))
            n += 64
            if time.perf_counter() >= end:
                break
        rate = n / (time.perf_counter() - t0)
    return rate


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--dir", default=None)
    a = ap.parse_args()
    folder = Path(a.dir or tempfile.mkdtemp(prefix="flashcache-cost-"))
    out: dict[str, dict[str, float]] = {}
    for mode, wt in (("default", False), ("write_through", True)):
        out[mode] = {}
        for what, large in (("mixed", None), ("small", False), ("large", True)):
            rates = []
            for r in range(a.rounds):   # alternate nothing: each round is a fresh cache and file
                rates.append(one(folder / "dev.img", wt, a.seconds, 100 + r, large))
            out[mode][what] = statistics.median(rates)
            print(f"{mode:14s} {what:6s}: {out[mode][what]:10,.0f} sets/s (median of {a.rounds}: "
                  + ", ".join(f"{x:,.0f}" for x in rates) + ")")
    for what in ("mixed", "small", "large"):
        print(f"write_through costs {what}: {out['default'][what] / out['write_through'][what]:.1f}x fewer sets/s")
    print(json.dumps({"sets_per_s": out}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
