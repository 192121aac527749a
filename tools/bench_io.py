#!/usr/bin/env python3
"""bench_io: 4 KiB random reads and writes through flashcache's devices vs fio, same file,
same run.

Cases: buffered with the page cache warm (fio --invalidate=0) and O_DIRECT. In each case:
flashcache `psync` (FileDevice.read/write, one call per I/O) vs fio psync at QD1, and
flashcache `uring` vs fio io_uring at QD1 (UringDevice.read/write) and QD32
(a UringDevice with a 32-entry ring, read_many/write_many over 256 requests per call: the C
batch keeps 32 in flight and refills the ring as each completes, as fio does).
Prints IOPS and the ratio flashcache / fio for each, and ends with one JSON line.

    python tools/bench_io.py [--seconds 1.5] [--repeat 4] [--file var/bench_io.img] [--size-mib 1024]
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from engines.device import SUPERBLOCK_MAGIC  # noqa: E402
from flashcache.devices.file import FileDevice  # noqa: E402
from flashcache.devices.uring import UringDevice  # noqa: E402

BS = 4096


def ensure_fio() -> str:
    fio = shutil.which("fio")
    if fio:
        return fio
    if os.geteuid() == 0:
        print("bench_io: installing fio (apt-get install fio)", flush=True)
        subprocess.run(["apt-get", "install", "-y", "-qq", "fio"], check=True,
                       env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"}, stdout=subprocess.DEVNULL)
        fio = shutil.which("fio")
    if not fio:
        sys.exit("bench_io: fio is not installed: sudo apt-get install fio")
    return fio


def make_file(path: str, size: int) -> None:
    if os.path.exists(path) and os.path.getsize(path) == size:
        with open(path, "r+b") as f:
            if f.read(len(SUPERBLOCK_MAGIC)) == SUPERBLOCK_MAGIC:
                return
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    chunk = os.urandom(1 << 20)
    with open(path, "wb") as f:
        for _ in range(size >> 20):
            f.write(chunk)
        f.seek(0)
        f.write(SUPERBLOCK_MAGIC)   # mark it as a flashcache device, so opening it needs no format
    print(f"bench_io: wrote {size >> 20} MiB test file {path}", flush=True)


def warm(path: str) -> None:
    with open(path, "rb") as f:
        while f.read(8 << 20):
            pass


def settle(path: str) -> None:
    """Write back what the last run left dirty, outside any measured window: otherwise the
    next run (often the other side's) pays for it, e.g. the first O_DIRECT case for the
    buffered writes before it."""
    fd = os.open(path, os.O_RDWR)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fio_iops(fio: str, path: str, size: int, rw: str, engine: str, qd: int, direct: bool, seconds: float) -> float:
    cmd = [fio, "--name=bench", f"--filename={path}", f"--size={size}", f"--bs={BS}", f"--rw={rw}",
           f"--ioengine={engine}", f"--iodepth={qd}", "--time_based", f"--runtime={seconds}",
           f"--direct={int(direct)}", "--invalidate=0", "--norandommap", "--randrepeat=0",
           "--output-format=json", "--thread"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    job = json.loads(out.stdout[out.stdout.index("{"):])["jobs"][0]
    side = job["read"] if "read" in rw else job["write"]
    return float(side["iops"])


def ours_iops(dev, rw: str, qd: int, seconds: float, nblocks: int) -> float:
    rng = random.Random(1)
    offs = [rng.randrange(nblocks) * BS for _ in range(1 << 16)]
    mask = len(offs) - 1
    data = os.urandom(BS)
    n = 0
    i = 0
    t0 = time.perf_counter()
    deadline = t0 + seconds
    reading = rw == "randread"
    if qd == 1:
        # read(off, BS) and write(off, data) have the same shape: one loop serves both
        op, arg = (dev.read, BS) if reading else (dev.write, data)
        while True:
            for _ in range(256):
                op(offs[i & mask], arg)
                i += 1
            n += 256
            if time.perf_counter() >= deadline:
                break
    else:
        per = 16 * qd   # requests per call (fills the staging buffer); the ring bounds what is in flight
        batches = [[(offs[(k * per + j) & mask], BS) for j in range(per)] for k in range(len(offs) // per)]
        if not reading:
            batches = [[(o, data, None) for o, _ in b] for b in batches]
        op = dev.read_many if reading else dev.write_many
        nb = len(batches)
        k = 0
        while time.perf_counter() < deadline:
            for _ in range(4):
                op(batches[k % nb])
                k += 1
            n += 4 * per
    return n / (time.perf_counter() - t0)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=1.5)
    ap.add_argument("--repeat", type=int, default=4, help="runs of each side, alternating; their mean counts")
    ap.add_argument("--file", default="var/bench_io.img")
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--cases", default="buffered,direct")
    args = ap.parse_args()
    fio = ensure_fio()
    size = args.size_mib << 20
    make_file(args.file, size)
    nblocks = size // BS
    rows = []
    ratios: dict[str, float] = {}
    iops: dict[str, dict[str, float]] = {}
    for case in args.cases.split(","):
        direct = case == "direct"
        if not direct:
            warm(args.file)
        for rw in ("randread", "randwrite"):
            for engine, fio_engine, qd in (("psync", "psync", 1), ("uring", "io_uring", 1), ("uring", "io_uring", 32)):
                cls = FileDevice if engine == "psync" else UringDevice
                kw = {} if engine == "psync" else {"queue_depth": max(qd, 8)}
                ours = theirs = 0.0
                for _ in range(args.repeat):
                    # Alternate and average: the disk is shared, its speed drifts between
                    # runs, and each side meets the same drift (best-of would reward
                    # whichever side happened to get the one quiet window).
                    with open(args.file, "r+b") as f:   # fio's writes may have hit block 0
                        f.write(SUPERBLOCK_MAGIC)
                    dev = cls(args.file, size, direct=direct, **kw)
                    try:
                        ours += ours_iops(dev, rw, qd, args.seconds, nblocks) / args.repeat
                    finally:
                        dev.close()
                    settle(args.file)
                    theirs += fio_iops(fio, args.file, size, rw, fio_engine, qd, direct, args.seconds) / args.repeat
                    settle(args.file)
                key = f"{case}_{rw.replace('rand', '')}_{engine}_qd{qd}"
                ratios[key] = round(ours / theirs, 3)
                iops[key] = {"flashcache": round(ours), "fio": round(theirs)}
                rows.append((case, rw, f"{engine} QD{qd}", ours, theirs, ours / theirs))
                print(f"{case:8} {rw:9} {engine + ' QD' + str(qd):11} flashcache {ours:10,.0f} IOPS   "
                      f"fio {theirs:10,.0f} IOPS   ratio {ours / theirs:5.2f}", flush=True)
    worst = min(ratios.values())
    print(f"\nworst ratio {worst:.2f} (target >= 0.80); mean of {args.repeat} alternating runs of "
          f"{args.seconds:g} s each, 4 KiB, "
          f"{args.size_mib} MiB file {args.file}")
    print(json.dumps({"bench": "io", "ratios": ratios, "iops": iops, "seconds": args.seconds, "repeat": args.repeat,
                      "file_mib": args.size_mib, "target": 0.8, "worst": worst}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
