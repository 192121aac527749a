"""What durability costs: sets/s of the Cache by default, with write_through = true and
with write_through = "sync".

    .venv/bin/python tools/durability_cost.py [--seconds 3] [--rounds 3] [--dir DIR]

One file device (1 GiB, sparse, page cache), the same seeded workload for each mode: keys
drawn from 20,000, values small (100 to 1,500 B: BigHash) or large (20 to 150 KB:
BlockCache), 4:1. Each mode runs ``--rounds`` rounds of ``--seconds`` on a fresh cache and
reports the median sets/s, for small and large items apart and together, and each
durable mode's cost against the default (how many times fewer sets/s). "sync" waits for
an fdatasync per set: what that costs is the file system's and the disk's (a disk with a
volatile write cache flushes it; one that ignores flushes makes it cheap and no safer),
so the folder (``--dir``) must be on the disk the cache would use, not a tmpfs. A JSON
line at the end for the record.
"""
from __future__ import annotations

import argparse
import json
import logging
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import flashcache  # noqa: E402
from flashcache import config  # noqa: E402


MODES = (("default", False), ("write_through", True), ("sync", "sync"))


def conf(path: Path, write_through: bool | str) -> config.Config:
    return config.from_dict({"device": {"kind": "file", "path": str(path), "size": "1GiB", "engine": "psync"},
                             "cache": {"dram_size": "32MiB", "write_through": write_through}})


def one(path: Path, write_through: bool | str, seconds: float, seed: int, large: bool | None) -> float:
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


def fs_type(folder: Path) -> str:
    """The file system type of the mount holding ``folder`` (from /proc/self/mounts), or "?"."""
    best, kind = "", "?"
    try:
        with open("/proc/self/mounts") as f:
            for line in f:
                parts = line.split()
                mnt = parts[1].replace("\\040", " ")
                if len(parts) > 2 and str(folder.resolve()).startswith(mnt.rstrip("/") + "/") and len(mnt) > len(best):
                    best, kind = mnt, parts[2]
    except OSError:
        pass
    return kind


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--dir", default=None)
    a = ap.parse_args()
    # a plain file has no FDP placement: the device says so for each fresh cache, which is
    # expected here and would bury the rows
    logging.getLogger("flashcache.devices").setLevel(logging.ERROR)
    folder = Path(a.dir or tempfile.mkdtemp(prefix="flashcache-cost-"))
    fs = fs_type(folder)
    if fs in ("tmpfs", "ramfs", "devtmpfs"):
        ap.error(f"{folder} is on {fs}, where fdatasync does nothing: the sync mode's cost would read as free; "
                 "pass --dir on the disk the cache would use")
    print(f"device file in {folder} ({fs})")
    out: dict[str, dict[str, float]] = {}
    for mode, wt in MODES:
        out[mode] = {}
        for what, large in (("mixed", None), ("small", False), ("large", True)):
            rates = []
            for r in range(a.rounds):   # alternate nothing: each round is a fresh cache and file
                rates.append(one(folder / "dev.img", wt, a.seconds, 100 + r, large))
            out[mode][what] = statistics.median(rates)
            print(f"{mode:14s} {what:6s}: {out[mode][what]:10,.0f} sets/s (median of {a.rounds}: "
                  + ", ".join(f"{x:,.0f}" for x in rates) + ")")
    cost = {mode: {what: out["default"][what] / out[mode][what] for what in out[mode]} for mode, _ in MODES[1:]}
    for mode, _ in MODES[1:]:
        print(f"{mode} costs " + ", ".join(f"{what} {cost[mode][what]:.1f}x" for what in cost[mode])
              + " fewer sets/s than the default")
    print(json.dumps({"sets_per_s": out, "cost_vs_default": cost, "dir": str(folder), "fs": fs}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
