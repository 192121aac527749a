#!/usr/bin/env python3
"""bench_hit_ratio: flashcache's hit ratio against an exact LRU of the same bytes, on the
same cache-aside trace, with each run's device WAF on the emulated FDP SSD.

Three caches replay the same trace (generated twice from the same seed, op for op): a get,
and on a miss a set of the key's value (cache-aside), plus the sets, deletes and TTLs the
workload has of its own:

* flashcache at its default configuration (only the geometry is scaled: flash:DRAM 64:1,
  BlockCache regions 1/64 of the device) on a fresh emulated FDP SSD;
* an exact LRU holding the same bytes: flashcache's *usable* bytes, counted as
  - DRAM: ``cache.dram_size`` (the DRAM tier also charges ~250 B of Python overhead per
    item against it; the LRU charges nothing but key + value, so it holds more);
  - BigHash: buckets x (bucket_size - its 32 B header) (the 22 B entry headers are charged
    to flashcache, not counted as room);
  - BlockCache: (regions - clean_regions) x region_size (the regions kept clean for the
    next write never hold items; entry headers and alignment again charged to
    flashcache);
  counted where the split starts: when it moves (the default "auto"), each region
  BlockCache lends BigHash becomes buckets of 4064 usable bytes in 4096, so the LRU keeps
  a little more than flashcache ends with;
  the LRU charges each item key + value bytes, so every overhead favours the LRU;
* an LRU of the DRAM tier's bytes alone (what flash adds), charged the same way.

The key space is sized by bytes actually touched: the distinct items the trace touches
total ``--touched`` (default 2) times the LRU's capacity, so the caches really fill and
evict. Hit ratios count the gets after the first ``--warmup`` share of the trace, overall,
for small items (key + value <= cache.flash.small_item_max: BigHash's) and large ones;
the device WAF (media bytes written / host bytes written) is taken over the same part.

Workloads: ``zipf-0.9`` and ``zipf-1.1`` (gets only, cache-aside, values 70/25/5 % of
100 B / 1 KiB / 16 KiB, keys 16-32 B) and ``twitter-like`` (the workload generator's
preset: Twitter's cluster statistics, with its sets, deletes and TTLs).

    python tools/bench_hit_ratio.py                      # a few minutes: 64 MiB of flash
    python tools/bench_hit_ratio.py --full               # 256 MiB, 4x the ops
    python tools/bench_hit_ratio.py --bighash 0.3        # a fixed split instead of the default

Ends with one JSON line: {"bench": "hit_ratio", "ratios": {"<workload>": flashcache/LRU, ...}, ...}.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time
from collections import OrderedDict
from typing import Any

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from flashcache import config as config_mod  # noqa: E402
from flashcache.cache import Cache  # noqa: E402
from flashcache.devices import open_device  # noqa: E402
from flashcache.workload import Generator, VirtualClock, WorkloadSpec  # noqa: E402
from flashcache.workload import spec as spec_mod  # noqa: E402
from flashcache.workload.generator import DELETE, GET  # noqa: E402

MIB = 1 << 20
ZIPF_VALUES = spec_mod.Dist(((0.70, 100, 100), (0.25, 1024, 1024), (0.05, 16384, 16384)))
KEYS = spec_mod.Dist(((1.0, 16, 32),))


def workloads() -> dict[str, WorkloadSpec]:
    z = dict(popularity="zipf", cache_aside=True, ops=(1.0, 0.0, 0.0), key_size=KEYS, value_size=ZIPF_VALUES)
    return {"zipf-0.9": WorkloadSpec(name="zipf-0.9", zipf_alpha=0.9, **z),
            "zipf-1.1": WorkloadSpec(name="zipf-1.1", zipf_alpha=1.1, **z),
            "twitter-like": spec_mod.load("twitter-like")}


def config(capacity: int, bighash: str | None, tmp: str) -> config_mod.Config:
    flash: dict[str, Any] = {"region_size": capacity // 64}
    if bighash is not None:
        flash["bighash_fraction"] = bighash if bighash == "auto" else float(bighash)
    return config_mod.from_dict({
        "device": {"kind": "emulated", "path": os.path.join(tmp, "hit.img"), "format": True,
                   "emulator": {"capacity": capacity, "preset": "qemu-like", "lba_size": 4096,
                                "ru_size": capacity // 128, "op": 0.12}},
        "cache": {"dram_size": capacity // 64, "flash": flash},
        "log": {"level": "error"}}, "<bench_hit_ratio>")


def usable_bytes(cache: Cache) -> dict[str, int]:
    """The bytes each tier can give items (module docstring: what counts and why)."""
    out = {"dram": cache.dram.capacity}
    bh, bc = cache.navy.bighash, cache.navy.blockcache
    out["bighash"] = bh.nbuckets * (bh.bucket_size - 32) if bh is not None else 0
    out["blockcache"] = ((bc.limit - cache.config.cache.flash.clean_regions) * bc.region_size
                         if bc is not None else 0)
    return out


class LRU:
    """An exact LRU of ``capacity`` bytes charging key + value per item, with TTLs."""

    def __init__(self, capacity: int, clock: VirtualClock, max_value: int):
        self.capacity, self.clock, self.max_value_size = capacity, clock, max_value
        self.items: OrderedDict[bytes, tuple[int, float]] = OrderedDict()
        self.used = 0

    def get(self, key: bytes) -> Any:
        e = self.items.get(key)
        if e is None:
            return None
        if e[1] and e[1] <= self.clock.t:
            self.delete(key)
            return None
        self.items.move_to_end(key)
        return e

    def set(self, key: bytes, value: bytes, ttl: float = 0) -> None:
        if len(value) > self.max_value_size:
            raise ValueError("too large")
        self.delete(key)
        size = len(key) + len(value)
        if size > self.capacity:
            return
        self.items[key] = (size, self.clock.t + ttl if ttl else 0.0)
        self.used += size
        while self.used > self.capacity:
            _, (s, _) = self.items.popitem(last=False)
            self.used -= s

    def delete(self, key: bytes) -> bool:
        e = self.items.pop(key, None)
        if e is not None:
            self.used -= e[0]
        return e is not None


MAX_KEYS = 1 << 23


def touched_bytes(spec: WorkloadSpec, ops: int) -> int:
    """Bytes of the distinct items ``ops`` operations of ``spec`` (bound) touch."""
    g = Generator(spec)
    ids = np.unique(g.ids(ops))
    return int((g.key_sizes(ids) + g.value_sizes(ids)).sum())


def size_keys(spec: WorkloadSpec, ops: int, target: float) -> tuple[WorkloadSpec, int]:
    """``spec`` with as many keys as make the distinct items ``ops`` operations touch total
    ``target`` bytes (a few rounds of a multiplicative search on the same draws), at most
    MAX_KEYS (a steep Zipf touches few distinct keys however many there are)."""
    item = spec.key_size.mean + spec.value_size.mean
    n = max(16, int(target / item))
    touched = 0
    for _ in range(12):
        n = min(n, MAX_KEYS)
        touched = touched_bytes(dataclasses.replace(spec, keys=n), ops)
        if abs(touched - target) <= 0.03 * target or (n == MAX_KEYS and touched < target):
            break
        n = max(16, int(n * (target / touched) ** 1.6))
    return dataclasses.replace(spec, keys=n), touched


def capacity_for(spec: WorkloadSpec, ops: int, capacity: int, touched: float) -> int:
    """The flash bytes for ``spec``: ``capacity``, halved (down to 16 MiB) while ``ops``
    operations cannot touch ``touched`` times it even with MAX_KEYS keys, so the cache
    really fills (a steep Zipf, like Twitter's 1.37, touches few distinct keys)."""
    most = touched_bytes(dataclasses.replace(spec, keys=MAX_KEYS), ops)
    while capacity > 16 * MIB and most < touched * capacity * 0.97 * 0.93:     # ~usable share
        capacity //= 2
    return capacity


def replay(cache: Any, spec: WorkloadSpec, ops: int, clock: VirtualClock, warm: int, small_max: int,
           dev: Any = None) -> dict[str, Any]:
    """The trace on ``cache``; hit ratios (overall, small, large) after ``warm`` ops, and
    the device WAF over the same ops when ``dev`` is given."""
    buf = bytes(range(251)) * (max(cache.max_value_size, 1) // 251 + 1)
    maxv = cache.max_value_size
    get, put, delete = cache.get, cache.set, cache.delete
    aside = spec.cache_aside
    g = [0, 0]          # gets: small, large
    h = [0, 0]          # hits: small, large
    too_large = 0
    done = 0
    waf_at = None
    measuring = False
    t0 = time.perf_counter()
    for b in Generator(spec).batches(4096):
        if done >= ops:
            break
        if not measuring and done >= warm:       # once: the warm-up's gets do not count
            measuring = True
            waf_at = dev.waf_snapshot() if dev is not None else None
            g, h = [0, 0], [0, 0]
        clock.t = b.time
        for op, key, size, ttl in zip(b.ops, b.keys, b.sizes, b.ttls):
            if op == GET:
                large = len(key) + size > small_max
                g[large] += 1
                if get(key) is not None:
                    h[large] += 1
                    continue
                if not aside:
                    continue
            elif op == DELETE:
                delete(key)
                continue
            if size > maxv:
                too_large += 1
                continue
            if ttl:
                put(key, buf[:size], ttl)
            else:
                put(key, buf[:size])
        done += len(b.ops)
    out: dict[str, Any] = {
        "hit_ratio": (h[0] + h[1]) / max(1, g[0] + g[1]),
        "small": h[0] / g[0] if g[0] else None, "large": h[1] / g[1] if g[1] else None,
        "gets": g[0] + g[1], "small_gets": g[0], "too_large": too_large,
        "ops_per_s": round(done / (time.perf_counter() - t0))}
    if dev is not None and waf_at is not None:
        now = dev.waf_snapshot()
        host = now.hbmw - waf_at.hbmw
        out["waf"] = (now.mbmw - waf_at.mbmw) / host if host else None
        out["host_mib"] = round(host / MIB, 1)
    return out


def one(name: str, spec: WorkloadSpec, args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench_hit_") as tmp:
        capacity = capacity_for(spec, args.ops, args.capacity, args.touched)
        cfg = config(capacity, args.bighash, tmp)
        dev = open_device(cfg.device)
        clock = VirtualClock()
        try:
            dev.trim(0, dev.size)
            dev.deallocate_unused()
            cache = Cache(cfg, device=dev, clock=clock)
            try:
                usable = usable_bytes(cache)
                lru_bytes = sum(usable.values())
                small_max = cache.navy.small_item_max
                maxv = cache.max_value_size
                spec, touched = size_keys(spec, args.ops, args.touched * lru_bytes)
                warm = int(args.ops * args.warmup)
                fc = replay(cache, spec, args.ops, clock, warm, small_max, dev)
                st = cache.stats()
                navy = cache.navy
                # where the split ended (it moves while the cache runs: README, "The split")
                split = {"bighash_bytes": navy.bighash.nbuckets * navy.bighash.bucket_size
                         if navy.bighash is not None else 0,
                         "blockcache_bytes": navy.blockcache.limit * navy.blockcache.region_size
                         if navy.blockcache is not None else 0,
                         **{k: navy.stats()["split"][k] for k in ("splits", "merges", "lent_regions")}}
                counters = cache.core.counts()
            finally:
                cache.close()
        finally:
            dev.close()
    c1, c2 = VirtualClock(), VirtualClock()
    lru = replay(LRU(lru_bytes, c1, maxv), spec, args.ops, c1, warm, small_max)
    dram = replay(LRU(usable["dram"], c2, maxv), spec, args.ops, c2, warm, small_max)
    fc.update(split, promotions=counters.get("promotions"),
              demotions=counters.get("demotions"), demotions_skipped_clean=counters.get("demotions_skipped_clean"),
              flash_hit_share=st.get("since_open", {}).get("hit_ratio"))
    return {"workload": name, "flash_bytes": capacity, "keys": spec.keys, "touched_mib": round(touched / MIB, 1),
            "usable_mib": {k: round(v / MIB, 2) for k, v in usable.items()}, "flashcache": fc, "lru": lru,
            "lru_dram": dram, "ratio": fc["hit_ratio"] / lru["hit_ratio"] if lru["hit_ratio"] else None}


def pct(x: float | None) -> str:
    return "   -  " if x is None else f"{x * 100:5.1f}%"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--full", action="store_true", help="256 MiB of flash and 4x the ops")
    ap.add_argument("--capacity", type=int, default=0, help="flash bytes (default 64 MiB, --full 256 MiB)")
    ap.add_argument("--ops", type=int, default=0, help="operations per workload (default 1.2 M, --full 4.8 M)")
    ap.add_argument("--warmup", type=float, default=0.5, help="share of the trace before measuring")
    ap.add_argument("--touched", type=float, default=2.0, help="distinct bytes touched / LRU capacity")
    ap.add_argument("--bighash", default=None, help='bighash_fraction ("auto" or a share); default: the default')
    ap.add_argument("--workloads", default=",".join(workloads()), help="comma-separated")
    args = ap.parse_args()
    args.capacity = args.capacity or (256 * MIB if args.full else 64 * MIB)
    args.ops = args.ops or (4_800_000 if args.full else 1_200_000)
    specs = workloads()
    results = []
    print(f"flash {args.capacity // MIB} MiB (less where the trace cannot fill it), DRAM 1/64 of it, "
          f"{args.ops:,} ops per workload "
          f"(first {args.warmup:.0%} warm-up), keys touching {args.touched:g}x the LRU's bytes, "
          f"bighash_fraction {args.bighash or 'default'}")
    print(f"{'workload':13} {'side':11} {'hit':>6} {'small':>6} {'large':>6} {'ratio':>6} {'WAF':>6}  notes")
    for name in args.workloads.split(","):
        r = one(name, specs[name], args)
        results.append(r)
        fc, lru, dram = r["flashcache"], r["lru"], r["lru_dram"]
        waf = f"{fc['waf']:.3f}" if fc.get("waf") else "  -  "
        print(f"{name:13} {'flashcache':11} {pct(fc['hit_ratio'])} {pct(fc['small'])} {pct(fc['large'])} "
              f"{r['ratio']:6.3f} {waf:>6}  BigHash {fc['bighash_bytes'] / MIB:.1f} MiB, BlockCache "
              f"{fc['blockcache_bytes'] / MIB:.1f} MiB at the end ({fc['splits']} splits, {fc['merges']} merges); "
              f"{fc['ops_per_s']:,} ops/s")
        print(f"{'':13} {'LRU':11} {pct(lru['hit_ratio'])} {pct(lru['small'])} {pct(lru['large'])} "
              f"{1:6.3f} {'':>6}  {sum(r['usable_mib'].values()):.1f} MiB usable {r['usable_mib']}; "
              f"{r['keys']:,} keys, {r['touched_mib']} MiB touched; flash {r['flash_bytes'] // MIB} MiB")
        print(f"{'':13} {'LRU DRAM':11} {pct(dram['hit_ratio'])} {pct(dram['small'])} {pct(dram['large'])} "
              f"{dram['hit_ratio'] / lru['hit_ratio']:6.3f}", flush=True)
    print(json.dumps({"bench": "hit_ratio", "ratios": {r["workload"]: round(r["ratio"], 4) for r in results},
                      "hit_ratio": {r["workload"]: {"flashcache": round(r["flashcache"]["hit_ratio"], 4),
                                                    "lru": round(r["lru"]["hit_ratio"], 4),
                                                    "lru_dram": round(r["lru_dram"]["hit_ratio"], 4)}
                                    for r in results},
                      "waf": {r["workload"]: r["flashcache"].get("waf") for r in results},
                      "worst_ratio": round(min(r["ratio"] for r in results), 4),
                      "capacity": args.capacity, "ops": args.ops, "bighash_fraction": args.bighash or "default",
                      "runs": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
