"""Tests for engines/blockcache/, driven through engines.device.run over an in-memory device."""
from __future__ import annotations

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

import engines.blockcache.blockcache as bcmod
from engines.blockcache import ENTRY_HEADER, FORMAT_VERSION, HEADER_SIZE, MAGIC, BlockCache, InsertResult, key_hash
from engines.blockcache.entry import CHECKSUM_SEED
from engines.blockcache.regions import CLEAN, OPEN, SEALED
from engines.device import Read, Write, run, run_many
from tests.clock import FakeClock
from tests.engines.memdevice import MemDevice, MemStream

A = 512
R = 64 * 1024  # small regions keep the tests fast
PER_REGION = 8  # items of ENTRY bytes fill a region
ENTRY = R // PER_REGION


def make(nregions=6, region_size=R, **kw):
    """An engine over ``nregions`` regions of a fresh device, with one spare region either
    side of its extent (to catch I/O outside it)."""
    dev = MemDevice((nregions + 2) * region_size)
    kw.setdefault("stream", MemStream("blockcache"))
    bc = BlockCache(region_size, nregions * region_size, region_size=region_size, **kw)
    return bc, dev


def get(bc, dev, key):
    return run(bc.lookup(key), dev)


def put(bc, dev, key, value, expiry=0):
    return run(bc.insert(key, value, expiry), dev)


def value_for(key: bytes, entry=ENTRY, fill=b"v") -> bytes:
    """A value whose entry takes exactly ``entry`` bytes."""
    return fill * (entry - HEADER_SIZE - len(key))


def fill_regions(bc, dev, n, prefix=b"r"):
    """Insert ``n`` regions' worth of ENTRY-sized items; returns the keys, region by region."""
    out = []
    for r in range(n):
        keys = [prefix + b"%d-%d" % (r, i) for i in range(PER_REGION)]
        for k in keys:
            put(bc, dev, k, value_for(k))
        out.append(keys)
    return out


def ops(dev, since=0):
    return [op for op, _, _ in dev.log[since:]]


# ---------------------------------------------------------------------- round trips


def test_round_trip_of_small_and_region_sized_items():
    bc, dev = make()
    big_key = b"big"
    big = bytes(range(256)) * ((bc.max_item_size - len(big_key)) // 256)
    big += b"x" * (bc.max_item_size - len(big_key) - len(big))
    assert bc.max_item_size == R - HEADER_SIZE
    put(bc, dev, b"small", b"s")
    put(bc, dev, b"empty", b"")
    put(bc, dev, big_key, big)  # a whole region: seals the buffer holding the small ones
    assert get(bc, dev, b"small") == b"s"
    assert get(bc, dev, b"empty") == b""
    assert get(bc, dev, big_key) == big  # from the buffer
    run(bc.flush(), dev)
    put(bc, dev, b"after", b"a")  # the big region is sealed now: read from flash
    assert get(bc, dev, big_key) == big
    assert ("read", bc.region_offset(bc.region_of(big_key)), R) in dev.log


def test_too_big_item_names_the_limit():
    bc, dev = make()
    with pytest.raises(ValueError, match=f"max_item_size {R - HEADER_SIZE}"):
        bc.insert(b"k", b"x" * (R - HEADER_SIZE))  # key + value one byte over
    assert put(bc, dev, b"k", b"x" * (R - HEADER_SIZE - 1))


def test_keys_and_values_must_be_bytes():
    bc, dev = make()
    with pytest.raises(TypeError, match="key must be bytes"):
        bc.insert("k", b"v")
    with pytest.raises(TypeError, match="value must be bytes"):
        bc.insert(b"k", 3)
    put(bc, dev, bytearray(b"ba"), memoryview(b"mv"))
    assert get(bc, dev, memoryview(b"ba")) == b"mv"


def test_overwrite_returns_the_latest_and_replaces_the_index_entry():
    bc, dev = make()
    assert put(bc, dev, b"k", b"one") == InsertResult(False, 0, 0)
    assert put(bc, dev, b"k", b"two").replaced
    assert get(bc, dev, b"k") == b"two"
    assert bc.stats()["items"] == 1 and bc.stats()["replaced"] == 1
    fill_regions(bc, dev, 1)
    put(bc, dev, b"k", b"three")
    assert get(bc, dev, b"k") == b"three"


def test_remove_is_index_only():
    bc, dev = make()
    put(bc, dev, b"k", b"v")
    fill_regions(bc, dev, 1)
    n = len(dev.log)
    assert run(bc.remove(b"k"), dev) is True
    assert run(bc.remove(b"k"), dev) is False
    assert get(bc, dev, b"k") is None
    assert len(dev.log) == n  # no I/O at all (no journal: not under a router)


def test_under_a_journal_a_remove_writes_one_tombstone_block_off_the_stream():
    from engines.blockcache.entry import journal_records
    bc, dev = make()
    bc.journal = (7 * R, 4, 4096)           # the spare region past the extent, as a metadata area
    put(bc, dev, b"k", b"v")
    fill_regions(bc, dev, 1)
    n = len(dev.log)
    seq = bc.seq
    assert run(bc.remove(b"k"), dev) is True
    assert dev.log[n:] == [("write", 7 * R, 4096)]
    assert journal_records(bytes(dev.buf[7 * R:7 * R + 4096]), 1, bc.generation) == [(seq, key_hash(b"k"))]
    assert journal_records(bytes(dev.buf[7 * R:7 * R + 4096]), 2, bc.generation) == []   # another epoch
    assert run(bc.remove(b"k"), dev) is False and len(dev.log) == n + 1
    assert bc.stats()["removes"] == 2 and bc.stats()["removed"] == 1


# ---------------------------------------------------------------------- buffer and region writes


def test_buffer_hits_cost_no_io():
    bc, dev = make()
    for i in range(5):
        put(bc, dev, b"k%d" % i, b"v%d" % i * 100)
    assert [get(bc, dev, b"k%d" % i) for i in range(5)] == [b"v%d" % i * 100 for i in range(5)]
    assert dev.log == []
    s = bc.stats()
    assert s["buffer_hits"] == 5 and s["hits"] == 5 and s["entry_reads"] == 0


def test_a_full_buffer_is_one_region_write_on_the_engine_stream():
    stream = MemStream("bc-stream", pid=7, placement="on")
    bc, dev = make(stream=stream)
    keys = fill_regions(bc, dev, 1)[0]
    assert dev.log == []  # the region is full but nothing forced it out yet
    put(bc, dev, b"next", b"n")
    assert dev.log == [("write", bc.region_offset(0), R)]
    assert dev.streams == [stream]
    assert bc.stats()["region_writes"] == 1 and bc.stats()["bytes_written"] == R
    # the sealed region is served from flash: one read of the entry's aligned extent each
    for k in keys:
        assert get(bc, dev, k) == value_for(k)
    assert dev.log[1:] == [("read", bc.region_offset(0) + i * ENTRY, ENTRY) for i in range(PER_REGION)]


def test_insert_yields_nothing_until_the_buffer_is_full():
    bc, _ = make()
    op = bc.insert(b"k", b"v")
    with pytest.raises(StopIteration):
        next(op)


def test_lookup_reads_the_aligned_extent_only():
    bc, dev = make()
    put(bc, dev, b"k", b"x" * 3000)  # 44 + 1 + 3000 bytes -> 6 units of 512
    run(bc.flush(), dev)
    put(bc, dev, b"fill", value_for(b"fill", R - 6 * A))
    put(bc, dev, b"seal", b"s")
    n = len(dev.log)
    assert get(bc, dev, b"k") == b"x" * 3000
    assert dev.log[n:] == [("read", bc.region_offset(0), 6 * A)]


def test_io_alignment_widens_entry_reads_to_device_blocks():
    dev = MemDevice(8 * R, block_size=4096)
    bc = BlockCache(R, 6 * R, region_size=R, io_alignment=4096)
    put(bc, dev, b"a", b"a" * 100)  # units 0
    put(bc, dev, b"k", b"x" * 3000)  # units 1..6: bytes 512..3584
    put(bc, dev, b"fill", value_for(b"fill", R - 7 * A))
    put(bc, dev, b"seal", b"s")
    n = len(dev.log)
    assert get(bc, dev, b"k") == b"x" * 3000 and get(bc, dev, b"a") == b"a" * 100
    assert dev.log[n:] == [("read", bc.region_offset(0), 4096)] * 2
    with pytest.raises(ValueError, match="io_alignment = 1000"):
        BlockCache(0, 6 * R, region_size=R, io_alignment=1000)


def test_flush_writes_the_partial_buffer_once():
    bc, dev = make()
    assert run(bc.flush(), dev) is False and dev.log == []
    put(bc, dev, b"k", b"v")
    assert run(bc.flush(), dev) is True
    assert dev.log == [("write", bc.region_offset(0), R)]
    assert run(bc.flush(), dev) is False and len(dev.log) == 1
    # what a flush wrote is on flash: a new engine that recovers finds it there
    state = bc.persist()
    bc2 = BlockCache(R, 6 * R, region_size=R)
    assert bc2.recover(state)
    assert get(bc2, dev, b"k") == b"v"


def test_run_many_batches_flash_lookups():
    bc, dev = make()
    keys = fill_regions(bc, dev, 2)[0]
    got = run_many([bc.lookup(k) for k in keys], dev)
    assert got == [value_for(k) for k in keys]


def test_on_flash_layout_matches_the_docstring():
    import xxhash

    bc, dev = make(clock=FakeClock(), generation=42)
    put(bc, dev, b"key", b"value", expiry=1_000_100.5)
    run(bc.flush(), dev)
    raw = bytes(dev.buf[bc.region_offset(0):bc.region_offset(0) + A])
    magic, version, hsize, csum, gen, kh, vlen, expiry, klen, flags, seq = ENTRY_HEADER.unpack_from(raw)
    assert (magic, version, hsize, gen, kh, vlen, expiry, klen, flags, seq) == (
        MAGIC, FORMAT_VERSION, HEADER_SIZE, 42, key_hash(b"key"), 5, 1_000_101, 3, 0, 1)
    assert HEADER_SIZE == 52 and FORMAT_VERSION == 2
    assert raw[52:60] == b"keyvalue" and raw[60:] == bytes(A - 60)
    assert csum == xxhash.xxh3_64_intdigest(raw[:8] + raw[16:60], CHECKSUM_SEED)


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=1, max_size=300), st.binary(max_size=5000), st.integers(0, 3000),
       st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1), st.sampled_from([0, 1, 2**32 - 1, 1_700_000_000]),
       st.integers(0, 2**64 - 1), st.sampled_from([0, 1, 2]))
def test_the_c_encoder_writes_the_bytes_the_python_one_does(key, value, pos, khash, generation, expiry, seq,
                                                            flags):
    from engines.blockcache.entry import decode, encode_into, encode_into_py
    size = pos + HEADER_SIZE + len(key) + len(value) + 100
    a, b = bytearray(b"\xa5" * size), bytearray(b"\xa5" * size)     # padding left as it was
    assert encode_into(a, pos, khash, generation, expiry, key, value, seq, flags) == \
        encode_into_py(b, pos, khash, generation, expiry, key, value, seq, flags) == HEADER_SIZE + len(key) + len(value)
    assert a == b
    h = decode(a, pos, size)
    assert (h.generation, h.key_hash, h.expiry, h.key_len, h.value_len, h.seq, h.flags) == (
        generation, khash, expiry, len(key), len(value), seq, flags)


def test_the_c_encoder_refuses_what_does_not_fit():
    from engines.blockcache._core_c import encode_entry
    with pytest.raises(ValueError, match="does not fit the buffer"):
        encode_entry(bytearray(100), 60, 0, 0, 0, b"k", b"v", 0, 0)
    with pytest.raises(ValueError, match="a field overflows"):
        encode_entry(bytearray(100), 0, 0, 0, 2**32, b"k", b"v", 0, 0)
    with pytest.raises(ValueError, match="a field overflows"):
        encode_entry(bytearray(100), 0, 0, 0, 0, b"k", b"v", 0, 2**16)
    with pytest.raises(TypeError, match="bytearray"):
        encode_entry(b"x" * 100, 0, 0, 0, 0, b"k", b"v", 0, 0)


def test_a_reused_buffer_starts_zeroed_so_padding_on_flash_is_zeros():
    """After a seal the buffer is filled again for the next region: what the last region
    left in it must not reach flash as another entry's padding."""
    bc, dev = make()
    fill_regions(bc, dev, 1, prefix=b"x")                 # the buffer full of non-zero bytes
    put(bc, dev, b"k", b"v")                               # seals region 0, opens region 1
    run(bc.flush(), dev)
    raw = bytes(dev.buf[bc.region_offset(1):bc.region_offset(1) + R])
    assert raw[HEADER_SIZE:HEADER_SIZE + 2] == b"kv" and raw[HEADER_SIZE + 2:] == bytes(R - HEADER_SIZE - 2)


# ---------------------------------------------------------------------- eviction


def test_fifo_evicts_the_oldest_region_and_drops_its_keys_without_io():
    bc, dev = make(nregions=6)
    regions = fill_regions(bc, dev, 5)
    assert [bc.region_of(ks[0]) for ks in regions] == [0, 1, 2, 3, 4]
    assert bc.stats()["evicted_regions"] == 0
    n = len(dev.log)
    put(bc, dev, b"x", b"x")  # seals region 4, opens 5: the pool is empty, region 0 goes
    assert ops(dev, n) == ["write"]  # no read, no trim: eviction is index-only
    assert bc.eviction.order() == [1, 2, 3, 4]
    n = len(dev.log)
    assert all(get(bc, dev, k) is None for k in regions[0])
    assert len(dev.log) == n  # evicted keys miss in the index, no I/O
    assert all(get(bc, dev, k) == value_for(k) for ks in regions[1:] for k in ks)
    s = bc.stats()
    assert s["evicted_regions"] == 1 and s["evicted_items"] == PER_REGION and s["items"] == 4 * PER_REGION + 1
    more = fill_regions(bc, dev, 1, prefix=b"m")  # region 5 fills; region 0 opens, region 1 goes
    put(bc, dev, b"y", b"y")
    assert all(get(bc, dev, k) is None for k in regions[1])
    assert all(get(bc, dev, k) == value_for(k) for k in regions[2] + more[0])


def evict_after_hitting(policy, hit_region):
    bc, dev = make(nregions=6, eviction=policy)
    regions = fill_regions(bc, dev, 5)
    for k in regions[hit_region][:2]:
        assert get(bc, dev, k) == value_for(k)
    put(bc, dev, b"x", b"x")  # one region is evicted
    bc.order_after_eviction = bc.eviction.order()
    survived = [r for r, ks in enumerate(regions) if get(bc, dev, ks[2]) is not None]
    return bc, survived


def test_lru_keeps_a_recently_hit_region():
    _, survived = evict_after_hitting("lru", 0)
    assert survived == [0, 2, 3, 4]  # region 1 was the least recently used
    _, survived = evict_after_hitting("fifo", 0)
    assert survived == [1, 2, 3, 4]  # the same hits do not save region 0 under FIFO


def test_sfifo_promotes_a_hit_region_and_evicts_probation_first():
    bc, survived = evict_after_hitting("sfifo", 0)
    assert survived == [0, 2, 3, 4]
    assert bc.order_after_eviction == [2, 3, 4, 0]  # region 0 heads the top segment
    assert bc.eviction.counts == [2, 2]  # the survival lookups promoted 2, 3, 4; 0 was demoted


def test_sfifo_segments_keep_their_ratio_and_stay_fifo():
    from engines.blockcache.eviction import SegmentedFifo

    ev = SegmentedFifo(8, (1, 1))
    for r in range(6):
        ev.track(r)
    for r in (0, 1, 2, 3, 4):
        ev.touch(r)  # promoted; the top segment may hold 6 * 1 // 2 = 3
    assert ev.counts == [3, 3]
    assert ev.order() == [5, 0, 1, 2, 3, 4]  # 0 and 1 were demoted to the tail of segment 0
    ev.touch(2)  # a hit in the top segment does not reorder it
    assert ev.order() == [5, 0, 1, 2, 3, 4]
    assert ev.victim() == 5
    three = SegmentedFifo(8, (2, 1, 1))
    for r in range(4):
        three.track(r)
    three.touch(3)
    three.touch(3)
    assert three.segment(3) == 2 and three.victim() == 0
    three.forget(0)
    assert three.victim() == 1


def test_lru_order_follows_hits():
    from engines.blockcache.eviction import make as make_policy

    ev = make_policy("lru", 4)
    for r in range(4):
        ev.track(r)
    ev.touch(0)
    ev.touch(2)
    assert ev.order() == [1, 3, 0, 2]
    fifo = make_policy("fifo", 4)
    for r in range(4):
        fifo.track(r)
    fifo.touch(0)
    assert fifo.order() == [0, 1, 2, 3]


def test_trim_on_reclaim_trims_the_reclaimed_region():
    bc, dev = make(nregions=6, trim_on_reclaim=True)
    fill_regions(bc, dev, 5)
    n = len(dev.log)
    put(bc, dev, b"x", b"x")
    assert dev.log[n:] == [("write", bc.region_offset(4), R), ("trim", bc.region_offset(0), R)]
    assert bc.stats()["trims"] == 1
    bc2, dev2 = make(nregions=6)
    fill_regions(bc2, dev2, 5)
    put(bc2, dev2, b"x", b"x")
    assert "trim" not in ops(dev2)


def test_clean_regions_are_kept_ready():
    bc, dev = make(nregions=6, clean_regions=2)
    regions = fill_regions(bc, dev, 4)
    assert bc.stats()["evicted_regions"] == 0
    put(bc, dev, b"x", b"x")  # seals region 3, opens 4: only region 5 is clean, one goes
    assert bc.stats()["evicted_regions"] == 1 and len(bc.regions.pool) == 2
    assert all(get(bc, dev, k) is None for k in regions[0])


# ---------------------------------------------------------------------- reinsertion


def test_hits_reinsertion_keeps_hot_items_after_their_region_is_evicted():
    bc, dev = make(nregions=6, reinsertion_hits=2)
    regions = fill_regions(bc, dev, 5)
    hot, warm = regions[0][3], regions[0][4]
    get(bc, dev, hot)
    get(bc, dev, hot)
    get(bc, dev, warm)  # one hit: below the threshold
    n = len(dev.log)
    res = put(bc, dev, b"x", b"x")
    assert res.evicted == PER_REGION - 1 and res.reinserted == 1
    assert dev.log[n:] == [("write", bc.region_offset(4), R), ("read", bc.region_offset(0), R)]
    assert bc.region_of(hot) == 5  # re-appended to the fresh buffer
    assert get(bc, dev, hot) == value_for(hot)
    assert get(bc, dev, warm) is None
    assert all(get(bc, dev, k) is None for k in regions[0] if k != hot)
    s = bc.stats()
    assert s["reinsertions"] == 1 and s["reinsertion_reads"] == 1 and s["evicted_items"] == PER_REGION - 1


def test_no_region_read_when_nothing_qualifies_for_reinsertion():
    bc, dev = make(nregions=6, reinsertion_hits=2)
    fill_regions(bc, dev, 5)
    n = len(dev.log)
    put(bc, dev, b"x", b"x")
    assert ops(dev, n) == ["write"]
    assert bc.stats()["reinsertions"] == 0


def test_reinserted_item_must_stay_hot_to_be_reinserted_again():
    bc, dev = make(nregions=4, reinsertion_hits=1)
    regions = fill_regions(bc, dev, 3)
    hot = regions[0][0]
    get(bc, dev, hot)
    fill_regions(bc, dev, 1, prefix=b"a")
    assert bc.stats()["reinsertions"] == 1 and get(bc, dev, hot) is not None  # one more hit
    fill_regions(bc, dev, 4, prefix=b"b")  # hot's new region is evicted after this hit
    assert bc.stats()["reinsertions"] == 2
    fill_regions(bc, dev, 4, prefix=b"c")  # no hit since: now it goes
    assert get(bc, dev, hot) is None


def reinsertion_survivors(percent, seed=0):
    bc, dev = make(nregions=6, reinsertion_percent=percent, reinsertion_seed=seed)
    keys = [b"p%d" % i for i in range(R // A)]  # 128 one-unit items fill region 0
    for k in keys:
        put(bc, dev, k, value_for(k, A))
    fill_regions(bc, dev, 4)
    put(bc, dev, b"x", b"x")  # evicts region 0
    return bc, [k for k in keys if get(bc, dev, k) is not None]


def test_percentage_reinsertion_keeps_about_that_share():
    bc, kept = reinsertion_survivors(30)
    assert 0.2 * 128 <= len(kept) <= 0.4 * 128
    assert bc.stats()["reinsertions"] == len(kept)
    assert all(bc.region_of(k) == 5 for k in kept)
    assert reinsertion_survivors(30)[1] == kept  # the same seed, the same choice
    assert reinsertion_survivors(30, seed=1)[1] != kept
    assert len(reinsertion_survivors(100)[1]) == 127  # one unit stays free for the insert "x"
    assert reinsertion_survivors(0)[1] == []


def test_reinsertion_leaves_room_for_the_insert_that_caused_it():
    bc, dev = make(nregions=4, reinsertion_percent=100)
    regions = fill_regions(bc, dev, 3)
    big = b"B" * (bc.max_item_size - 3)
    put(bc, dev, b"big", big)  # needs a whole region: nothing can be reinserted
    assert get(bc, dev, b"big") == big
    assert bc.stats()["reinsertion_dropped"] == PER_REGION
    assert all(get(bc, dev, k) is None for k in regions[0])


# ---------------------------------------------------------------------- integrity


def flushed_entry(bc, dev, key=b"key", value=b"value" * 300):
    put(bc, dev, key, value)
    run(bc.flush(), dev)
    put(bc, dev, b"fill", value_for(b"fill", R - 4 * A))
    put(bc, dev, b"seal", b"s")  # region 0 sealed: key is read from flash
    return bc.region_offset(0), value


def test_flipped_byte_is_a_miss_and_counted_never_wrong_bytes():
    bc, dev = make()
    off, value = flushed_entry(bc, dev)
    dev.buf[off + 100] ^= 0x01  # inside the value
    assert get(bc, dev, b"key") is None
    assert bc.stats()["checksum_failures"] == 1
    n = len(dev.log)
    assert get(bc, dev, b"key") is None  # the bad entry left the index: no second read
    assert len(dev.log) == n


@settings(max_examples=120, deadline=None)
@given(pos=st.integers(0, 4 * A - 1), mask=st.integers(1, 255))
def test_any_flip_never_returns_wrong_bytes(pos, mask):
    bc, dev = make(nregions=4)
    off, value = flushed_entry(bc, dev)
    dev.buf[off + pos] ^= mask
    got = get(bc, dev, b"key")
    if pos < HEADER_SIZE + 3 + len(value):
        assert got is None and bc.stats()["checksum_failures"] == 1
    else:  # the padding after the entry is not part of it
        assert got == value


def test_trimmed_or_zeroed_entry_is_a_miss():
    bc, dev = make()
    off, _ = flushed_entry(bc, dev)
    dev.buf[off:off + A] = bytes(A)
    assert get(bc, dev, b"key") is None
    assert bc.stats()["checksum_failures"] == 1


def test_key_hash_collision_gives_a_miss_never_another_keys_value(monkeypatch):
    monkeypatch.setattr(bcmod, "key_hash", lambda key: 0xDEADBEEF_00000001)
    bc, dev = make(nregions=4)
    put(bc, dev, b"a", b"value of a")
    put(bc, dev, b"b", b"value of b")  # same tag: replaces a's index entry
    assert get(bc, dev, b"a") is None  # from the buffer
    assert get(bc, dev, b"b") == b"value of b"
    fill_regions(bc, dev, 1)
    run(bc.flush(), dev)
    # every key shares one slot: only the last insert can be found
    last = b"r0-%d" % (PER_REGION - 1)
    for k in [b"a", b"b"] + [b"r0-%d" % i for i in range(PER_REGION)]:
        got = get(bc, dev, k)
        assert got is None if k != last else got == value_for(k)
    put(bc, dev, b"z", b"z")  # seals the region: lookups of the others now read flash
    put(bc, dev, last, value_for(last))
    run(bc.flush(), dev)
    for k in [b"a", b"b", b"z"]:
        assert get(bc, dev, k) is None
    assert bc.stats()["collision_misses"] >= 5
    assert bc.stats()["checksum_failures"] == 0


def test_expiry_with_a_fake_clock():
    clock = FakeClock(1000.0)
    bc, dev = make(clock=clock)
    put(bc, dev, b"short", b"s", expiry=1010)
    put(bc, dev, b"never", b"n")
    fill_regions(bc, dev, 1)
    put(bc, dev, b"x", b"x")  # short and never are on flash now
    assert get(bc, dev, b"short") == b"s"
    assert run(bc.lookup_item(b"short"), dev) == (b"s", 1010)
    clock.t = 1010.0
    assert get(bc, dev, b"short") is None
    assert get(bc, dev, b"never") == b"n"
    s = bc.stats()
    assert s["expired_misses"] == 1 and s["items"] == PER_REGION + 2  # the expired entry left the index
    with pytest.raises(ValueError, match="expiry"):
        bc.insert(b"k", b"v", expiry=-5)


def test_expired_items_are_not_reinserted():
    clock = FakeClock(1000.0)
    bc, dev = make(nregions=6, reinsertion_percent=100, clock=clock)
    put(bc, dev, b"soon", b"s", expiry=1001)
    put(bc, dev, b"later", b"l")
    regions = fill_regions(bc, dev, 4)
    in_region_0 = [k for ks in regions for k in ks if bc.region_of(k) == 0] + [b"later"]
    assert len(in_region_0) == PER_REGION  # soon and later pushed one big item out
    clock.t = 2000.0
    i = 0
    while bc.stats()["evicted_regions"] == 0:
        put(bc, dev, b"f%d" % i, b"f")  # one unit each: reinsertion keeps one unit for the last
        i += 1
    assert bc.stats()["reinsertions"] == len(in_region_0)  # everything in region 0 but "soon"
    assert get(bc, dev, b"later") == b"l" and get(bc, dev, b"soon") is None


# ---------------------------------------------------------------------- lifecycle


def test_reset_empties_the_engine_without_io():
    bc, dev = make()
    regions = fill_regions(bc, dev, 3)
    n = len(dev.log)
    bc.reset()
    assert len(dev.log) == n and bc.generation == 1
    assert all(get(bc, dev, k) is None for ks in regions for k in ks)
    assert len(dev.log) == n
    s = bc.stats()
    assert s["items"] == 0 and s["clean"] == bc.nregions - 1 and s["sealed"] == 0
    put(bc, dev, b"k", b"v")
    assert get(bc, dev, b"k") == b"v"


def test_stale_generation_entry_is_a_miss():
    bc, dev = make()
    flushed_entry(bc, dev)
    state = bc.persist()
    state["generation"] = 5  # as if the engine had been reset since the entry was written
    bc2 = BlockCache(R, 6 * R, region_size=R)
    assert bc2.recover(state)
    assert get(bc2, dev, b"key") is None
    assert bc2.stats()["stale_misses"] == 1 and bc2.stats()["checksum_failures"] == 0


def test_persist_recover_round_trip_through_msgpack():
    bc, dev = make(nregions=6, eviction="lru")
    regions = fill_regions(bc, dev, 5)
    put(bc, dev, b"x", b"x")  # region 0 evicted, region 5 open
    get(bc, dev, regions[1][0])  # region 1 becomes the most recent
    put(bc, dev, b"buffered", b"b")
    run(bc.flush(), dev)
    put(bc, dev, b"unflushed", b"u")  # only in the buffer: not saved
    state = msgpack.unpackb(msgpack.packb(bc.persist(), use_bin_type=True), raw=False)
    bc2 = BlockCache(R, 6 * R, region_size=R, eviction="lru")
    assert bc2.recover(state)
    assert bc2.eviction.order() == [2, 3, 4, 1]
    assert bc2.regions.open == 5 and bc2.regions.state[0] == CLEAN
    before, after = bc.stats(), bc2.stats()
    assert after["inserts"] == before["inserts"] and after["evicted_regions"] == before["evicted_regions"]
    assert after["items"] == before["items"] - 1
    for ks in regions[1:]:
        assert all(get(bc2, dev, k) == value_for(k) for k in ks)
    n = len(dev.log)
    assert get(bc2, dev, b"x") == b"x" and get(bc2, dev, b"buffered") == b"b"  # the open region, from flash
    assert ops(dev, n) == ["read", "read"]
    assert get(bc2, dev, b"unflushed") is None
    # the next insert reads the open region back and appends after what was flushed
    n = len(dev.log)
    put(bc2, dev, b"new", b"n")
    assert dev.log[n:] == [("read", bc2.region_offset(5), R)]
    assert [get(bc2, dev, k) for k in (b"x", b"buffered", b"new")] == [b"x", b"b", b"n"]
    assert len(dev.log) == n + 1  # all three from the buffer
    run(bc2.flush(), dev)
    victim = bc2.eviction.victim()
    assert victim == 1  # the lookups above bumped regions 1, 2, 3, 4 in that order
    put(bc2, dev, b"more", value_for(b"more", R - 3 * A))  # fills region 5
    put(bc2, dev, b"seal", b"s")  # region 5 sealed, region 0 opens, region 1 goes
    assert [get(bc2, dev, k) for k in (b"x", b"buffered", b"new")] == [b"x", b"b", b"n"]
    assert all(get(bc2, dev, k) is None for k in regions[1])


def test_recover_keeps_fifo_order_and_then_keeps_working():
    bc, dev = make(nregions=6)
    regions = fill_regions(bc, dev, 5)
    run(bc.flush(), dev)
    order = bc.eviction.order()
    bc2 = BlockCache(R, 6 * R, region_size=R)
    assert bc2.recover(bc.persist())
    assert bc2.eviction.order() == order == [0, 1, 2, 3]
    n = len(dev.log)
    more = fill_regions(bc2, dev, 3, prefix=b"n")
    # the full open region 4 is read back, then sealed without a second write
    assert dev.log[n:n + 2] == [("read", bc2.region_offset(4), R), ("write", bc2.region_offset(5), R)]
    put(bc2, dev, b"x", b"x")
    assert all(get(bc2, dev, k) is None for k in regions[0] + regions[1] + regions[2] + regions[3])
    assert all(get(bc2, dev, k) == value_for(k) for k in regions[4] + more[0] + more[2])


def test_recover_refuses_another_geometry_or_garbage():
    bc, dev = make()
    fill_regions(bc, dev, 2)
    run(bc.flush(), dev)
    state = bc.persist()
    other = BlockCache(R, 6 * R, region_size=R, alignment=1024)
    assert other.recover(state) is False
    for kw in ({"region_size": 2 * R}, {"size": 8 * R}):
        geo = dict(offset=R, size=6 * R, region_size=R)
        geo.update(kw)
        if geo["offset"] % geo["region_size"]:
            geo["offset"] = geo["region_size"]
        assert BlockCache(**geo).recover(state) is False
    fresh = BlockCache(R, 6 * R, region_size=R)
    bad_states = [
        None, {}, {"engine": "bighash"}, {**state, "format_version": 99}, {**state, "offset": 0},
        {**state, "generation": -1},
        {**state, "index": {**state["index"], "tag": b"123"}},
        {**state, "index": {**state["index"], "addr": b"\xff" * len(state["index"]["addr"])}},
        {**state, "index": {**state["index"], "tag": bytes(len(state["index"]["tag"]))}},  # duplicate tags
        {**state, "regions": {**state["regions"], "open": 99}},
        {**state, "regions": {**state["regions"], "pool": []}},
        {**state, "regions": {**state["regions"], "flushed": 0}},  # index points past the flushed buffer
        {**state, "regions": {**state["regions"], "state": bytes(6)}},  # index points into clean regions
        {**state, "eviction": {**state["eviction"], "seq": b"x"}},
    ]
    for bad in bad_states:
        assert fresh.recover(bad) is False, bad if not isinstance(bad, dict) else bad.keys()
    assert fresh.stats()["items"] == 0 and fresh.generation == 0
    put(fresh, dev, b"k", b"v")
    assert get(fresh, dev, b"k") == b"v"


def test_stats_has_the_named_counters():
    bc, dev = make()
    put(bc, dev, b"k", b"v")
    get(bc, dev, b"k")
    get(bc, dev, b"nope")
    s = bc.stats()
    for name in ("lookups", "hits", "misses", "inserts", "removes", "evicted_regions", "evicted_items",
                 "reinsertions", "checksum_failures", "bytes_written", "region_writes", "index_dram_bytes",
                 "index_bytes_per_item", "items"):
        assert name in s
    assert (s["lookups"], s["hits"], s["misses"], s["inserts"], s["items"]) == (2, 1, 1, 1, 1)


# ---------------------------------------------------------------------- the index


def test_index_dram_per_item_is_at_most_16_bytes_at_every_fill_level():
    """11 B slots (u8 hits): 13.75 B per item at the table's maximum load, 15.7 B just after
    a rebuild, and never over 16 B once the table is past its minimum size."""
    bc, dev = make(nregions=48)
    prev = bc.stats()
    at_max, after_rebuild, every = [], [], []
    for i in range(5000):
        k = b"i%d" % i
        put(bc, dev, k, value_for(k, A))
        s = bc.stats()
        if s["index_capacity"] != prev["index_capacity"]:  # it was rebuilt: it was full before
            at_max.append((prev["items"], prev["index_capacity"], prev["index_bytes_per_item"]))
            after_rebuild.append(s["index_bytes_per_item"])
        if s["items"] >= 200:
            every.append(s["index_bytes_per_item"])
        assert s["index_dram_bytes"] == 11 * s["index_capacity"]
        prev = s
    assert len(at_max) > 20 and at_max[-1][0] > 3000 and len(every) >= 4800
    assert max(every) <= 16, max(every)
    assert max(b for _, _, b in at_max[5:]) <= 13.9 and at_max[-1][2] == pytest.approx(13.75, abs=0.01)
    assert all(b <= 11 / 0.7 + 0.1 for b in after_rebuild[5:])
    assert bc.stats()["evicted_regions"] == 0  # every item was still indexed


def test_index_hits_saturate_at_255_and_an_older_u16_state_loads_clipped():
    import numpy as np

    from engines.blockcache.index import MAX_HITS, Index

    idx = Index()
    idx.put(7, 100, 3)
    slot = idx.find(7)
    for _ in range(300):
        idx.hit(slot)
    assert idx.get(slot)[2] == MAX_HITS == 255
    state = idx.to_state()
    state["hits"] = np.array([60000], "<u2").tobytes()        # as a u16-era warm-restart state held it
    back = Index.from_state(state, max_addr=1 << 20)
    assert back.get(back.find(7))[2] == 255


def test_index_against_a_dict():
    import numpy as np

    from engines.blockcache.index import TOMB, Index, code_units, size_code

    rng = np.random.default_rng(3)
    idx = Index()
    model: dict[int, tuple[int, int]] = {}
    tags = rng.integers(0, 1 << 32, 3000, dtype=np.uint64).tolist()
    tags += [t ^ 1 for t in tags[:500]] + [0xFFFFFFFF, 0, 0xFFFFFFFE]  # near neighbours, extremes
    for step, t in enumerate(tags * 2):
        op = step % 7
        if op < 4:
            addr, units = step % 100_000, 1 + step % 40
            assert idx.put(t, addr, units) == (model[t][0] if t in model else None)
            model[t] = (addr, units)
        elif op < 6 and t in model:
            idx.delete(idx.find(t))
            del model[t]
        elif step % 500 == 0:
            lo, hi = 20_000, 40_000
            slots = idx.slots_in(lo, hi)
            idx.drop(slots)
            model = {k: v for k, v in model.items() if not lo <= v[0] < hi}
        assert len(idx) == len(model)
    for t, (addr, units) in model.items():
        slot = idx.find(t)
        assert slot >= 0 and idx.get(slot)[:2] == (addr, units)
    assert all(idx.find(t) < 0 for t in set(tags) - set(model))
    assert (idx.addr == TOMB).sum() + len(model) == idx.used
    for units in (1, 2, 32767, 32768, 32769, 100_000, 524_288):
        assert units <= code_units(size_code(units)) <= units + 15


@settings(max_examples=60, deadline=None)
@given(homes=st.lists(st.integers(0, 63), max_size=51))
def test_vectorised_rebuild_places_every_tag_where_probing_finds_it(homes):
    from engines.blockcache.index import Index

    idx = Index(64)
    tags = [(h << 26) | i for i, h in enumerate(homes)]  # the top 6 bits pick the home slot
    for i, t in enumerate(tags):
        idx.put(t, i, 1)
    idx.rebuild(64)
    assert all(idx.get(idx.find(t))[0] == i for i, t in enumerate(tags))


# ---------------------------------------------------------------------- arguments


@pytest.mark.parametrize("kwargs, match", [
    ({"alignment": 768}, r"alignment = 768: use a power of two from 512 to 4096"),
    ({"alignment": 8192}, r"alignment = 8192"),
    ({"region_size": 1000}, r"region_size = 1000: use a multiple of alignment \(512\)"),
    ({"region_size": 512 << 20}, r"region_size = 536870912"),
    ({"offset": 100}, r"offset = 100: use a non-negative multiple of region_size"),
    ({"size": R * 3 + 1}, r"size = 196609: use a positive multiple of region_size"),
    ({"size": R * 2}, r"holds 2 regions .* need at least clean_regions \+ 2 = 3"),
    ({"clean_regions": 5}, r"holds 6 regions .* need at least clean_regions \+ 2 = 7"),
    ({"clean_regions": 0}, r"clean_regions = 0"),
    ({"eviction": "random"}, r"eviction = 'random': use one of 'fifo', 'lru', 'sfifo'"),
    ({"segment_ratio": (1, 0)}, r"segment_ratio = \(1, 0\)"),
    ({"reinsertion_hits": -1}, r"reinsertion_hits = -1: use an int from 0 \(off\) to 255"),
    ({"reinsertion_percent": 101}, r"reinsertion_percent = 101: use a number from 0 \(off\) to 100"),
    ({"trim_on_reclaim": "yes"}, r"trim_on_reclaim = 'yes'"),
    ({"generation": -1}, r"generation = -1"),
    ({"clock": 5}, r"clock = 5"),
])
def test_bad_arguments_name_the_value_and_what_is_allowed(kwargs, match):
    args = {"offset": 0, "size": 6 * R, "region_size": R, **kwargs}
    with pytest.raises(ValueError, match=match):
        BlockCache(**args)


# ---------------------------------------------------------------------- against a model

SMALL_R = 8 * A  # 4 KiB regions: evictions come quickly


class BlockCacheVsDict(RuleBasedStateMachine):
    """Lookups may miss (eviction, reinsertion choices, a recovery), but never return a
    value other than the model's latest for that key; removed keys never come back."""

    @initialize(policy=st.sampled_from(["fifo", "lru", "sfifo"]), hits=st.sampled_from([0, 1, 2]),
                percent=st.sampled_from([0, 50]), trim=st.booleans(), clean=st.sampled_from([1, 2]))
    def setup(self, policy, hits, percent, trim, clean):
        self.kw = dict(region_size=SMALL_R, eviction=policy, reinsertion_hits=hits, reinsertion_percent=percent,
                       trim_on_reclaim=trim, clean_regions=clean)
        self.dev = MemDevice(8 * SMALL_R)
        self.bc = BlockCache(SMALL_R, 6 * SMALL_R, **self.kw)
        self.model: dict[bytes, bytes] = {}
        self.version = 0

    keys = st.sampled_from([b"k%d" % i for i in range(8)])
    sizes = st.sampled_from([0, 10, 100, 200, 400, 500, 1500, SMALL_R - HEADER_SIZE - 3])

    @rule(key=keys, size=sizes)
    def insert(self, key, size):
        self.version += 1
        value = (b"%d:" % self.version + key * size)[:size] if size > 8 else bytes([self.version % 256]) * size
        value = value.ljust(size, b".")
        run(self.bc.insert(key, value), self.dev)
        self.model[key] = value

    @rule(key=keys, size=sizes)
    def insert_again(self, key, size):  # inserts twice as often as the other rules
        self.insert(key, size)

    @rule(key=keys)
    def lookup(self, key):
        got = run(self.bc.lookup(key), self.dev)
        assert got is None or got == self.model.get(key), (key, got[:20], self.model.get(key, b"")[:20])

    @rule(keys=st.lists(keys, min_size=1, max_size=4))
    def lookup_many(self, keys):
        got = run_many([self.bc.lookup(k) for k in keys], self.dev)
        assert all(g is None or g == self.model.get(k) for k, g in zip(keys, got))

    @rule(key=keys)
    def remove(self, key):
        run(self.bc.remove(key), self.dev)
        self.model.pop(key, None)

    @rule()
    def flush(self):
        run(self.bc.flush(), self.dev)

    @rule(flush=st.booleans())
    def restart(self, flush):
        if flush:
            run(self.bc.flush(), self.dev)
        state = msgpack.unpackb(msgpack.packb(self.bc.persist(), use_bin_type=True), raw=False)
        self.bc = BlockCache(SMALL_R, 6 * SMALL_R, generation=state["generation"], **self.kw)
        assert self.bc.recover(state)

    @rule()
    def reset(self):
        self.bc.reset()
        self.model.clear()

    @invariant()
    def index_is_consistent(self):
        bc = self.bc
        _, addr, _, _ = bc.index.entries()
        regions = addr // (SMALL_R // A)
        assert all(bc.regions.state[r] in (OPEN, SEALED) for r in regions.tolist())
        assert bc.stats()["items"] == len(addr) <= len(self.model)
        assert len(bc.regions.pool) >= 1
        assert sorted(bc.regions.pool) == [r for r in range(bc.nregions) if bc.regions.state[r] == CLEAN]
        assert bc.eviction.tracked.sum() == (bc.regions.state == SEALED).sum()


BlockCacheVsDict.TestCase.settings = settings(max_examples=100, stateful_step_count=60, deadline=None)
TestBlockCacheVsDict = BlockCacheVsDict.TestCase


@pytest.mark.parametrize("kw", [
    {"eviction": "fifo"},
    {"eviction": "lru", "reinsertion_hits": 1},
    {"eviction": "sfifo", "reinsertion_percent": 50, "trim_on_reclaim": True},
    {"eviction": "sfifo", "segment_ratio": (1, 2, 1), "reinsertion_hits": 2, "clean_regions": 2},
])
def test_long_random_workload_against_a_dict(kw):
    """A longer seeded run than the state machine: hits must come back, never wrong."""
    import random

    rnd = random.Random(7)
    dev = MemDevice(8 * SMALL_R)
    bc = BlockCache(SMALL_R, 6 * SMALL_R, region_size=SMALL_R, **kw)
    model: dict[bytes, bytes] = {}
    hits = misses = 0
    for step in range(3000):
        k = b"k%d" % rnd.randrange(10)
        op = rnd.random()
        if op < 0.45:
            size = rnd.choice([0, 10, 100, 400, 1500, SMALL_R - HEADER_SIZE - 3])
            v = (b"%d." % step * size)[:size]
            run(bc.insert(k, v), dev)
            model[k] = v
        elif op < 0.95:
            got = run(bc.lookup(k), dev)
            assert got is None or got == model.get(k)
            if k in model:
                hits += got is not None
                misses += got is None
        elif op < 0.98:
            run(bc.remove(k), dev)
            model.pop(k, None)
        else:
            run(bc.flush(), dev)
            state = msgpack.unpackb(msgpack.packb(bc.persist(), use_bin_type=True), raw=False)
            bc = BlockCache(SMALL_R, 6 * SMALL_R, region_size=SMALL_R, **kw)
            assert bc.recover(state)
    assert hits > misses
    s = bc.stats()
    assert s["evicted_regions"] > 50 and s["checksum_failures"] == 0
    if kw.get("reinsertion_hits") or kw.get("reinsertion_percent"):
        assert s["reinsertions"] > 0


def test_unflushed_buffer_items_are_not_saved_so_an_old_copy_cannot_come_back():
    bc, dev = make(nregions=3)
    put(bc, dev, b"K", b"old")  # region 0, unit 0
    fill_regions(bc, dev, 3)  # regions 0, 1, 2 written; 0 is evicted and opens again
    assert bc.regions.open == 0 and bc.regions.fill > 0
    bc.reset()  # region 0 opens again with an empty buffer...
    bc.generation = 0  # ...under the old generation (as if nothing had changed)
    put(bc, dev, b"K", b"new")  # unit 0 of region 0 again, only in DRAM
    assert dev.buf[bc.region_offset(0) + HEADER_SIZE:bc.region_offset(0) + HEADER_SIZE + 4] == b"Kold"
    bc2 = BlockCache(R, 3 * R, region_size=R)
    assert bc2.recover(bc.persist())
    assert get(bc2, dev, b"K") is None  # never b"old"


def test_an_overwrite_restarts_the_hit_count():
    bc, dev = make(nregions=6, reinsertion_hits=2)
    put(bc, dev, b"hot", b"old")
    get(bc, dev, b"hot")
    get(bc, dev, b"hot")  # buffer hits count too
    assert bc.index.get(bc.index.find(key_hash(b"hot") >> 32))[2] == 2
    put(bc, dev, b"hot", b"new")  # the hits belonged to the old value
    assert bc.index.get(bc.index.find(key_hash(b"hot") >> 32))[2] == 0
    fill_regions(bc, dev, 5)  # region 0 is evicted
    assert bc.stats()["evicted_regions"] == 1
    assert get(bc, dev, b"hot") is None and bc.stats()["reinsertions"] == 0


def test_a_remove_during_the_reinsertion_read_is_not_undone():
    bc, dev = make(nregions=6, reinsertion_percent=100)
    regions = fill_regions(bc, dev, 5)
    op = bc.insert(b"x", b"x")
    req = next(op)
    assert isinstance(req, Write)
    dev.write(req.offset, req.data, req.stream)
    req = op.send(None)
    assert req == Read(bc.region_offset(0), R)  # region 0 is read back for reinsertion
    gone, changed = regions[0][2], regions[0][5]
    assert run(bc.remove(gone), dev) is True  # interleaves with the insert
    # (inserts are not meant to interleave; if one does, the newer value still wins)
    assert not run(bc.insert(changed, b"newer"), dev).evicted
    with pytest.raises(StopIteration) as stop:
        op.send(dev.read(req.offset, req.length))
    assert stop.value.value.reinserted == PER_REGION - 2
    assert get(bc, dev, gone) is None
    assert get(bc, dev, changed) == b"newer"
    assert all(get(bc, dev, k) == value_for(k) for k in regions[0] if k not in (gone, changed))


def test_index_purges_tombstones_in_place_before_growing():
    import math
    import random

    from engines.blockcache.index import Index

    idx = Index(64)
    events = []
    rebuild = idx.rebuild

    def spy(capacity):
        events.append((idx.capacity, capacity, len(idx)))
        rebuild(capacity)

    idx.rebuild = spy
    rnd = random.Random(5)
    addr = 0
    for _ in range(20_000):
        addr += 1
        idx.put(rnd.getrandbits(32), addr, 1)
        if addr % 50 == 0:  # an eviction: the 50 addresses before the last 50 go
            idx.drop(idx.slots_in(addr - 100, addr - 50))
    assert len(events) > 100
    assert all(new == max(64, math.ceil((live + 1) / 0.7)) for _, new, live in events)
    assert len(idx) <= 100 and idx.capacity <= 145  # tombstones never made it grow


# --------------------------------------------------------------------------- blocking lookup


_OPS = st.lists(st.tuples(st.sampled_from(["put", "put", "get", "get", "get", "remove", "tick", "flip"]),
                          st.integers(0, 30), st.sampled_from([10, 900, 5000, 20_000]),
                          st.sampled_from([0, 0, 5, 50.5])), min_size=60, max_size=200)


def _twin_lookups(ops) -> int:
    """Run ``ops`` on twin engines, lookups by run(lookup_item) on one and lookup_item_now
    on the other, and check they did exactly the same; returns the entry reads."""
    ca, cb = FakeClock(), FakeClock()
    a, da = make(clock=ca)
    b, db = make(clock=cb)
    for op, i, n, ttl in ops:
        key = b"key%d" % i
        if op == "put":
            exp = ca.t + ttl if ttl else 0
            assert put(a, da, key, bytes([i]) * n, exp) == put(b, db, key, bytes([i]) * n, exp)
        elif op == "get":
            assert run(a.lookup_item(key), da) == b.lookup_item_now(db, key)
        elif op == "remove":
            assert run(a.remove(key), da) == run(b.remove(key), db)
        elif op == "flip":
            pos = R + (i * 7919 + n) % (6 * R)
            da.buf[pos] ^= 0x41
            db.buf[pos] ^= 0x41
        else:
            ca.t += 10
            cb.t += 10
    assert da.log == db.log and da.buf == db.buf
    assert a.stats() == b.stats()
    assert all((x == y).all() for x, y in zip(a.index.entries(), b.index.entries()))
    return b.stats()["entry_reads"]


@settings(max_examples=60, deadline=None)
@given(_OPS)
def test_lookup_item_now_does_exactly_what_the_generator_does(ops):
    """lookup_item_now against run(lookup_item) on twin engines: same answers, device
    I/O, counters and index, with items in the open region's buffer and on flash,
    expiry, corrupt entries (a flipped byte), evictions and removes."""
    _twin_lookups(ops)


def test_lookup_item_now_twin_reads_flash():
    """The same on a fixed sequence that surely reads entries from flash."""
    import random
    rnd = random.Random(7)
    kinds = ["put", "put", "get", "get", "get", "remove", "tick", "flip"]
    ops = [(rnd.choice(kinds), rnd.randrange(31), rnd.choice([10, 900, 5000, 20_000]), rnd.choice([0, 0, 5, 50.5]))
           for _ in range(400)]
    assert _twin_lookups(ops) > 20


def test_index_find_from_another_thread_never_misses_a_live_tag_while_it_rebuilds():
    """BlockCache changes its index under its lock, but probes (may_hold, the C Router)
    read it without: a rebuild must swap in a whole new table, never show a half-built
    one (a probe that missed a live key let a stale copy outlive a delete)."""
    import threading

    from engines.blockcache.index import Index

    idx = Index()
    live = list(range(1, 200))
    for t in live:
        idx.put(t * 2654435761 & 0xFFFFFFFF, t, 1)
    stop = threading.Event()
    misses = []

    def reader():
        tags = [t * 2654435761 & 0xFFFFFFFF for t in live]
        while not stop.is_set():
            for tag in tags:
                if idx.find(tag) < 0:
                    misses.append(tag)

    th = threading.Thread(target=reader)
    th.start()
    rebuilds = 0
    try:
        for n in range(400):                 # grow and shrink the table around the live tags
            idx.rebuild(256 + (n % 7) * 512)
            rebuilds += 1
    finally:
        stop.set()
        th.join()
    assert rebuilds == 400 and not misses, f"{len(misses)} live tags missed during rebuilds"
