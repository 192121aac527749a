#!/usr/bin/env python3
"""bench_engines: the flash engines on the uring file device.

* Insert and lookup ops/s of BigHash (100 B items) and BlockCache (16 KiB items), each
  against its peer measured in the same run: the device's own 4 KiB random reads and
  writes on the same file (one BigHash insert costs a bucket read and a bucket write, a
  lookup one read; so the ideal engine/device ratios are 0.5 for inserts and 1.0 for
  lookups).
* BlockCache's index: DRAM bytes per item at every fill level, not at the table's best
  point (it grows by rebuilds, so its bytes per item saw-tooth between 12 B / 0.8 = 15 B
  just before a rebuild and 12 B / 0.7 = 17.1 B just after): the worst and the mean over
  every item count from a quarter of --index-items to all of it, and over a full cache's
  steady state (a log of regions, the oldest evicted for each new one, as BlockCache
  does), against the 16 B target and CacheLib's ~12 B. Also a rebuild's transient peak
  (both tables at once), and what other slot sizes and load factors would give (computed
  by the same growth rule, checked against the measured table).
* BigHash's bloom filters at the default size (8 B per bucket, 4 hashes): the false
  positive rate of lookups of absent keys, against the textbook (1 - e^(-kn/m))^k at the
  measured bucket fill.

Ends with one JSON line; the index's figures are nested: ``index.bytes_per_item_worst``
is ``{"index": {"bytes_per_item_worst": ...}}`` (the worst over the fill sweep and the
steady state), ``index.bytes_per_item_mean`` the mean over the fill sweep's item counts
(each count once); ``index.fill``, ``index.churn``, ``index.rebuild`` and
``index.what_if`` hold the detail. ``--index-only`` skips the engines' ops/s.

    python tools/bench_engines.py [--seconds 1.0] [--index-items 1000000] [--index-only] [--file var/bench_engines.img]
"""
from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
import time
import tracemalloc

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from engines.bighash import BigHash  # noqa: E402
from engines.blockcache import BlockCache  # noqa: E402
from engines.blockcache.index import MAX_LOAD, MIN_CAPACITY, REBUILD_LOAD, Index  # noqa: E402
from engines.device import run  # noqa: E402
from flashcache.devices.uring import UringDevice  # noqa: E402

MIB = 1 << 20


def rate(fn, seconds: float) -> float:
    n = 0
    t0 = time.perf_counter()
    while True:
        fn(n)
        n += 1
        if n % 64 == 0 and time.perf_counter() - t0 >= seconds:
            return n / (time.perf_counter() - t0)


# ---------------------------------------------------------------------------------------
# BlockCache's index: DRAM per item at every fill level, not at the table's best point

def _distinct_tags(n: int, seed: int) -> np.ndarray:
    """``n`` distinct random 32-bit tags, in a random order."""
    rng = np.random.default_rng(seed)
    tags = np.unique(rng.integers(0, 1 << 32, int(n * 1.01) + 1000, dtype=np.uint64))
    while len(tags) < n:                                   # pragma: no cover (1 % spare is plenty)
        tags = np.unique(np.concatenate([tags, rng.integers(0, 1 << 32, n, dtype=np.uint64)]))
    return rng.permutation(tags)[:n]


def index_fill(n_items: int) -> dict:
    """Fill an Index as BlockCache does (put() of distinct tags) to ``n_items``, recording
    its DRAM after every put; then one more put past the load limit, under tracemalloc, for
    the transient peak of a rebuild (old table, the live entries' copies, the placement's
    temporaries and the new table at once)."""
    tags = _distinct_tags(n_items + n_items // 4 + 1000, 7).tolist()
    idx = Index()
    dram = np.empty(n_items, np.int64)
    cap, db = -1, 0
    t0 = time.perf_counter()
    for n in range(n_items):
        idx.put(tags[n], n, 2)
        if idx.capacity != cap:
            cap, db = idx.capacity, idx.dram_bytes
        dram[n] = db
    t_fill = time.perf_counter() - t0
    caps = dram // (db // cap)
    # on to the load limit without a rebuild, then the put that rebuilds, traced
    n = n_items
    while idx.used + 1 <= int(idx.capacity * MAX_LOAD):
        idx.put(tags[n], n, 2)
        n += 1
    before_cap, before = idx.capacity, idx.dram_bytes
    live = len(idx)
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    idx.put(tags[n], n, 2)
    peak = tracemalloc.get_traced_memory()[1] - base
    tracemalloc.stop()
    if idx.capacity == before_cap:
        raise SystemExit(f"bench_engines: the put past the load limit ({MAX_LOAD:.0%} of {before_cap} slots) did "
                         "not rebuild the index: engines/blockcache/index.py changed its sizing rule; update "
                         "index_fill() and model_fill() here")
    return {"dram": dram, "caps": caps, "slot_bytes": db // cap, "puts_per_s": n_items / t_fill,
            "rebuild": {"items": live, "old_slots": before_cap, "new_slots": idx.capacity,
                        "resident_bytes_per_item": before / live, "peak_bytes_per_item": (before + peak) / live}}


def index_churn(n_items: int, nregions: int, passes: int = 2) -> dict:
    """A full cache's steady state: a log of ``nregions`` regions of n_items / nregions
    entries each, filled, then ``passes`` more times round, the oldest region's entries
    dropped (Index.slots_in + drop, as BlockCache's region eviction does) before each
    region is reused. DRAM per live item is sampled after every put from the first eviction on."""
    per = n_items // nregions
    upr = per * 2                                  # address units per region (2 per entry)
    tags = _distinct_tags(per * nregions * (passes + 1), 11).tolist()
    idx = Index()
    samples = []
    t = 0
    for r in range(nregions * (passes + 1)):
        slot = r % nregions
        if r >= nregions:
            idx.drop(idx.slots_in(slot * upr, (slot + 1) * upr))
        for j in range(per):
            idx.put(tags[t], slot * upr + 2 * j, 2)
            t += 1
            if r >= nregions:
                samples.append(idx.dram_bytes / len(idx))
    a = np.asarray(samples)
    return {"regions": nregions, "items_per_region": per, "puts": t, "worst": float(a.max()),
            "mean": float(a.mean()), "best": float(a.min()), "items": len(idx), "slots": idx.capacity}


def model_fill(slot_bytes: float, max_load: float, rebuild_load: float, lo: int, hi: int) -> tuple[float, float]:
    """Worst and mean DRAM per item over fill levels lo..hi of a table that grows by
    Index.put's rule (rebuild to ceil(n / rebuild_load) slots when item n would take it past
    int(slots * max_load)), with ``slot_bytes`` per slot."""
    cap = MIN_CAPACITY
    limit = int(cap * max_load)
    worst, total = 0.0, 0.0
    n = 1
    while n <= hi:
        if n > limit:
            cap = max(MIN_CAPACITY, math.ceil(n / rebuild_load))
            limit = int(cap * max_load)
        end = min(limit, hi)                      # items n..end share this capacity
        a, b = max(n, lo), end
        if a <= b:
            ns = np.arange(a, b + 1, dtype=np.float64)
            per = slot_bytes * cap / ns
            worst = max(worst, float(per.max()))
            total += float(per.sum())
        n = end + 1
    return worst, total / (hi - lo + 1)


def probes(load: float) -> tuple[float, float]:
    """Knuth's expected slots probed by linear probing at ``load``: (hit, miss)."""
    return (1 + 1 / (1 - load)) / 2, (1 + 1 / (1 - load) ** 2) / 2


# alternatives to today's layout, each (name, slot bytes, max load, rebuild load)
WHAT_IF = (
    ("hits u16 -> u8 (11 B slots), loads as today", 11, MAX_LOAD, REBUILD_LOAD),
    ("12 B slots, loads 0.86 / 0.76", 12, 0.86, 0.76),
    ("11 B slots, loads 0.85 / 0.75", 11, 0.85, 0.75),
)


def index_report(n_items: int, nregions: int) -> dict:
    f = index_fill(n_items)
    lo = n_items // 4
    per = f["dram"][lo - 1:] / np.arange(lo, n_items + 1)
    worst_at = lo + int(per.argmax())
    best_at = lo + int(per.argmin())
    m_worst, m_mean = model_fill(f["slot_bytes"], MAX_LOAD, REBUILD_LOAD, lo, n_items)
    if abs(m_worst - per.max()) > 1e-9 or abs(m_mean - per.mean()) > 1e-9:
        raise SystemExit(f"bench_engines: the growth model ({m_worst:.4f}/{m_mean:.4f} B) does not match the "
                         f"index measured ({per.max():.4f}/{per.mean():.4f} B): engines/blockcache/index.py "
                         "changed its sizing rule; update model_fill() here")
    c = index_churn(n_items, nregions)
    what_if = []
    for name, sb, ml, rl in ((f"today ({f['slot_bytes']} B slots, loads {MAX_LOAD} / {REBUILD_LOAD})",
                              f["slot_bytes"], MAX_LOAD, REBUILD_LOAD),) + WHAT_IF:
        w, m = model_fill(sb, ml, rl, lo, n_items)
        hit, miss = probes(ml)
        what_if.append({"layout": name, "fill_worst": w, "fill_mean": m, "steady_after_rebuild": sb / rl,
                        "probes_hit_at_max_load": hit, "probes_miss_at_max_load": miss})
    worst = max(float(per.max()), c["worst"])
    return {
        "bytes_per_item_worst": worst,
        "bytes_per_item_mean": float(per.mean()),
        "target_bytes_per_item": 16,
        "fill": {"items_from": lo, "items_to": n_items, "worst": float(per.max()), "worst_at_items": worst_at,
                 "mean": float(per.mean()), "best": float(per.min()), "best_at_items": best_at,
                 "slot_bytes": f["slot_bytes"], "puts_per_s": f["puts_per_s"]},
        "churn": c,
        "rebuild": f["rebuild"],
        "what_if": what_if,
    }


def print_index(i: dict) -> None:
    f, c, r = i["fill"], i["churn"], i["rebuild"]
    print(f"BlockCache index, DRAM per item (target <= {i['target_bytes_per_item']} B at every fill level, "
          f"CacheLib ~12 B):")
    print(f"  growing, every item count from {f['items_from']:,} to {f['items_to']:,}: worst {f['worst']:.2f} B "
          f"(at {f['worst_at_items']:,} items, just after a rebuild), mean {f['mean']:.2f} B, best {f['best']:.2f} B "
          f"(at {f['best_at_items']:,}); {f['puts_per_s']:,.0f} puts/s")
    print(f"  steady state, a full log of {c['regions']} regions x {c['items_per_region']:,} items, the oldest "
          f"evicted per new region, {c['puts']:,} puts: worst {c['worst']:.2f} B, mean {c['mean']:.2f} B, "
          f"best {c['best']:.2f} B")
    print(f"  a rebuild's transient peak (old table + entry copies + placement + new table, tracemalloc) at "
          f"{r['items']:,} items: {r['peak_bytes_per_item']:.1f} B/item ({r['old_slots']:,} -> {r['new_slots']:,} "
          f"slots; {r['resident_bytes_per_item']:.2f} B/item resident just before)")
    verdict = "met" if i["bytes_per_item_worst"] <= i["target_bytes_per_item"] else "MISSED"
    print(f"  headline: worst {i['bytes_per_item_worst']:.2f} B, mean {i['bytes_per_item_mean']:.2f} B; the target, "
          f"<= {i['target_bytes_per_item']} B at every fill level: {verdict}")
    print("  what the layout would give (the same growth rule, computed; it reproduces today's figures above "
          "exactly; probes: Knuth's linear-probing expectation at the max load):")
    for w in i["what_if"]:
        print(f"    {w['layout']:44} fill worst {w['fill_worst']:5.2f} B, mean {w['fill_mean']:5.2f} B, steady "
              f"~{w['steady_after_rebuild']:5.2f} B; probes at max load hit {w['probes_hit_at_max_load']:.1f}, "
              f"miss {w['probes_miss_at_max_load']:.1f}")


def engines_report(args) -> dict:
    """The engines' ops/s against the device's own 4 KiB I/O on the same file."""
    os.makedirs(os.path.dirname(args.file) or ".", exist_ok=True)
    if os.path.exists(args.file):
        os.unlink(args.file)
    dev = UringDevice(args.file, 1024 * MIB)
    out: dict = {}
    try:
        rnd = random.Random(1)
        blk = os.urandom(4096)
        nblk = 256 * MIB // 4096          # the peer works on [256, 512) MiB, away from the engines
        dev_read = rate(lambda i: dev.read((nblk + rnd.randrange(nblk)) * 4096, 4096), args.seconds)
        dev_write = rate(lambda i: dev.write((nblk + rnd.randrange(nblk)) * 4096, blk), args.seconds)
        out["device_4k_random_read_per_s"] = dev_read
        out["device_4k_random_write_per_s"] = dev_write

        bh = BigHash(0, 224 * MIB)
        bh.reset()
        nkeys = 200_000
        val = os.urandom(100)
        bh_ins = rate(lambda i: run(bh.insert(b"key%d" % (i % nkeys), val), dev), args.seconds)
        filled = min(nkeys, bh.stats()["inserts"])
        bh_hit = rate(lambda i: run(bh.lookup(b"key%d" % rnd.randrange(filled)), dev), args.seconds)
        # bloom filters at the default size, buckets as full as a cache keeps them: a small
        # BigHash (8 MiB, 2048 buckets) filled until every bucket evicts
        fb = BigHash(224 * MIB, 8 * MIB)
        fb.reset()
        for i in range(2048 * 40):
            run(fb.insert(b"fill%d" % i, val), dev)
        s0 = fb.stats()
        absent = 100_000
        for i in range(absent):
            run(fb.lookup(b"absent%d" % i), dev)
        s1 = fb.stats()
        reads = s1["bucket_reads"] - s0["bucket_reads"]
        fp = reads / absent
        per_bucket = (s0["inserts"] - s0["evictions"]) / fb.nbuckets
        m, k = 8 * 8, 4
        fp_theory = (1 - math.exp(-k * per_bucket / m)) ** k
        out["bighash"] = {"insert_per_s": bh_ins, "lookup_hit_per_s": bh_hit,
                          "bloom_false_positive_rate": fp, "bloom_textbook_rate": fp_theory,
                          "items_per_bucket": per_bucket, "bloom_dram_bytes_per_bucket": 8}

        bc = BlockCache(512 * MIB, 512 * MIB, region_size=16 * MIB, io_alignment=dev.block_size)
        big = os.urandom(16384)
        bc_keys = 20_000
        bc_ins = rate(lambda i: run(bc.insert(b"big%d" % (i % bc_keys), big), dev), args.seconds)
        run(bc.flush(), dev)
        live = bc.stats()["items"]
        present = [b"big%d" % i for i in range(bc_keys) if bc.region_of(b"big%d" % i) is not None]
        bc_hit = rate(lambda i: run(bc.lookup(present[rnd.randrange(len(present))]), dev), args.seconds)
        out["blockcache"] = {"insert_per_s": bc_ins, "lookup_hit_per_s": bc_hit, "items": live,
                             "item_bytes": len(big)}
    finally:
        dev.close()
        os.unlink(args.file)

    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=1.0)
    ap.add_argument("--index-items", type=int, default=1_000_000,
                    help="the index's fill sweep goes to this many items (fill levels from a quarter of it up)")
    ap.add_argument("--churn-regions", type=int, default=64,
                    help="the steady-state run: a full log of this many regions, the oldest evicted for each new one")
    ap.add_argument("--file", default="var/bench_engines.img")
    ap.add_argument("--index-only", action="store_true", help="only the index's DRAM figures")
    args = ap.parse_args()
    if args.index_items < 10_000 or args.churn_regions < 4:
        ap.error(f"--index-items must be at least 10000 and --churn-regions at least 4 "
                 f"(got {args.index_items}, {args.churn_regions}): fewer do not span a table growth cycle")
    out: dict = {}
    ratios: dict[str, float] = {}
    if not args.index_only:
        out.update(engines_report(args))
        dev_read = out["device_4k_random_read_per_s"]
        dev_write = out["device_4k_random_write_per_s"]
        ratios.update({
            "bighash_insert_vs_device_rw_pair": out["bighash"]["insert_per_s"] / (1 / (1 / dev_read + 1 / dev_write)),
            "bighash_lookup_vs_device_read": out["bighash"]["lookup_hit_per_s"] / dev_read,
            "blockcache_lookup_vs_device_read": out["blockcache"]["lookup_hit_per_s"] / dev_read,
            "bloom_fp_vs_textbook": out["bighash"]["bloom_false_positive_rate"]
            / max(out["bighash"]["bloom_textbook_rate"], 1e-9),
        })
    out["index"] = index_report(args.index_items, args.churn_regions)
    per_item = out["index"]["bytes_per_item_worst"]
    ratios.update({
        "index_bytes_per_item_worst_vs_16B_target": per_item / 16,
        "index_bytes_per_item_worst_vs_cachelib_12B": per_item / 12,
        "index_bytes_per_item_mean_vs_16B_target": out["index"]["bytes_per_item_mean"] / 16,
    })
    if not args.index_only:
        print_engines(out, ratios)
    print_index(out["index"])
    print(json.dumps({"bench": "engines", "ratios": {k: round(v, 3) for k, v in ratios.items()}, **out}))
    return 0


def print_engines(out: dict, ratios: dict) -> None:
    dev_read, dev_write = out["device_4k_random_read_per_s"], out["device_4k_random_write_per_s"]
    print(f"device (uring, 4 KiB random, page cache): read {dev_read:,.0f}/s, write {dev_write:,.0f}/s")
    b = out["bighash"]
    print(f"BigHash 100 B items: insert {b['insert_per_s']:,.0f}/s, lookup (hit) {b['lookup_hit_per_s']:,.0f}/s; "
          f"insert / (device read+write pair) {ratios['bighash_insert_vs_device_rw_pair']:.2f}, "
          f"lookup / device read {ratios['bighash_lookup_vs_device_read']:.2f}")
    print(f"BigHash bloom filters (8 B/bucket, 4 hashes) at "
          f"{b['items_per_bucket']:.1f} items/bucket: false positives {b['bloom_false_positive_rate'] * 100:.1f} % "
          f"of absent-key lookups (textbook {b['bloom_textbook_rate'] * 100:.1f} %)")
    c = out["blockcache"]
    print(f"BlockCache 16 KiB items: insert {c['insert_per_s']:,.0f}/s, lookup (hit) {c['lookup_hit_per_s']:,.0f}/s; "
          f"lookup / device read {ratios['blockcache_lookup_vs_device_read']:.2f}")


if __name__ == "__main__":
    sys.exit(main())
