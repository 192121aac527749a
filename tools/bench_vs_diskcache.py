#!/usr/bin/env python3
"""bench_vs_diskcache: flashcache.Cache against python-diskcache on the same workload, both
on local files, alternating in the same run.

Workload: 200 k keys; values 70 % 100 B, 25 % 1 KiB, 5 % 16 KiB; Zipf-like popularity
(s = 0.99 over key ranks) for gets. flashcache runs with a small DRAM tier (--dram-kib,
256 KiB by default: Zipf's head is heavy, so even a few hundred hot items in DRAM answer
~45 % of gets; at this size most hits come from flash, as the issue asks);
its device is a file through pread/pwrite (psync): on this ext4, io_uring punts buffered
writes to its worker threads (30-45 us per 4 KiB write against 2-3 us for pwrite; see the note
of issue 6), so for a page-cache-backed file psync is the engine to use. Each round loads
every key (sets/s, with per-operation latency for p50/p99), then runs the --gets Zipf gets
twice: once bare for gets/s, once with a timer around each get for p50/p99 (two clock
reads and an append cost ~0.2 us per get, a tenth of a flashcache get and a seventieth of
a diskcache one, so throughput is not taken from the timed pass; its rate is printed and
kept in the JSON as gets_per_s_timed). Rounds alternate flashcache and diskcache; the best
round of each is reported, with ratios flashcache / diskcache, and one JSON line at the end.

    python tools/bench_vs_diskcache.py [--keys 200000] [--gets 200000] [--rounds 2] [--dram-kib 256]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402


def ensure_diskcache():
    try:
        import diskcache  # noqa: F401
    except ImportError:
        print("bench: installing python-diskcache (pip install diskcache)", flush=True)
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "diskcache"], check=True)
    import diskcache
    return diskcache


def workload(nkeys: int, ngets: int, seed: int):
    rng = np.random.default_rng(seed)
    sizes = rng.choice([100, 1024, 16384], size=nkeys, p=[0.70, 0.25, 0.05])
    keys = [b"key:%09d" % i for i in range(nkeys)]
    blob = rng.integers(0, 256, 16384 + 4096, dtype=np.uint8).tobytes()
    values = [blob[i % 4096:i % 4096 + int(s)] for i, s in enumerate(sizes)]
    ranks = np.arange(1, nkeys + 1, dtype=np.float64)
    p = ranks ** -0.99
    p /= p.sum()
    perm = rng.permutation(nkeys)            # popularity independent of key order
    gets = perm[rng.choice(nkeys, size=ngets, p=p)]
    return keys, values, gets.tolist(), int(sizes.sum())


def pct(lat_ns: list[int], q: float) -> float:
    return float(np.percentile(np.asarray(lat_ns), q)) / 1000.0   # microseconds


def run_phase(set_fn, get_fn, keys, values, gets) -> dict:
    pc = time.perf_counter_ns
    lat = []
    t0 = time.perf_counter()
    for k, v in zip(keys, values):
        a = pc()
        set_fn(k, v)
        lat.append(pc() - a)
    t_set = time.perf_counter() - t0
    set_lat = lat
    t0 = time.perf_counter()
    for i in gets:                                 # throughput: no per-get timer
        get_fn(keys[i])
    t_get = time.perf_counter() - t0
    lat = []
    hits = 0
    t0 = time.perf_counter()
    for i in gets:                                 # latency: the same gets, each timed
        a = pc()
        r = get_fn(keys[i])
        lat.append(pc() - a)
        hits += r is not None
    t_timed = time.perf_counter() - t0
    return {"sets_per_s": len(keys) / t_set, "gets_per_s": len(gets) / t_get,
            "gets_per_s_timed": len(gets) / t_timed,
            "set_p50_us": pct(set_lat, 50), "set_p99_us": pct(set_lat, 99),
            "get_p50_us": pct(lat, 50), "get_p99_us": pct(lat, 99), "hit_ratio": hits / len(gets)}


def bench_flashcache(tmp: str, keys, values, gets, dram_kib: int, device_mib: int) -> tuple[dict, dict]:
    from flashcache import config
    from flashcache.cache import Cache
    path = os.path.join(tmp, "flashcache.img")
    cfg = config.loads(f"""
[device]
kind = "file"
engine = "psync"
path = "{path}"
size = "{device_mib}MiB"
format = true
[cache]
dram_size = "{dram_kib}KiB"
[cache.flash]
region_size = "16MiB"
bighash_fraction = 0.15
""", "bench")
    c = Cache(cfg)
    try:
        res = run_phase(c.set, c.get, keys, values, gets)
        st = c.stats()
        so = st["since_open"]
        extra = {"hits_dram": so["hits"]["dram"], "hits_flash": so["hits"]["flash"],
                 "app_write_amplification": so["app_write_amplification"]["value"]}
    finally:
        c.close()
        for f in os.listdir(tmp):
            os.unlink(os.path.join(tmp, f))
    return res, extra


def bench_diskcache(tmp: str, keys, values, gets, diskcache) -> dict:
    d = os.path.join(tmp, "diskcache")
    c = diskcache.Cache(d, size_limit=1 << 40)
    try:
        return run_phase(c.set, c.get, keys, values, gets)
    finally:
        c.close()
        shutil.rmtree(d, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--keys", type=int, default=200_000)
    ap.add_argument("--gets", type=int, default=200_000)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--dram-kib", type=int, default=256, help="flashcache's DRAM tier (KiB)")
    ap.add_argument("--device-mib", type=int, default=1024)
    ap.add_argument("--dir", default="var/bench", help="where both caches keep their files")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    diskcache = ensure_diskcache()
    keys, values, gets, total = workload(args.keys, args.gets, args.seed)
    os.makedirs(args.dir, exist_ok=True)
    print(f"{args.keys} keys, {total / 2**20:.0f} MiB of values (70 % 100 B, 25 % 1 KiB, 5 % 16 KiB), "
          f"{args.gets} Zipf(0.99) gets; flashcache DRAM tier {args.dram_kib} KiB, device: a "
          f"{args.device_mib} MiB file via pread/pwrite; diskcache {diskcache.__version__} in {args.dir}", flush=True)
    best: dict[str, dict] = {}
    extra = {}
    for r in range(args.rounds):
        with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
            fc, extra = bench_flashcache(tmp, keys, values, gets, args.dram_kib, args.device_mib)
        with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
            dc = bench_diskcache(tmp, keys, values, gets, diskcache)
        for name, res in (("flashcache", fc), ("diskcache", dc)):
            print(f"round {r + 1} {name:10} sets/s {res['sets_per_s']:9,.0f}  gets/s {res['gets_per_s']:9,.0f} "
                  f"({res['gets_per_s_timed']:9,.0f} timed)  "
                  f"set p50/p99 {res['set_p50_us']:6.1f}/{res['set_p99_us']:7.1f} us  get p50/p99 "
                  f"{res['get_p50_us']:6.1f}/{res['get_p99_us']:7.1f} us  hit ratio {res['hit_ratio']:.3f}",
                  flush=True)
            b = best.setdefault(name, dict(res))
            for k in ("sets_per_s", "gets_per_s", "gets_per_s_timed"):
                b[k] = max(b[k], res[k])
    print(f"flashcache hits over both get passes: DRAM {extra['hits_dram']}, flash {extra['hits_flash']}; "
          f"app write amplification since open {extra['app_write_amplification']:.2f}")
    ratios = {k: best["flashcache"][f] / best["diskcache"][f]
              for k, f in (("sets", "sets_per_s"), ("gets", "gets_per_s"), ("gets_timed", "gets_per_s_timed"))}
    print(f"ratios flashcache / diskcache: sets {ratios['sets']:.2f}x (target 10x), gets {ratios['gets']:.2f}x "
          f"(target 5x; {ratios['gets_timed']:.2f}x in the timed pass)")
    print(json.dumps({"bench": "vs_diskcache", "ratios": {k: round(v, 3) for k, v in ratios.items()},
                      "targets": {"sets": 10, "gets": 5}, "results": best, "flashcache_hits": extra,
                      "keys": args.keys, "gets": args.gets, "dram_kib": args.dram_kib}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
