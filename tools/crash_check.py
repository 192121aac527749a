"""The crash check as a user would run it: a writer process SIGKILLed 20 times.

    .venv/bin/python tools/crash_check.py [--kills 20] [--write-through true|false] [--dir DIR]

Each round starts a fresh ``python`` process that opens the cache with the public API
(``flashcache.open(config)``, a file device) and sets small (BigHash) and large
(BlockCache) items as fast as it can, printing each key's sequence number to its stdout
once ``set()`` has returned; the parent SIGKILLs it 0.3 to 1.5 s (at random) after its first set returned. Then the
parent opens the cache and reads back every item whose set had returned: it must be
served with the newest value whose set returned (or, for an item whose next set was in
flight at the kill, that one). Prints per round and in total the share served, small and
large apart, and the start line; exits 1 if any value is wrong or, with write_through,
any acknowledged item is missing.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import flashcache  # noqa: E402
from flashcache import config  # noqa: E402

WRITER = r"""
import random, sys
import flashcache
from flashcache import config
cfg = config.from_dict(__import__("json").loads(sys.argv[1]))
rnd, seq = random.Random(int(sys.argv[2])), int(sys.argv[3])
c = flashcache.open(cfg)
out = sys.stdout
while True:
    seq += 1
    i = rnd.randrange(3000)
    large = i % 2 == 1
    key = b"item%d" % i
    size = rnd.choice([20_000, 60_000, 150_000]) if large else rnd.choice([100, 500, 1500])
    head = b"%s|%d|" % (key, seq)
    out.write("B %d %d %d\n" % (seq, i, size)); out.flush()
    c.set(key, head + b"." * (size - len(head)))
    out.write("A %d %d %d\n" % (seq, i, size)); out.flush()
"""


def conf(path: Path, write_through: bool) -> dict:
    # 2 GiB (a sparse file): more than 20 rounds write, so no item is evicted and every
    # miss is a crash's doing
    return {"device": {"kind": "file", "path": str(path), "size": "2GiB"},
            "cache": {"dram_size": "8MiB", "write_through": write_through,
                      "flash": {"region_size": "16MiB", "small_item_max": "2KiB"}}}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--write-through", default="true", choices=("true", "false"))
    ap.add_argument("--dir", default=None, help="where the device file goes (default: a temporary folder)")
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    wt = a.write_through == "true"
    folder = Path(a.dir or tempfile.mkdtemp(prefix="flashcache-crash-"))
    cfg_dict = conf(folder / "dev.img", wt)
    cfg = config.from_dict(cfg_dict)
    rnd = random.Random(a.seed)
    acked: dict[int, tuple[int, int]] = {}      # item -> (seq, size) of its newest returned set
    flight: dict[int, tuple[int, int]] = {}     # item -> the set in flight at the kill
    seq = 0
    totals = {"small": [0, 0], "large": [0, 0]}
    wrong = 0
    recovered = 0
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    for round_ in range(1, a.kills + 1):
        p = subprocess.Popen([sys.executable, "-c", WRITER, json.dumps(cfg_dict), str(a.seed * 100 + round_),
                              str(seq)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        first = p.stdout.readline()                      # the writer has opened the cache and is setting
        time.sleep(rnd.uniform(0.3, 1.5))
        p.send_signal(signal.SIGKILL)
        out = first + p.stdout.read()        # (not communicate(): it would skip what readline buffered)
        err = p.stderr.read()
        p.wait()
        if p.returncode != -signal.SIGKILL:
            print(err.decode()[-3000:])
            return 2
        flight.clear()
        for line in out.decode().splitlines():
            parts = line.split()
            if len(parts) != 4:
                continue
            s, i, size = int(parts[1]), int(parts[2]), int(parts[3])
            seq = max(seq, s)
            if parts[0] == "A":
                acked[i] = (s, size)
                flight.pop(i, None)
            else:
                flight[i] = (s, size)
        # a killed io_uring writer's ring may hold the device's lock a moment after it died:
        # the open waits for that (flashcache/devices/owner.py)
        with flashcache.open(cfg) as c:
            start = c.stats()["start"]
            evicted = c.navy.stats()["blockcache"]["evicted_items"]
            recovered += start.startswith("recovered after a crash")
            counts = {"small": [0, 0], "large": [0, 0]}
            for i, (s, size) in acked.items():
                kind = "large" if i % 2 else "small"
                key = b"item%d" % i
                got = c.get(key)
                ok = [(s, size)] + ([flight[i]] if i in flight else [])
                want = [b"%s|%d|" % (key, s2) + b"." * (sz - len(b"%s|%d|" % (key, s2))) for s2, sz in ok]
                counts[kind][1] += 1
                if got is None:
                    continue
                if got in want:
                    counts[kind][0] += 1
                    if got != want[0]:
                        acked[i] = flight[i]            # the in-flight set landed: it is the newest now
                else:
                    wrong += 1
                    if wrong <= 10:
                        print(f"  wrong: item {i} served set {got.split(b'|')[1].decode()}, newest returned set "
                              f"{s}, in flight {flight.get(i)}")
            c.close()
        for k in totals:
            totals[k][0] += counts[k][0]
            totals[k][1] += counts[k][1]
        print(f"round {round_:2d}: small {counts['small'][0]}/{counts['small'][1]}, "
              f"large {counts['large'][0]}/{counts['large'][1]} served; BlockCache evictions so far {evicted}; "
              f"start: {start[:160]}")
        # the check closed the cache cleanly: the next writer starts warm, and is killed in turn
    pct = {k: 100 * v[0] / v[1] if v[1] else 0.0 for k, v in totals.items()}
    print(f"crash check (write_through = {a.write_through}), {a.kills} SIGKILLs: small items served "
          f"{pct['small']:.2f} % ({totals['small'][0]}/{totals['small'][1]}), large items served "
          f"{pct['large']:.2f} % ({totals['large'][0]}/{totals['large'][1]}), wrong values {wrong}; "
          f"{recovered} of {a.kills} restarts were crash recoveries")
    lost = sum(v[1] - v[0] for v in totals.values())
    return 1 if wrong or (wt and lost) else 0


if __name__ == "__main__":
    sys.exit(main())
