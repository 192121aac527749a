#!/usr/bin/env python3
"""bench_emulator: how fast the emulated SSD's FTL programs pages, against the issue's
target of 2 M page programs per second for single-page random writes.

Measured in steady state (the device full, GC running) on the paper-1.88tb-scaled
geometry (8 GiB, 366 RUs of 24 MiB, 7 % OP) and on a small-RU device (1 GiB, 64-page RUs):
  * single-page random writes, many per C call (the FTL's own speed);
  * 16-page (64 KiB) random writes;
  * single-page random writes one Python call each (what a per-request caller pays);
  * 4 KiB writes through the whole emulated device (NVMe commands, data file, FTL).
Prints host pages/s, media programs/s (host + GC copies) and the ratio host pages/s /
target, and ends with one JSON line.

    python tools/bench_emulator.py [--seconds 1.0]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from flashcache.devices.emulated import open_emulated  # noqa: E402
from flashcache.emulator import Ftl, Geometry, preset  # noqa: E402

TARGET = 2_000_000


def warm(ftl: Ftl, rng) -> None:
    n = ftl.exported_pages
    ftl.write(0, n)
    ftl.write_pages(rng.integers(0, n, n, dtype=np.uint32))


def timed(fn, seconds: float, ftl: Ftl) -> tuple[float, float]:
    """Run fn() until ``seconds`` pass; return (host pages/s, media programs/s)."""
    h0, m0, _ = ftl.counters()
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        fn()
    dt = time.perf_counter() - t0
    h1, m1, _ = ftl.counters()
    pb = ftl.page_bytes
    return (h1 - h0) / pb / dt, (m1 - m0) / pb / dt


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=1.0, help="time per case (default 1.0)")
    args = ap.parse_args()
    rng = np.random.default_rng(1)
    results: dict[str, dict[str, float]] = {}
    geoms = {"paper-1.88tb-scaled": preset("paper-1.88tb-scaled", fdp=False),
             "1GiB-64page-RUs": Geometry(capacity_bytes=1 << 30, op=0.07, ru_bytes=64 * 4096, fdp=False)}
    print(f"{'geometry':22} {'case':28} {'host pages/s':>14} {'media progs/s':>14} {'WAF':>5} {'vs 2M':>6}")
    for gname, g in geoms.items():
        ftl = Ftl(g)
        warm(ftl, rng)
        n = g.exported_pages
        batch = rng.integers(0, n, 1 << 16, dtype=np.uint32)
        starts16 = rng.integers(0, n // 16, 1 << 12, dtype=np.uint64) * 16
        singles = rng.integers(0, n, 1 << 14).tolist()
        cases = {
            "1-page random, C batch": lambda: ftl.write_pages(batch),
            "16-page random, per call": lambda: [ftl.write(s, 16) for s in starts16.tolist()],
            "1-page random, per call": lambda: [ftl.write(s, 1) for s in singles],
        }
        for cname, fn in cases.items():
            host, media = timed(fn, args.seconds, ftl)
            results[f"{gname}: {cname}"] = {"host_pages_per_s": host, "media_programs_per_s": media}
            print(f"{gname:22} {cname:28} {host:14,.0f} {media:14,.0f} {media / host:5.2f} {host / TARGET:6.2f}")
    with tempfile.TemporaryDirectory() as d:
        g = Geometry(capacity_bytes=256 << 20, op=0.07, ru_bytes=64 * 4096, handles=("II",) * 2)
        dev = open_emulated(os.path.join(d, "bench.img"), g)
        try:
            s = dev.open_stream("bench")
            blk = bytes(4096)
            offs = (rng.integers(0, g.exported_pages, 1 << 14) * 4096).tolist()
            host, media = timed(lambda: [dev.write(o, blk, s) for o in offs[:2048]], args.seconds, dev.ftl)
            results["device: 4 KiB write, per call"] = {"host_pages_per_s": host, "media_programs_per_s": media}
            print(f"{'256MiB device':22} {'4 KiB NVMe write, per call':28} {host:14,.0f} {media:14,.0f} "
                  f"{media / host:5.2f} {host / TARGET:6.2f}")
        finally:
            dev.close()
    key = "paper-1.88tb-scaled: 1-page random, C batch"
    ratios = {k: round(v["host_pages_per_s"] / TARGET, 3) for k, v in results.items()}
    print(f"single-page random writes on the paper geometry: {results[key]['host_pages_per_s'] / 1e6:.1f} M "
          f"host pages/s, {ratios[key]:.1f}x the 2 M/s target")
    print(json.dumps({"bench": "emulator", "target_pages_per_s": TARGET, "ratios": ratios,
                      "results": results, "seconds": args.seconds}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
