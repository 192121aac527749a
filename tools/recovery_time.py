"""Crash recovery on a full 1 GiB emulated SSD: how long it takes and how much it reads.

    .venv/bin/python tools/recovery_time.py [--value-size 16KiB] [--dir DIR] [--rounds 3]

Fills a cache on config/default.toml's device (the emulated FDP SSD, 1 GiB) until
BlockCache's log has wrapped and BigHash holds ~1.5 items per KiB, then "crashes" it (the
device is closed, the cache never is: no clean-shutdown metadata), reopens and reports
``stats()["start"]`` and ``stats()["recovery"]``: bytes read and seconds, against the
device size. Each round crashes at a different point of the checkpoint period
(after 0 to 3 more regions are sealed).
"""
from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import flashcache  # noqa: E402
from flashcache import config  # noqa: E402
from flashcache.config import parse_size  # noqa: E402


def conf(folder: Path) -> config.Config:
    return config.from_dict({"device": {"kind": "emulated", "path": str(folder / "flashcache.img"), "size": "1GiB",
                                        "emulator": {"preset": "qemu-like"}},
                             "cache": {"dram_size": "16MiB"}})


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--value-size", default="16KiB", help="BlockCache item size (default 16KiB)")
    ap.add_argument("--dir", default=None)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    vsize = parse_size("--value-size", a.value_size)
    folder = Path(a.dir or tempfile.mkdtemp(prefix="flashcache-recovery-"))
    cfg = conf(folder)
    rnd = random.Random(7)
    big = b"B" * vsize
    small = b"s" * 600
    results = []
    with flashcache.open(cfg) as c:
        nbig = int(1.3 * (1 << 30) / vsize)
        for i in range(nbig):                       # more than BlockCache holds: its log wraps
            c.set(b"big%d" % i, big)
            if i % 4 == 0:
                for _ in range(4):
                    c.set(b"small%d" % rnd.randrange(160_000), small)
    for r in range(a.rounds):
        c = flashcache.open(cfg)
        regions = c.navy.blockcache.stats()["region_writes"]
        per_region = c.navy.blockcache.region_size // (vsize + 64)
        for i in range(per_region * r + rnd.randrange(per_region)):   # into the checkpoint period
            c.set(b"more%d_%d" % (r, i), big)
        for i in range(60_000):                     # push DRAM's items (16 MiB) out to flash
            c.set(b"pad%d_%d" % (r, i), small)
        st = c.navy.stats()["blockcache"]
        sealed_since = st["region_writes"] - regions
        c.device.close()                            # the crash: no close(), no metadata
        t0 = time.perf_counter()
        c2 = flashcache.open(cfg)
        wall = time.perf_counter() - t0
        s = c2.stats()
        rec = s["recovery"]
        items = c2.navy.blockcache.stats()["items"]
        dev = c2.device.size
        results.append({"round": r, "start": s["start"], "recovery": rec, "open_seconds": wall,
                        "blockcache_items": items, "device_bytes": dev,
                        "read_share": rec["bytes_read"] / dev, "regions_sealed_before_crash": sealed_since})
        print(f"round {r}: {s['start']}")
        print(f"  recovery read {rec['bytes_read']:,} bytes ({100 * rec['bytes_read'] / dev:.2f} % of the "
              f"{dev >> 20} MiB device) in {rec['seconds']:.3f} s (whole open {wall:.3f} s); "
              f"{rec['regions_replayed']} regions replayed, {rec['entries_replayed']} entries; "
              f"BlockCache items after: {items:,}")
        c2.close()
    print(json.dumps({"value_size": vsize, "rounds": results}, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
