"""tools/bench_hit_ratio.py's replay counts the same gets for every side it compares: the
exact LRU and flashcache see one trace, and both hit ratios are over every get after the
warm-up (the LRU's counters were once reset on each batch, so it was judged on 4,096 gets
where flashcache was judged on 600,000)."""
from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def load():
    spec = importlib.util.spec_from_file_location("bench_hit_ratio", ROOT / "tools" / "bench_hit_ratio.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_every_side_counts_every_get_after_the_warm_up(tmp_path):
    b = load()
    spec = b.workloads()["zipf-1.1"]
    spec, _ = b.size_keys(spec, 30_000, 4 << 20)
    clock = b.VirtualClock()
    lru = b.LRU(2 << 20, clock, 1 << 20)
    out = b.replay(lru, spec, 30_000, clock, 10_000, 2048)
    # batches of 4,096 ops, all gets: counting starts with the batch at 12,288 (the first
    # past the warm-up) and ends with the one that passes 30,000 (at 32,768)
    assert out["gets"] == 32_768 - 12_288, out
    assert 0.3 < out["hit_ratio"] < 1.0, out
