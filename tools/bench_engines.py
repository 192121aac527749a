#!/usr/bin/env python3
"""bench_engines: the flash engines on the uring file device.

* Insert and lookup ops/s of BigHash (100 B items) and BlockCache (16 KiB items), each
  against its peer measured in the same run: the device's own 4 KiB random reads and
  writes on the same file (one BigHash insert costs a bucket read and a bucket write, a
  lookup one read; so the ideal engine/device ratios are 0.5 for inserts and 1.0 for
  lookups).
* BlockCache's index: DRAM bytes per item at 1 M items, against the 16 B target and
  CacheLib's ~12 B.
* BigHash's bloom filters at the default size (8 B per bucket, 4 hashes): the false
  positive rate of lookups of absent keys, against the textbook (1 - e^(-kn/m))^k at the
  measured bucket fill.

Ends with one JSON line.

    python tools/bench_engines.py [--seconds 1.0] [--index-items 1000000] [--file var/bench_engines.img]
"""
from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from engines.bighash import BigHash  # noqa: E402
from engines.blockcache import BlockCache  # noqa: E402
from engines.blockcache.index import Index  # noqa: E402
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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=1.0)
    ap.add_argument("--index-items", type=int, default=1_000_000)
    ap.add_argument("--file", default="var/bench_engines.img")
    args = ap.parse_args()
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

    # The index alone, 1 M items (as BlockCache fills it: put() of distinct tags)
    idx = Index()
    rng = random.Random(7)
    t0 = time.perf_counter()
    seen = set()
    n = 0
    while n < args.index_items:
        tag = rng.getrandbits(32)
        if tag in seen:
            continue
        seen.add(tag)
        idx.put(tag, n, 2)
        n += 1
    t_index = time.perf_counter() - t0
    per_item = idx.dram_bytes / len(idx)
    out["index"] = {"items": len(idx), "dram_bytes": idx.dram_bytes, "bytes_per_item": per_item,
                    "capacity": idx.capacity, "puts_per_s": n / t_index}

    ratios = {
        "bighash_insert_vs_device_rw_pair": out["bighash"]["insert_per_s"] / (1 / (1 / dev_read + 1 / dev_write)),
        "bighash_lookup_vs_device_read": out["bighash"]["lookup_hit_per_s"] / dev_read,
        "blockcache_lookup_vs_device_read": out["blockcache"]["lookup_hit_per_s"] / dev_read,
        "index_bytes_per_item_vs_16B_target": per_item / 16,
        "index_bytes_per_item_vs_cachelib_12B": per_item / 12,
        "bloom_fp_vs_textbook": out["bighash"]["bloom_false_positive_rate"] / max(fp_theory, 1e-9),
    }
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
    i = out["index"]
    print(f"BlockCache index at {i['items']:,} items: {i['dram_bytes'] / MIB:.1f} MiB, "
          f"{i['bytes_per_item']:.2f} B/item (target <= 16, CacheLib ~12), {i['puts_per_s']:,.0f} puts/s")
    print(json.dumps({"bench": "engines", "ratios": {k: round(v, 3) for k, v in ratios.items()}, **out}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
