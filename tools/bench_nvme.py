#!/usr/bin/env python3
"""bench_nvme: 4 KiB random writes through flashcache's NVMe passthrough device vs fio's
io_uring_cmd engine (cmd_type=nvme), on the same namespace, in the same run.

Runs inside the NVMe test VM (absolute numbers under QEMU's TCG mean little; the ratio
does):

    tools/nvme-vm .venv/bin/python tools/bench_nvme.py [--seconds 3] [--repeat 4]

QD1 is NvmeDevice.write, one URING_CMD per call; QD32 is a device with a 32-entry ring and
NvmeDevice.write_many over 256 writes per call (the ring kept full, refilled as each
completes), each write tagged with the device's first placement stream when FDP is on.
Both sides get the same work: uniformly random 4 KiB offsets over the same span
(--span-mib from the namespace's start; fio: --size=span, --norandommap, --randrepeat=0;
flashcache: 2**18 offsets drawn from the whole span, a fresh seed each round), the same
length (fio: --runtime in ms, its job_runtime checked within 10 %), the order of the two
sides swapped every round, and the median of the rounds' ratios reported (with their
spread). fio's stderr is read: any output there fails the bench with it.
Ends with one JSON line.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import shutil
import subprocess
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from flashcache.devices.nvme_passthru import open_nvme_device  # noqa: E402

BS = 4096


NOFFS = 1 << 18
DURATION_TOLERANCE = 0.10


def fio_iops(dev: str, qd: int, seconds: float, span: int) -> float:
    ms = round(seconds * 1000)
    cmd = ["fio", "--name=bench", f"--filename={dev}", "--ioengine=io_uring_cmd", "--cmd_type=nvme",
           "--rw=randwrite", f"--bs={BS}", f"--iodepth={qd}", "--time_based", f"--runtime={ms}ms",
           f"--size={span}", "--norandommap", "--randrepeat=0", "--output-format=json"]
    out = subprocess.run(cmd, capture_output=True, text=True)
    where = " ".join(cmd)
    if out.returncode:
        sys.exit(f"bench_nvme: fio failed (exit {out.returncode}):\n  {where}\n{out.stderr.strip()}")
    start = out.stdout.find("{")
    noise = "\n".join(x for x in (out.stderr.strip(), out.stdout[:max(start, 0)].strip()) if x)
    if noise or start < 0:
        sys.exit(f"bench_nvme: fio printed warnings, so it may not have run the job asked for; fix the options "
                 f"and run again:\n  {where}\n{noise or out.stdout.strip()}")
    job = json.loads(out.stdout[start:])["jobs"][0]
    if abs(job["job_runtime"] - ms) > DURATION_TOLERANCE * ms:
        sys.exit(f"bench_nvme: fio ran {job['job_runtime']} ms where {ms} ms were asked:\n  {where}")
    return float(job["write"]["iops"])


def ours_iops(dev, qd: int, seconds: float, span: int, seed: int) -> float:
    rng = np.random.default_rng(seed)
    offs = (rng.integers(0, span // BS, NOFFS, dtype=np.int64) * BS).tolist()
    mask = NOFFS - 1
    data = os.urandom(BS)
    stream = dev.open_stream("bench")
    per = 8 * qd
    if qd > 1:                                # built before the clock starts
        batches = [[(offs[i + j], data, stream) for j in range(per)] for i in range(0, NOFFS, per)]
    n = k = 0
    t0 = time.perf_counter()
    end = t0 + seconds
    if qd == 1:
        while time.perf_counter() < end:     # the clock read each write: under TCG one takes ~0.1 ms or more
            dev.write(offs[k & mask], data, stream)
            k += 1
        n = k
    else:
        while time.perf_counter() < end:
            dev.write_many(batches[k % len(batches)])
            k += 1
            n += per
    took = time.perf_counter() - t0
    if took > seconds * (1 + DURATION_TOLERANCE):
        sys.exit(f"bench_nvme: flashcache's run took {took:.3f} s where {seconds:g} s were asked; "
                 "use a longer --seconds")
    return n / took


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="/dev/ng0n1")
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--repeat", type=int, default=4, help="rounds per queue depth, the sides' order swapped each")
    ap.add_argument("--span-mib", type=int, default=256)
    args = ap.parse_args()
    if args.repeat < 1 or args.seconds < 0.1 or args.span_mib < 1:
        ap.error(f"--repeat must be at least 1, --seconds at least 0.1, --span-mib at least 1 (got {args.repeat}, "
                 f"{args.seconds}, {args.span_mib})")
    if not shutil.which("fio"):
        sys.exit("bench_nvme: fio is not installed (tools/bootstrap.sh fio)")
    span = args.span_mib << 20
    ratios, iops, spread = {}, {}, {}
    seed = 0
    for qd in (1, 32):
        ours: list[float] = []
        theirs: list[float] = []
        placement = None
        for r in range(args.repeat):
            for side in (("ours", "fio") if r % 2 == 0 else ("fio", "ours")):
                if side == "fio":
                    theirs.append(fio_iops(args.device, qd, args.seconds, span))
                    continue
                seed += 1                   # a fresh draw every run, as fio's --randrepeat=0
                dev = open_nvme_device(args.device, queue_depth=max(qd, 8))
                try:
                    placement = dev.open_stream("bench").placement
                    ours.append(ours_iops(dev, qd, args.seconds, span, seed))
                finally:
                    dev.close()
        rr = [a / b for a, b in zip(ours, theirs)]
        key = f"randwrite_qd{qd}"
        ratios[key] = round(statistics.median(rr), 3)
        spread[key] = [round(min(rr), 3), round(max(rr), 3)]
        iops[key] = {"flashcache": round(statistics.median(ours)), "fio": round(statistics.median(theirs))}
        print(f"randwrite 4 KiB QD{qd:<3} flashcache {statistics.median(ours):9,.0f} IOPS   fio io_uring_cmd "
              f"{statistics.median(theirs):9,.0f} IOPS   ratio {ratios[key]:5.2f} (rounds {min(rr):.2f}-{max(rr):.2f})"
              f"   (placement {placement})", flush=True)
    print(f"median of {args.repeat} rounds each, the sides' order swapped every round; both: uniformly random 4 KiB "
          f"offsets over the first {args.span_mib} MiB, {round(args.seconds * 1000)} ms runs")
    print(json.dumps({"bench": "nvme", "ratios": ratios, "iops": iops, "spread": spread, "seconds": args.seconds,
                      "repeat": args.repeat, "span_mib": {"flashcache": args.span_mib, "fio": args.span_mib},
                      "target": {"randwrite_qd32": 0.8}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
