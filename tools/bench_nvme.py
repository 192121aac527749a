#!/usr/bin/env python3
"""bench_nvme: 4 KiB random writes through flashcache's NVMe passthrough device vs fio's
io_uring_cmd engine (cmd_type=nvme), on the same namespace, in the same run.

Runs inside the NVMe test VM (absolute numbers under QEMU's TCG mean little; the ratio
does):

    tools/nvme-vm .venv/bin/python tools/bench_nvme.py [--seconds 3] [--repeat 2]

QD1 is NvmeDevice.write, one URING_CMD per call; QD32 is a device with a 32-entry ring and
NvmeDevice.write_many over 256 writes per call (the ring kept full, refilled as each
completes), each write tagged with the device's first placement stream when FDP is on.
Ends with one JSON line.
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

from flashcache.devices.nvme_passthru import open_nvme_device  # noqa: E402

BS = 4096


def fio_iops(dev: str, qd: int, seconds: float, span: int) -> float:
    cmd = ["fio", "--name=bench", f"--filename={dev}", "--ioengine=io_uring_cmd", "--cmd_type=nvme",
           "--rw=randwrite", f"--bs={BS}", f"--iodepth={qd}", "--time_based", f"--runtime={seconds}",
           f"--size={span}", "--norandommap", "--randrepeat=0", "--output-format=json"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return float(json.loads(out.stdout[out.stdout.index("{"):])["jobs"][0]["write"]["iops"])


def ours_iops(dev, qd: int, seconds: float, span: int) -> float:
    rng = random.Random(3)
    nblocks = span // BS
    offs = [rng.randrange(nblocks) * BS for _ in range(4096)]
    data = os.urandom(BS)
    stream = dev.open_stream("bench")
    n = k = 0
    t0 = time.perf_counter()
    end = t0 + seconds
    if qd == 1:
        while time.perf_counter() < end:
            for _ in range(32):
                dev.write(offs[k & 4095], data, stream)
                k += 1
            n += 32
    else:
        per = 8 * qd
        batches = [[(offs[(i * per + j) & 4095], data, stream) for j in range(per)] for i in range(4096 // per)]
        while time.perf_counter() < end:
            dev.write_many(batches[k % len(batches)])
            k += 1
            n += per
    return n / (time.perf_counter() - t0)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="/dev/ng0n1")
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--span-mib", type=int, default=256)
    args = ap.parse_args()
    if not shutil.which("fio"):
        sys.exit("bench_nvme: fio is not installed (tools/bootstrap.sh fio)")
    span = args.span_mib << 20
    ratios, iops = {}, {}
    for qd in (1, 32):
        ours = theirs = 0.0
        for _ in range(args.repeat):
            dev = open_nvme_device(args.device, queue_depth=max(qd, 8))
            try:
                placement = dev.open_stream("bench").placement
                ours = max(ours, ours_iops(dev, qd, args.seconds, span))
            finally:
                dev.close()
            theirs = max(theirs, fio_iops(args.device, qd, args.seconds, span))
        ratios[f"randwrite_qd{qd}"] = round(ours / theirs, 3)
        iops[f"randwrite_qd{qd}"] = {"flashcache": round(ours), "fio": round(theirs)}
        print(f"randwrite 4 KiB QD{qd:<3} flashcache {ours:9,.0f} IOPS   fio io_uring_cmd {theirs:9,.0f} IOPS   "
              f"ratio {ours / theirs:5.2f}   (placement {placement})", flush=True)
    print(json.dumps({"bench": "nvme", "ratios": ratios, "iops": iops, "seconds": args.seconds,
                      "repeat": args.repeat, "target": {"randwrite_qd32": 0.8}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
