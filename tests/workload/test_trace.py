"""flashcache/workload/trace.py: replay of the Twitter cache-trace CSV format, plain, gzip or
zstd, streamed; lines it cannot use are counted, not fatal."""
from __future__ import annotations

import gzip
import shutil
import tracemalloc
from pathlib import Path

import pytest
import zstandard

from flashcache.workload import DELETE, GET, SET, TraceReader
from flashcache.workload.trace import open_text

SAMPLE = Path(__file__).resolve().parent.parent / "data" / "twitter-sample.csv"


def read_all(path, **kw):
    r = TraceReader(path, **kw)
    batches = list(r.batches(100))
    return r, batches


def test_the_sample_replays_and_counts_what_it_skips():
    r, batches = read_all(SAMPLE)
    rep = r.report()
    assert rep["lines"] == 408
    assert (rep["malformed"], rep["unknown_op"]) == (5, 2)
    assert rep["unknown_ops"] == {"touch": 1, "flush_all": 1}
    assert rep["ops"] == 401 == sum(len(b.ops) for b in batches)
    assert [len(b.ops) for b in batches] == [100, 100, 100, 100, 1]


def test_rows_map_to_gets_sets_and_deletes_with_padded_keys_and_ttls():
    _, batches = read_all(SAMPLE)
    first = batches[0]
    # 1,h71f218f762,28,40,9,get,0 / 2,hef5e5f0397,20,800,8,decr,60
    assert first.ops[:2] == [GET, SET]
    assert first.keys[0] == b"h71f218f762".ljust(28, b".") and first.sizes[0] == 40 and first.ttls[1] == 60
    assert first.keys[1] == b"hef5e5f0397.........."[:20] and len(first.keys[1]) == 20
    assert b"key,with,comma" in [k[:14] for b in batches for k in b.keys]        # a key holding commas
    ops = {o for b in batches for o in b.ops}
    assert ops == {GET, SET, DELETE}
    assert first.time == 0.0 and batches[-1].time > 0


@pytest.mark.parametrize("kind", ["gzip", "zstd"])
def test_compressed_traces_read_the_same(tmp_path, kind):
    path = tmp_path / f"t.{kind}"
    if kind == "gzip":
        with open(SAMPLE, "rb") as src, gzip.open(path, "wb") as dst:
            shutil.copyfileobj(src, dst)
    else:
        path.write_bytes(zstandard.ZstdCompressor().compress(SAMPLE.read_bytes()))
    plain = [b.keys for b in read_all(SAMPLE)[1]]
    r, batches = read_all(path)
    assert [b.keys for b in batches] == plain and r.report()["malformed"] == 5


@pytest.mark.parametrize("kind", ["gzip", "zstd"])
def test_big_compressed_traces_are_streamed_not_loaded(tmp_path, kind):
    """60 MB of trace compress to little; reading its first thousand requests must not
    hold more than a few MB in memory."""
    row = b"%d,key%07d,20,100,1,get,0\n"
    path = tmp_path / f"big.{kind}"
    if kind == "gzip":
        with gzip.open(path, "wb", compresslevel=1) as f:
            for i in range(0, 2_000_000, 10_000):
                f.write(b"".join(row % (i + j, (i + j) % 1000) for j in range(10_000)))
    else:
        cctx = zstandard.ZstdCompressor(level=1)
        with open(path, "wb") as raw, cctx.stream_writer(raw) as f:
            for i in range(0, 2_000_000, 10_000):
                f.write(b"".join(row % (i + j, (i + j) % 1000) for j in range(10_000)))
    tracemalloc.start()
    try:
        it = TraceReader(path).batches(1000)
        b = next(it)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(b.ops) == 1000 and b.keys[0] == b"key0000000".ljust(20, b".")
    assert peak < 4 << 20, peak


def test_loop_replays_again_with_the_clock_going_on():
    r = TraceReader(SAMPLE, loop=True)
    it = r.batches(401)
    a, b = next(it), next(it)
    assert a.keys == b.keys and b.time > a.time and r.passes == 2


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        TraceReader(tmp_path / "nope.csv")


def test_open_text_reads_plain_text():
    with open_text(SAMPLE) as f:
        assert f.readline().startswith("1,h71f218f762")
