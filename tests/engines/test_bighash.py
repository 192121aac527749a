"""Tests for engines/bighash/bighash.py, driven through engines.device.run over an in-memory device."""
from __future__ import annotations

import array
import struct

import msgpack
import xxhash
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from engines.bighash import (
    BUCKET_HEADER,
    CHECKSUM_SEED,
    ENTRY_HEADER,
    FORMAT_VERSION,
    MAGIC,
    BigHash,
    InsertResult,
    key_hash,
)
from engines.device import Read, Write, run, run_many
from tests.clock import FakeClock
from tests.engines.memdevice import MemDevice

BS = 512


def make(nbuckets=8, bucket_size=BS, offset=0, **kw):
    """An engine over buckets [offset, offset + nbuckets * bucket_size) of a fresh device
    with one spare bucket either side (to catch writes outside the extent)."""
    dev = MemDevice(offset + (nbuckets + 1) * bucket_size)
    bh = BigHash(offset, nbuckets * bucket_size, bucket_size, **kw)
    return bh, dev


def keys_in_bucket(bh: BigHash, bucket: int, n: int, prefix=b"k") -> list[bytes]:
    out, i = [], 0
    while len(out) < n:
        k = prefix + str(i).encode()
        if bh.bucket_of(key_hash(k)) == bucket:
            out.append(k)
        i += 1
    return out


def get(bh, dev, key):
    return run(bh.lookup(key), dev)


def put(bh, dev, key, value, expiry=0):
    return run(bh.insert(key, value, expiry), dev)


# --------------------------------------------------------------------------- basics


def test_round_trip_many_keys():
    bh, dev = make(nbuckets=64, bucket_size=4096)
    items = {f"key-{i}".encode(): bytes([i % 251]) * (i % 90) for i in range(200)}
    for k, v in items.items():
        put(bh, dev, k, v)
    for k, v in items.items():
        assert get(bh, dev, k) == v
    assert get(bh, dev, b"absent") is None
    s = bh.stats()
    assert s["hits"] == 200 and s["inserts"] == 200 and s["evictions"] == 0


def test_overwrite_returns_the_latest_and_keeps_one_entry():
    bh, dev = make()
    assert put(bh, dev, b"k", b"one") == InsertResult(False, 0, 0)
    assert put(bh, dev, b"k", b"two-two") == InsertResult(True, 0, 0)
    assert get(bh, dev, b"k") == b"two-two"
    off = bh.bucket_offset(bh.bucket_of(key_hash(b"k")))
    count = BUCKET_HEADER.unpack_from(dev.buf, off)[5]
    assert count == 1
    assert bh.stats()["replaced"] == 1


def test_remove_then_lookup_misses_and_second_remove_is_false():
    bh, dev = make()
    put(bh, dev, b"a", b"1")
    put(bh, dev, b"b", b"2")
    assert run(bh.remove(b"a"), dev) is True
    assert get(bh, dev, b"a") is None
    assert get(bh, dev, b"b") == b"2"
    assert run(bh.remove(b"a"), dev) is False
    assert bh.stats()["removed"] == 1


def test_insert_is_one_bucket_read_and_one_bucket_write_on_its_stream():
    stream = object()
    bh, dev = make(offset=3 * BS, stream=stream)
    b = bh.bucket_of(key_hash(b"k"))
    run(bh.insert(b"k", b"v"), dev)
    off = bh.bucket_offset(b)
    assert off == 3 * BS + b * BS
    assert dev.log == [("read", off, BS), ("write", off, BS)]
    assert dev.streams == [stream]
    assert bh.stats()["bytes_written"] == BS


def test_remove_writes_only_when_the_key_was_present():
    bh, dev = make(bloom_bytes_per_bucket=0)  # no filter: the absent remove must read
    run(bh.remove(b"k"), dev)
    assert [op for op, _, _ in dev.log] == ["read"]
    put(bh, dev, b"k", b"v")
    dev.log.clear()
    assert run(bh.remove(b"k"), dev)
    assert [op for op, _, _ in dev.log] == ["read", "write"]


def test_extent_is_respected():
    # Buckets live at [offset, offset + size): nothing is written before or after.
    bh, dev = make(nbuckets=4, offset=2 * BS)
    for i in range(40):
        put(bh, dev, b"x%d" % i, b"y" * 30)
    assert not any(dev.buf[: 2 * BS]) and not any(dev.buf[6 * BS:])
    assert {o for _, o, _ in dev.log} <= {2 * BS + i * BS for i in range(4)}


def test_on_flash_layout_matches_the_docstring():
    bh, dev = make(nbuckets=1, generation=7)
    put(bh, dev, b"key", b"value", expiry=2_000_000)
    magic, version, hsize, _checksum, gen, count, used = BUCKET_HEADER.unpack_from(dev.buf, 0)
    assert (magic, version, hsize, gen, count) == (MAGIC, FORMAT_VERSION, 32, 7, 1)
    assert used == ENTRY_HEADER.size + 3 + 5 == 30
    kh, _vsum, expiry, vlen, klen = ENTRY_HEADER.unpack_from(dev.buf, 32)
    assert (kh, expiry, vlen, klen) == (key_hash(b"key"), 2_000_000, 5, 3)
    assert dev.buf[32 + 22:32 + 30] == b"keyvalue"
    assert not any(dev.buf[32 + 30:BS])


def test_run_many_batches_lookups():
    bh, dev = make(nbuckets=16)
    for i in range(20):
        put(bh, dev, b"k%d" % i, b"v%d" % i)
    got = run_many([bh.lookup(b"k%d" % i) for i in range(20)] + [bh.lookup(b"zz")], dev)
    assert got == [b"v%d" % i for i in range(20)] + [None]


# --------------------------------------------------------------------------- expiry


def test_expiry_with_a_fake_clock():
    clock = FakeClock(1000)
    bh, dev = make(clock=clock)
    put(bh, dev, b"t", b"ttl", expiry=1010)
    put(bh, dev, b"p", b"forever")
    clock.t = 1009.5
    assert get(bh, dev, b"t") == b"ttl"
    clock.t = 1010
    assert get(bh, dev, b"t") is None
    assert get(bh, dev, b"p") == b"forever"
    assert bh.stats()["expired_misses"] == 1
    assert run(bh.remove(b"t"), dev) is False  # an expired entry is not "present"


def test_expired_entries_are_dropped_first_on_insert():
    clock = FakeClock(1000)
    bh, dev = make(nbuckets=1, clock=clock)
    a, b, c = b"a", b"b", b"c"
    put(bh, dev, a, b"x" * 100)
    put(bh, dev, b, b"x" * 100, expiry=1005)
    put(bh, dev, c, b"x" * 100)
    clock.t = 2000
    r = put(bh, dev, b"d", b"x" * 100)  # 3 x 125 B fit in 480 B; the expired one makes room
    assert r == InsertResult(False, 0, 1)
    assert get(bh, dev, a) == b"x" * 100 and get(bh, dev, c) == b"x" * 100
    assert bh.stats()["expired_dropped"] == 1 and bh.stats()["evictions"] == 0


def test_bad_expiry_is_rejected():
    bh, _ = make()
    with pytest.raises(ValueError, match="expiry = -5"):
        bh.insert(b"k", b"v", expiry=-5)
    with pytest.raises(ValueError, match="expiry = 4294967296"):
        bh.insert(b"k", b"v", expiry=2**32)


# --------------------------------------------------------------------------- eviction and limits


def test_fifo_eviction_drops_the_oldest_first():
    bh, dev = make(nbuckets=1)  # every key in one 512 B bucket: 480 B of entries
    v = b"v" * 100  # 22 + 2 + 100 = 124 B per entry: three fit
    keys = [b"k%d" % i for i in range(6)]
    for k in keys[:3]:
        assert put(bh, dev, k, v).evicted == 0
    assert put(bh, dev, keys[3], v) == InsertResult(False, 1, 0)
    assert get(bh, dev, keys[0]) is None
    assert [get(bh, dev, k) for k in keys[1:4]] == [v, v, v]
    put(bh, dev, keys[1], v)  # overwriting k1 makes it the newest
    put(bh, dev, keys[4], v)  # so k2 is now the oldest
    assert get(bh, dev, keys[2]) is None
    assert [get(bh, dev, k) for k in (keys[1], keys[3], keys[4])] == [v, v, v]
    assert bh.stats()["evictions"] == 2


@pytest.mark.parametrize("blocking", [False, True])
def test_an_entry_found_since_the_last_write_gets_a_second_chance(blocking):
    """The hit bits (BigHash.hits): an insert evicts the oldest entry *not* found by a
    lookup since the bucket was written, and moves the found ones after the others (CLOCK's
    second chance, in the write the insert does anyway); the write clears the bits, so an
    entry not found again goes in FIFO order later. Plain FIFO would evict k0 first. The C
    forms (blocking) and the generators alike."""
    bh, dev = make(nbuckets=1)
    v = b"v" * 100                           # 124 B per entry: three fit in 480 B

    def ins(k):
        return bh.insert_now(dev, k, v) if blocking else put(bh, dev, k, v)

    def find(k):
        return bh.lookup_item_now(dev, k) if blocking else run(bh.lookup_item(k), dev)

    for k in (b"k0", b"k1", b"k2"):
        ins(k)
    assert find(b"k0") == (v, 0.0)
    assert int(bh.hits[0]) == 1          # entry 0, the oldest
    assert ins(b"k3").evicted == 1
    assert int(bh.hits[0]) == 0          # the write cleared them
    assert [get(bh, dev, k) is not None for k in (b"k0", b"k1", b"k2", b"k3")] == [True, False, True, True]
    bh.hits[0] = 0                       # forget the lookups just made
    ins(b"k4")                           # now k2, then k0 (moved behind it) go, oldest first
    assert get(bh, dev, b"k2") is None and get(bh, dev, b"k0") == v
    bh.hits[0] = 0
    ins(b"k5")
    assert get(bh, dev, b"k0") is None


def test_when_every_survivor_was_found_the_oldest_goes():
    bh, dev = make(nbuckets=1)
    v = b"v" * 100
    for k in (b"k0", b"k1", b"k2"):
        put(bh, dev, k, v)
    for k in (b"k2", b"k0", b"k1"):
        assert get(bh, dev, k) == v
    assert int(bh.hits[0]) == 0b111
    assert put(bh, dev, b"k3", v).evicted == 1
    assert get(bh, dev, b"k0") is None and all(get(bh, dev, k) == v for k in (b"k1", b"k2", b"k3"))


def test_a_remove_keeps_the_other_entries_hit_bits():
    bh, dev = make(nbuckets=1)
    v = b"v" * 100
    for k in (b"k0", b"k1", b"k2"):
        put(bh, dev, k, v)
    assert get(bh, dev, b"k2") == v
    assert int(bh.hits[0]) == 0b100
    assert run(bh.remove(b"k0"), dev)
    assert int(bh.hits[0]) == 0b10           # k2 is entry 1 now
    put(bh, dev, b"k3", v)                   # fits: nothing goes
    put(bh, dev, b"k4", v)                   # k1 goes, not k2
    assert get(bh, dev, b"k1") is None and get(bh, dev, b"k2") == v


def test_a_lookup_that_raced_a_write_sets_no_hit_bit():
    bh, dev = make(nbuckets=1)
    put(bh, dev, b"k0", b"v")
    op = bh.lookup(b"k0")
    req = next(op)
    put(bh, dev, b"k1", b"v")                # a write lands while the lookup's read is out
    with pytest.raises(StopIteration):
        op.send(dev.read(req.offset, req.length))
    assert int(bh.hits[0]) == 0


def test_restarts_and_resets_begin_with_no_hit_bits():
    bh, dev = make(nbuckets=1)
    put(bh, dev, b"k0", b"v")
    assert get(bh, dev, b"k0") == b"v" and int(bh.hits[0]) == 1
    state = msgpack.unpackb(msgpack.packb(bh.persist()), raw=False)
    fresh = BigHash(0, bh.size, BS)
    assert fresh.recover(state) and int(fresh.hits[0]) == 0
    bh.reset()
    assert int(bh.hits[0]) == 0


def test_a_big_item_evicts_as_many_as_needed():
    bh, dev = make(nbuckets=1)
    for i in range(4):
        put(bh, dev, b"k%d" % i, b"v" * 80)  # 104 B each, 416 B used
    r = put(bh, dev, b"big", b"B" * 300)  # needs 325 B: three must go
    assert r.evicted == 3
    assert get(bh, dev, b"k3") == b"v" * 80 and get(bh, dev, b"big") == b"B" * 300


def test_too_big_item_names_the_size_and_the_limit():
    bh, dev = make()
    assert bh.max_item_size == BS - 32 == 480
    put(bh, dev, b"k", b"x" * (480 - 22 - 1))  # exactly max_item_size fits
    assert get(bh, dev, b"k") == b"x" * 457
    with pytest.raises(ValueError) as e:
        bh.insert(b"k", b"x" * 458)
    msg = str(e.value)
    assert "item of 481 bytes" in msg and "max_item_size 480" in msg and "bucket_size 512" in msg
    assert get(bh, dev, b"k") == b"x" * 457  # the failed insert changed nothing


def test_keys_and_values_must_be_bytes():
    bh, dev = make()
    with pytest.raises(TypeError, match="key must be bytes"):
        bh.insert("str", b"v")
    with pytest.raises(TypeError, match="value must be bytes"):
        bh.insert(b"k", 5)
    with pytest.raises(TypeError, match="key must be bytes"):
        get(bh, dev, "str")


def test_memoryview_and_bytearray_keys_work():
    bh, dev = make()
    put(bh, dev, bytearray(b"k1"), memoryview(b"v1"))
    assert get(bh, dev, memoryview(b"k1")) == b"v1"
    assert run(bh.remove(bytearray(b"k1")), dev)
    wide = memoryview(array.array("I", [1, 2]))  # 2 items, 8 bytes
    put(bh, dev, wide, wide)
    assert get(bh, dev, bytes(wide)) == bytes(wide)


# --------------------------------------------------------------------------- corruption


def test_flipped_byte_in_a_bucket_is_a_miss_and_counted():
    bh, dev = make(nbuckets=1)
    put(bh, dev, b"key", b"value")
    dev.buf[32 + 22 + 3] ^= 0x01  # first byte of the value
    assert get(bh, dev, b"key") is None
    assert bh.stats()["checksum_failures"] == 1


@settings(max_examples=150, deadline=None)
@given(pos=st.integers(0, BS - 1), mask=st.integers(1, 255))
def test_any_flip_never_returns_wrong_bytes(pos, mask):
    bh, dev = make(nbuckets=1)
    put(bh, dev, b"a", b"A" * 50)
    put(bh, dev, b"bb", b"B" * 60)
    used = BUCKET_HEADER.unpack_from(dev.buf, 0)[6]
    dev.buf[pos] ^= mask
    bh2 = BigHash(0, BS, BS)  # a cold engine: the flip is the only thing it sees
    got = [get(bh2, dev, b"a"), get(bh2, dev, b"bb")]
    if pos < 32 + used:
        assert got == [None, None]
        assert bh2.stats()["checksum_failures"] == 1
    else:  # the zero padding after the entries carries no data
        assert got == [b"A" * 50, b"B" * 60]


def test_entry_value_checksum_is_checked_even_if_the_bucket_checksum_passes():
    # Defence in depth: a value that changed under a (recomputed) valid bucket checksum.
    bh, dev = make(nbuckets=1)
    put(bh, dev, b"key", b"value")
    dev.buf[32 + 22 + 3] ^= 0x01
    used = BUCKET_HEADER.unpack_from(dev.buf, 0)[6]
    struct.pack_into("<Q", dev.buf, 8, xxhash.xxh3_64_intdigest(bytes(dev.buf[16:32 + used]), CHECKSUM_SEED ^ 0))
    assert get(bh, dev, b"key") is None
    assert bh.stats()["checksum_failures"] == 1


def test_corrupt_bucket_is_rewritten_clean_by_the_next_insert():
    bh, dev = make(nbuckets=1)
    put(bh, dev, b"old", b"1")
    dev.buf[20] ^= 0xFF  # the generation
    r = put(bh, dev, b"new", b"2")
    assert r == InsertResult(False, 0, 0)
    assert get(bh, dev, b"new") == b"2" and get(bh, dev, b"old") is None
    assert bh.stats()["checksum_failures"] == 1


def test_never_written_and_trimmed_buckets_are_empty_not_failures():
    bh, dev = make(nbuckets=2)
    assert get(bh, dev, b"anything") is None
    put(bh, dev, b"k", b"v")
    off = bh.bucket_offset(bh.bucket_of(key_hash(b"k")))
    dev.trim(off, BS)
    bh2 = BigHash(0, 2 * BS, BS)
    assert get(bh2, dev, b"k") is None
    assert bh.stats()["checksum_failures"] == 0 and bh2.stats()["checksum_failures"] == 0


def test_a_bucket_moved_to_another_slot_fails_its_checksum():
    bh, dev = make(nbuckets=2)
    k = keys_in_bucket(bh, 0, 1)[0]
    put(bh, dev, k, b"v")
    at0, at1 = bh.bucket_offset(0), bh.bucket_offset(1)
    dev.buf[at1:at1 + BS] = dev.buf[at0:at0 + BS]  # bucket 0's image written to bucket 1
    assert get(bh, dev, keys_in_bucket(bh, 1, 1)[0]) is None
    assert bh.stats()["checksum_failures"] == 1


def test_stale_generation_reads_as_empty_without_a_failure():
    bh, dev = make(nbuckets=1)
    put(bh, dev, b"k", b"v")
    newer = BigHash(0, BS, BS, generation=1)
    assert get(newer, dev, b"k") is None
    s = newer.stats()
    assert s["stale_buckets"] == 1 and s["checksum_failures"] == 0


def test_failed_write_makes_the_bucket_filter_unknown():
    bh, dev = make(nbuckets=1)
    bh.reset()  # filters known empty
    op = bh.insert(b"k", b"v")
    assert isinstance(next(op), Read)
    assert isinstance(op.send(bytes(BS)), Write)
    with pytest.raises(OSError):
        op.throw(OSError(5, "EIO"))
    assert bh.bloom.may_contain(0, key_hash(b"anything"))


# --------------------------------------------------------------------------- the item count


def entries_on_flash(bh, dev) -> int:
    """The ground truth: entries in every bucket that reads as valid, by a full scan."""
    from engines.bighash.bighash import _ffi, _lib
    aux = _ffi.new("uint32_t *")
    n = 0
    for b in range(bh.nbuckets):
        data = dev.read(bh.bucket_offset(b), bh.bucket_size)
        if _lib.fc_bucket_check(_ffi.from_buffer(data), bh.bucket_size, b, bh.generation, aux) == _lib.FC_OK:
            n += BUCKET_HEADER.unpack_from(data)[5]
    return n


@pytest.mark.parametrize("blocking", [False, True])
def test_item_count_follows_inserts_replacements_evictions_expiry_and_removes(blocking):
    clock = FakeClock()
    bh, dev = make(nbuckets=4, clock=clock)
    assert bh.items is None and not bh.items_exact     # never reset, never recovered: unknown
    bh.reset()
    assert (bh.items, bh.items_exact) == (0, True)
    ins = (lambda k, v, e=0: bh.insert_now(dev, k, v, e)) if blocking else (lambda k, v, e=0: put(bh, dev, k, v, e))
    keys = keys_in_bucket(bh, 1, 12)
    for i, k in enumerate(keys[:4]):
        ins(k, b"v" * 50, clock.t + 5 if i == 0 else 0)
    assert bh.items == entries_on_flash(bh, dev) == 4
    ins(keys[1], b"w" * 60)                           # replaced: still 4
    assert bh.items == entries_on_flash(bh, dev) == 4
    clock.t += 10                                      # keys[0] expires: counted until dropped
    for k in keys[4:]:                                 # fill the bucket: expired dropped, oldest evicted
        ins(k, b"x" * 100)
    s = bh.stats()
    assert s["evictions"] > 0 and s["expired_dropped"] == 1
    assert s["items"] == bh.items == entries_on_flash(bh, dev) and s["items_exact"]
    assert run(bh.remove(keys[-1]), dev) and not run(bh.remove(b"absent"), dev)
    assert bh.items == entries_on_flash(bh, dev) and bh.items_exact


@settings(max_examples=80, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["insert", "insert", "insert", "insert_now", "remove", "tick", "restart"]),
                          st.integers(0, 15), st.integers(0, 200), st.sampled_from([0, 0, 3])), max_size=60))
def test_item_count_equals_a_full_scan_after_any_operations(ops):
    """Two small buckets, so replacements, evictions and expiry all happen."""
    clock = FakeClock()
    bh, dev = make(nbuckets=2, clock=clock)
    bh.reset()
    for op, k, n, ttl in ops:
        key = b"key%d" % k
        if op == "insert":
            put(bh, dev, key, bytes(n), clock.t + ttl if ttl else 0)
        elif op == "insert_now":
            bh.insert_now(dev, key, bytes(n), clock.t + ttl if ttl else 0)
        elif op == "remove":
            run(bh.remove(key), dev)
        elif op == "tick":
            clock.t += 2
        else:
            state = msgpack.unpackb(msgpack.packb(bh.persist()))
            bh = BigHash(0, 2 * BS, BS, clock=clock)
            assert bh.recover(state)
        assert bh.items_exact and bh.items == entries_on_flash(bh, dev), op


def test_item_count_survives_a_warm_restart_and_a_cold_engine_samples_it():
    bh, dev = make(nbuckets=64)
    bh.reset()
    for i in range(150):
        put(bh, dev, b"k%d" % i, b"v" * 30)
    truth = entries_on_flash(bh, dev)
    state = msgpack.unpackb(msgpack.packb(bh.persist()))
    warm = BigHash(0, 64 * BS, BS)
    assert warm.recover(state) and (warm.items, warm.items_exact) == (truth, True)
    put(warm, dev, b"new", b"1")
    assert warm.items == entries_on_flash(warm, dev) == truth + 1
    # metadata from before the count was kept: recovered, but the count is unknown
    old = {k: v for k, v in state.items() if k not in ("items", "items_exact")}
    older = BigHash(0, 64 * BS, BS)
    assert older.recover(old) and older.items is None
    cold = BigHash(0, 64 * BS, BS, generation=bh.generation)
    assert cold.items is None
    dev.log.clear()
    assert run(cold.estimate_items(), dev) == truth + 1   # 64 buckets, all sampled: exact
    assert cold.items_exact and len(dev.log) == 64
    sampled = BigHash(0, 64 * BS, BS, generation=bh.generation)
    est = run(sampled.estimate_items(samples=16), dev)
    assert not sampled.items_exact and abs(est - (truth + 1)) <= 0.5 * truth
    assert len(dev.log) == 64 + 16


def test_corruption_or_a_failed_write_makes_the_count_approximate():
    bh, dev = make(nbuckets=4)
    bh.reset()
    put(bh, dev, b"a", b"1")
    b = bh.bucket_of(key_hash(b"a"))
    dev.buf[bh.bucket_offset(b) + 40] ^= 0xFF        # the entry's bytes: the checksum fails
    assert get(bh, dev, b"a") is None
    assert bh.stats()["checksum_failures"] == 1 and not bh.items_exact

    def fail(*a, **k):
        raise OSError(5, "I/O error")

    for blocking in (True, False):
        bh, dev = make(nbuckets=4)
        bh.reset()
        dev.write = fail
        with pytest.raises(OSError):
            bh.insert_now(dev, b"k", b"v") if blocking else put(bh, dev, b"k", b"v")
        assert bh.stats()["write_failures"] == 1 and not bh.items_exact
        state = bh.persist()                           # the approximation is saved as such
        again = BigHash(0, 4 * BS, BS)
        assert again.recover(state) and not again.items_exact


# --------------------------------------------------------------------------- bloom filters


def test_miss_on_an_empty_engine_does_no_io():
    bh, _ = make()
    bh.reset()  # what a router does on a fresh (formatted) extent: filters known empty
    op = bh.lookup(b"nope")
    with pytest.raises(StopIteration) as stop:
        next(op)
    assert stop.value.value is None
    op = bh.remove(b"nope")
    with pytest.raises(StopIteration) as stop:
        next(op)
    assert stop.value.value is False
    assert bh.stats()["bloom_rejects"] == 2


def test_cold_engine_reads_old_buckets_and_learns_their_filters():
    bh, dev = make(nbuckets=1)
    put(bh, dev, b"k", b"v")
    cold = BigHash(0, BS, BS)  # no recover: filters unknown
    assert get(cold, dev, b"k") == b"v"
    warm = BigHash(0, BS, BS)
    warm.bloom.clear_all()
    warm.bloom.rebuild(0, [key_hash(b"k")])
    assert (cold.bloom.bits == warm.bloom.bits).all()  # the read taught it the bucket's keys


def test_lookup_learns_nothing_if_a_write_landed_while_it_read():
    bh, dev = make(nbuckets=1)
    look = bh.lookup(b"x")
    req = next(look)  # the lookup's read is in flight ...
    old = dev.read(req.offset, req.length)
    put(bh, dev, b"new", b"1")  # ... when an insert rewrites the bucket
    with pytest.raises(StopIteration):
        look.send(old)
    assert get(bh, dev, b"new") == b"1"  # the stale read must not have hidden "new"
    assert bh.stats()["bloom_rejects"] == 0


def test_writes_keep_the_filter_exact():
    bh, dev = make(nbuckets=1)
    bh.reset()
    put(bh, dev, b"a", b"1")
    put(bh, dev, b"b", b"2")
    run(bh.remove(b"a"), dev)
    expect = BigHash(0, BS, BS)
    expect.bloom.rebuild(0, [key_hash(b"b")])
    assert (bh.bloom.bits == expect.bloom.bits).all()


@settings(max_examples=50, deadline=None)
@given(st.lists(st.binary(min_size=1, max_size=12), min_size=1, max_size=40, unique=True))
def test_bloom_never_hides_a_stored_key(keys):
    bh, dev = make(nbuckets=4, bucket_size=4096)
    bh.reset()
    for k in keys:
        put(bh, dev, k, k)
    for k in keys:
        assert bh.bloom.may_contain(bh.bucket_of(key_hash(k)), key_hash(k))
        assert get(bh, dev, k) == k


def test_keys_of_one_bucket_spread_over_its_filter():
    # The bucket and the filter use different bits of the key hash: otherwise every key of
    # a bucket would hit the same filter bits and the filter would reject nothing.
    bh, dev = make(nbuckets=64, bucket_size=4096)
    bh.reset()
    keys = keys_in_bucket(bh, 5, 205)
    for k in keys[:5]:
        put(bh, dev, k, b"v")
    dev.log.clear()
    assert sum(get(bh, dev, k) is None for k in keys[5:]) == 200
    assert len(dev.log) < 20  # ~0.5 % expected false positives, 10 % allowed


def test_bloom_disabled_reads_every_time():
    bh, dev = make(bloom_bytes_per_bucket=0)
    bh.reset()
    assert get(bh, dev, b"k") is None
    assert get(bh, dev, b"k") is None
    assert len(dev.log) == 2 and bh.stats()["bloom_dram_bytes"] == 0


# --------------------------------------------------------------------------- persist / recover


def test_persist_recover_round_trip_through_msgpack():
    bh, dev = make(nbuckets=8)
    bh.reset()
    for i in range(30):
        put(bh, dev, b"k%d" % i, b"v%d" % i)
    get(bh, dev, b"k1")
    state = msgpack.unpackb(msgpack.packb(bh.persist()))
    new = BigHash(0, 8 * BS, BS)
    assert new.recover(state) is True
    assert new.generation == bh.generation == 1
    assert (new.bloom.bits == bh.bloom.bits).all()
    assert new.stats()["inserts"] == 30 and new.stats()["hits"] == 1
    present = [k for k in (b"k%d" % i for i in range(30)) if get(bh, dev, k) is not None]
    assert present and all(get(new, dev, k) == get(bh, dev, k) for k in present)
    # a key the saved filters reject costs the recovered engine no I/O either
    rejected = next(b"z%d" % i for i in range(10_000)
                    if not bh.bloom.may_contain(bh.bucket_of(key_hash(b"z%d" % i)), key_hash(b"z%d" % i)))
    dev.log.clear()
    assert get(new, dev, rejected) is None and dev.log == []


def test_recover_refuses_another_geometry_or_garbage():
    bh, dev = make(nbuckets=8)
    bh.reset()
    state = bh.persist()
    before = BigHash(0, 16 * BS, BS)
    assert before.recover(state) is False
    assert before.generation == 0 and before.bloom.may_contain(0, 1)  # unchanged, cold
    for bad in (None, {}, {"engine": "blockcache"}, {**state, "bloom": b"junk"}, {**state, "generation": -1},
                {**state, "format_version": 99}, {k: v for k, v in state.items() if k != "size"}):
        assert BigHash(0, 8 * BS, BS).recover(bad) is False


def test_reset_empties_the_engine_without_io():
    bh, dev = make()
    put(bh, dev, b"k", b"v")
    n = len(dev.log)
    bh.reset()
    assert len(dev.log) == n
    assert get(bh, dev, b"k") is None
    put(bh, dev, b"k2", b"v2")
    assert get(bh, dev, b"k2") == b"v2"


def test_stats_has_the_named_counters():
    bh, dev = make()
    s = bh.stats()
    for name in ("lookups", "hits", "inserts", "removes", "evictions", "bloom_rejects",
                 "checksum_failures", "bytes_written", "bloom_dram_bytes"):
        assert name in s
    assert s["bloom_dram_bytes"] == 8 * 8
    assert run(bh.flush(), dev) is None


# --------------------------------------------------------------------------- arguments


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(offset=0, size=4096, bucket_size=1000), "bucket_size = 1000: use a multiple of 512"),
        (dict(offset=0, size=4096, bucket_size=256), "bucket_size = 256"),
        (dict(offset=100, size=4096), "offset = 100: use a non-negative multiple of bucket_size"),
        (dict(offset=-4096, size=4096), "offset = -4096"),
        (dict(offset=0, size=0), "size = 0: use a positive multiple of bucket_size"),
        (dict(offset=0, size=6000), "size = 6000"),
        (dict(offset=0, size=4096, bloom_bytes_per_bucket=-1), "bloom_bytes_per_bucket = -1"),
        (dict(offset=0, size=4096, bloom_hashes=0), "bloom_hashes = 0"),
        (dict(offset=0, size=4096, generation=-1), "generation = -1"),
        (dict(offset=0, size=4096, clock=5), "clock = 5"),
    ],
)
def test_bad_arguments_name_the_value_and_what_is_allowed(kwargs, match):
    with pytest.raises(ValueError, match=match):
        BigHash(**kwargs)


# --------------------------------------------------------------------------- stateful model


KEYS = [b"k%d" % i for i in range(24)]


class BigHashVsDict(RuleBasedStateMachine):
    """BigHash against a dict: a lookup may miss (eviction, corruption) but never returns
    anything other than the model's latest live value; a removed key never comes back."""

    def __init__(self):
        super().__init__()
        self.clock = FakeClock(1000)
        self.dev = MemDevice(8 * BS)
        self.bh = BigHash(0, 8 * BS, BS, clock=self.clock)
        self.model: dict[bytes, tuple[bytes, int]] = {}

    def _live(self, key):
        v = self.model.get(key)
        if v is None or (v[1] and v[1] <= self.clock.t):
            return None
        return v[0]

    @rule(key=st.sampled_from(KEYS), value=st.binary(max_size=150),
          ttl=st.sampled_from([0, 0, 0, 1, 5, 30]))
    def insert(self, key, value, ttl):
        expiry = self.clock.t + ttl if ttl else 0
        run(self.bh.insert(key, value, expiry), self.dev)
        self.model[key] = (value, expiry)
        if not ttl:
            assert run(self.bh.lookup(key), self.dev) == value  # just written: must hit

    @rule(key=st.sampled_from(KEYS))
    def lookup(self, key):
        got = run(self.bh.lookup(key), self.dev)
        if got is not None:
            assert got == self._live(key)

    @rule(key=st.sampled_from(KEYS))
    def remove(self, key):
        was = self._live(key)
        removed = run(self.bh.remove(key), self.dev)
        if removed:
            assert was is not None
        self.model.pop(key, None)
        assert run(self.bh.lookup(key), self.dev) is None

    @rule(dt=st.integers(1, 10))
    def tick(self, dt):
        self.clock.t += dt

    @rule()
    def warm_restart(self):
        state = msgpack.unpackb(msgpack.packb(self.bh.persist()))
        self.bh = BigHash(0, 8 * BS, BS, clock=self.clock)
        assert self.bh.recover(state)

    @rule()
    def cold_restart(self):
        self.bh = BigHash(0, 8 * BS, BS, clock=self.clock, generation=self.bh.generation)

    @rule(pos=st.integers(0, 8 * BS - 1), mask=st.integers(1, 255))
    def corrupt(self, pos, mask):
        self.dev.buf[pos] ^= mask
        self.tampered = True            # behind the engine's back: its count cannot know yet

    @precondition(lambda self: len(self.model) > 0)
    @rule()
    def reset(self):
        self.bh.reset()
        self.model.clear()
        self.tampered = False

    @invariant()
    def an_exact_item_count_is_what_the_buckets_hold(self):
        if self.bh.items_exact and not getattr(self, "tampered", False):
            assert self.bh.items == entries_on_flash(self.bh, self.dev)

    @invariant()
    def no_key_outside_the_model(self):
        for key in KEYS:
            if key not in self.model:
                assert run(self.bh.lookup(key), self.dev) is None


BigHashVsDict.TestCase.settings = settings(max_examples=60, stateful_step_count=40, deadline=None)
TestBigHashVsDict = BigHashVsDict.TestCase


# --------------------------------------------------------------------------- the C core
# engines/bighash/_bucket.c does the per-bucket work; these pin it to the pure-Python reference
# below (the code it replaced), byte for byte, and to python-xxhash.

from engines.bighash import KEY_SEED  # noqa: E402
from engines.bighash._bucket_c import lib as c_lib  # noqa: E402


@pytest.mark.parametrize("n", [0, 1, 3, 4, 8, 9, 16, 17, 128, 129, 240, 241, 300, 1024, 4096, 4097, 70000])
def test_c_xxh3_64_equals_python_xxhash(n):
    data = bytes((i * 131 + n) & 0xFF for i in range(n))
    for seed in (0, 1, KEY_SEED, CHECKSUM_SEED ^ 7, (1 << 64) - 1):
        assert c_lib.fc_xxh3_64(data, n, seed) == xxhash.xxh3_64_intdigest(data, seed)
    assert (c_lib.fc_key_seed, c_lib.fc_checksum_seed) == (KEY_SEED, CHECKSUM_SEED)


def _ref_entries(data, size, bucket, generation):
    """The pre-C parser: [(key_hash, value_sum, expiry, start, klen, vlen)], or None (corrupt)."""
    magic, version, hsize, checksum, gen, count, used = BUCKET_HEADER.unpack_from(data)
    if magic != MAGIC:
        return [] if not any(data) else None
    if version != FORMAT_VERSION or hsize != 32 or used > size - 32:
        return None
    if xxhash.xxh3_64_intdigest(bytes(data[16:32 + used]), CHECKSUM_SEED ^ bucket) != checksum:
        return None
    if gen != generation:
        return []
    out, pos, end = [], 32, 32 + used
    for _ in range(count):
        if pos + 22 > end:
            return None
        kh, vsum, exp, vlen, klen = ENTRY_HEADER.unpack_from(data, pos)
        if pos + 22 + klen + vlen > end:
            return None
        out.append((kh, vsum, exp, pos, klen, vlen))
        pos += 22 + klen + vlen
    return out if pos == end else None


def _ref_image(parts, size, bucket, generation):
    body = b"".join(parts)
    buf = bytearray(size)
    buf[32:32 + len(body)] = body
    BUCKET_HEADER.pack_into(buf, 0, MAGIC, FORMAT_VERSION, 32, 0, generation, len(parts), len(body))
    struct.pack_into("<Q", buf, 8, xxhash.xxh3_64_intdigest(bytes(buf[16:32 + len(body)]), CHECKSUM_SEED ^ bucket))
    return bytes(buf)


def _ref_insert(data, size, bucket, generation, now, key, value, expiry):
    entries = _ref_entries(data, size, bucket, generation) or []
    kh = key_hash(key)
    kept, replaced, expired = [], False, 0
    for ekh, _, eexp, start, eklen, evlen in entries:
        if ekh == kh and data[start + 22:start + 22 + eklen] == key:
            replaced = True
        elif eexp and eexp <= now:
            expired += 1
        else:
            kept.append(bytes(data[start:start + 22 + eklen + evlen]))
    need = 22 + len(key) + len(value)
    evicted = 0
    while sum(map(len, kept[evicted:])) > size - 32 - need:
        evicted += 1
    new = ENTRY_HEADER.pack(kh, xxhash.xxh3_64_intdigest(value, KEY_SEED) & 0xFFFFFFFF, expiry, len(value), len(key))
    image = _ref_image(kept[evicted:] + [new + key + value], size, bucket, generation)
    return image, InsertResult(replaced, evicted, expired)


def _ref_remove(data, size, bucket, generation, now, key):
    entries = _ref_entries(data, size, bucket, generation)
    if not entries:
        return None
    kh = key_hash(key)
    hits = [e for e in entries if e[0] == kh and data[e[3] + 22:e[3] + 22 + e[4]] == key]
    if not hits or (hits[-1][2] and hits[-1][2] <= now):
        return None
    parts = [bytes(data[s:s + 22 + kl + vl]) for h, _, _, s, kl, vl in entries
             if not (h == kh and data[s + 22:s + 22 + kl] == key)]
    return _ref_image(parts, size, bucket, generation)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["insert", "insert", "insert", "remove", "tick", "flip"]),
                          st.integers(0, 15), st.integers(0, 400), st.sampled_from([0, 0, 0, 1, 3, 60]),
                          st.integers(0, BS - 1)), max_size=60),
       st.sampled_from([0, 8]))
def test_c_core_writes_exactly_what_the_python_reference_wrote(ops, bloom_bytes):
    clock = FakeClock(1000)
    bh, dev = make(nbuckets=1, clock=clock, generation=3, bloom_bytes_per_bucket=bloom_bytes)
    for op, k, vlen, ttl, pos in ops:
        key, value = b"k%d" % k, bytes([k]) * vlen
        before = bytes(dev.buf[:BS])
        if op == "insert":
            expiry = clock.t + ttl if ttl else 0
            want, want_r = _ref_insert(before, BS, 0, 3, clock.t, key, value, expiry)
            assert put(bh, dev, key, value, expiry) == want_r
            assert bytes(dev.buf[:BS]) == want
        elif op == "remove":
            want = _ref_remove(before, BS, 0, 3, clock.t, key)
            assert run(bh.remove(key), dev) is (want is not None)
            assert bytes(dev.buf[:BS]) == (before if want is None else want)
        elif op == "tick":
            clock.t += ttl
        else:
            dev.buf[pos] ^= 1 + k
        for kk in range(16):  # every lookup agrees with the reference parser
            key = b"k%d" % kk
            entries = _ref_entries(bytes(dev.buf[:BS]), BS, 0, 3) or []
            hits = [e for e in entries if e[0] == key_hash(key) and dev.buf[e[3] + 22:e[3] + 22 + e[4]] == key]
            want = None
            if hits:
                _, vsum, exp, s, kl, vl = hits[-1]
                v = bytes(dev.buf[s + 22 + kl:s + 22 + kl + vl])
                if not (exp and exp <= clock.t) and xxhash.xxh3_64_intdigest(v, KEY_SEED) & 0xFFFFFFFF == vsum:
                    want = (v, float(exp))
            assert run(bh.lookup_item(key), dev) == want


def _image_with(mutate, bucket=0, generation=0, fix_checksum=True):
    """A one-entry bucket image, changed by ``mutate`` and (optionally) re-checksummed."""
    bh, dev = make(nbuckets=1, generation=generation)
    put(bh, dev, b"key", b"value")
    buf = bytearray(dev.buf[:BS])
    mutate(buf)
    if fix_checksum:
        used = min(BUCKET_HEADER.unpack_from(buf)[6], BS - 32)
        struct.pack_into("<Q", buf, 8, xxhash.xxh3_64_intdigest(bytes(buf[16:32 + used]), CHECKSUM_SEED ^ bucket))
    return buf


@pytest.mark.parametrize("mutate, fix, why", [
    (lambda b: b.__setitem__(slice(0, 4), b"XXXX"), True, "bad magic b'XXXX'"),
    (lambda b: struct.pack_into("<H", b, 4, 9), True, "format version 9 header 32 B, this code reads 1"),
    (lambda b: struct.pack_into("<H", b, 6, 40), True, "format version 1 header 40 B, this code reads 1"),
    (lambda b: struct.pack_into("<I", b, 28, 5000), False, "used_bytes 5000 > 480"),
    (lambda b: b.__setitem__(40, b[40] ^ 1), False, "checksum mismatch"),
    (lambda b: struct.pack_into("<I", b, 24, 2), True, "entries overrun used_bytes"),
    (lambda b: struct.pack_into("<I", b, 32 + 16, 6), True, "entries overrun used_bytes"),
    (lambda b: struct.pack_into("<I", b, 24, 0), True, "0 entries end at 0, used_bytes says 30"),
])
def test_each_corruption_is_logged_with_its_reason(mutate, fix, why, caplog):
    image = _image_with(mutate, fix_checksum=fix)
    bh, dev = make(nbuckets=1)
    dev.buf[:BS] = image
    with caplog.at_level("WARNING", logger="engines.bighash"):
        assert get(bh, dev, b"key") is None
    assert f"bucket 0 at offset 0 is corrupt ({why}); reading it as empty" in caplog.text
    s = bh.stats()
    assert s["checksum_failures"] == 1 and s["flash_misses"] == 1
    assert bh.bloom.may_contain(0, key_hash(b"key")) is False  # learned: reads as empty
    assert put(bh, dev, b"other", b"1") == InsertResult(False, 0, 0)  # rewritten clean
    assert bh.stats()["checksum_failures"] == 2 and get(bh, dev, b"other") == b"1"


class _ViewDevice(MemDevice):
    """Reads come back as bytearray or memoryview, as ring and mmap devices may return."""

    def __init__(self, size, kind):
        super().__init__(size)
        self.kind = kind

    def read(self, offset, length):
        data = super().read(offset, length)
        return bytearray(data) if self.kind == "bytearray" else memoryview(bytearray(data))


@pytest.mark.parametrize("kind", ["bytearray", "memoryview"])
def test_reads_as_bytearray_or_memoryview_work(kind):
    dev = _ViewDevice(4 * BS, kind)
    bh = BigHash(0, 4 * BS, BS)
    for i in range(30):
        put(bh, dev, b"k%d" % i, memoryview(b"v%d" % i))
    cold = BigHash(0, 4 * BS, BS)
    hits = {i for i in range(30) if get(cold, dev, bytearray(b"k%d" % i)) == b"v%d" % i}
    assert hits and all(type(get(cold, dev, b"k%d" % i)) is bytes for i in hits)
    assert all(run(bh.remove(memoryview(b"k%d" % i)), dev) for i in hits)
    assert all(get(bh, dev, b"k%d" % i) is None for i in range(30))


def test_a_missing_c_module_names_make_setup():
    import subprocess
    import sys
    code = "import sys; sys.modules['engines.bighash._bucket_c'] = None; import engines.bighash"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode != 0 and "make setup" in r.stderr and "ImportError" in r.stderr


# --------------------------------------------------------------------------- blocking forms


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["put", "get", "get", "tick", "flip", "stale"]), st.integers(0, 40),
                          st.integers(0, 200), st.sampled_from([0, 5, 50, 7.25])), max_size=120),
       st.booleans())
def test_now_forms_do_exactly_what_the_generators_do(ops, warm):
    """insert_now / lookup_item_now (one C call each, engines/bighash/_core.c) against
    run(insert) / run(lookup_item) on twin engines: same answers, same device bytes and
    I/O, same counters, filters and log lines, with expiry (whole and fractional seconds),
    corrupt buckets (a flipped byte), buckets of another generation, and cold or warm
    filters."""
    clock_a, clock_b = FakeClock(), FakeClock()
    a, da = make(nbuckets=4, bucket_size=BS, clock=clock_a)
    b, db = make(nbuckets=4, bucket_size=BS, clock=clock_b)
    if warm:
        a.reset()
        b.reset()
    for op, k, n, ttl in ops:
        key = b"key%d" % k
        if op == "put":
            value = bytes([k]) * n
            exp = clock_a.t + ttl if ttl else 0
            assert run(a.insert(key, value, exp), da) == b.insert_now(db, key, value, exp)
        elif op == "get":
            assert run(a.lookup_item(key), da) == b.lookup_item_now(db, key)
        elif op == "flip":                  # the same corruption on both devices
            pos = (k * 4099 + n * 31) % (4 * BS)
            da.buf[pos] ^= 0x5A
            db.buf[pos] ^= 0x5A
        elif op == "stale":                 # a bucket written under another generation
            old = b"old%d" % k
            for bh, dev in ((a, da), (b, db)):
                bh.generation += 1
                run(bh.insert(old, b"x", 0), dev)
                bh.generation -= 1
                bh.bloom.invalidate(bh.bucket_of(key_hash(old)))   # as a cold engine knows it
        else:
            clock_a.t += 10
            clock_b.t += 10
    assert da.buf == db.buf and da.log == db.log
    assert a.stats() == b.stats()
    assert bytes(a.bloom.bits) == bytes(b.bloom.bits)
    assert a.hits.tobytes() == b.hits.tobytes()


def test_blocking_forms_log_what_the_generators_log(caplog):
    """A corrupt bucket read by the C core is logged by the engine, as the Python form does."""
    bh, dev = make(nbuckets=1, bucket_size=BS)
    bh.insert_now(dev, b"k", b"value")
    dev.buf[40] ^= 1
    with caplog.at_level("WARNING", logger="engines.bighash"):
        assert bh.lookup_item_now(dev, b"k") is None
    assert "bucket 0 at offset 0 is corrupt (checksum mismatch)" in caplog.text
    assert bh.stats()["checksum_failures"] == 1


def test_blocking_forms_check_the_read_length():
    class Short(MemDevice):
        def read(self, offset, length):
            return super().read(offset, length)[:-1]

    bh = BigHash(0, BS, BS)
    dev = Short(2 * BS)
    for call in (lambda: bh.lookup_item_now(dev, b"k"), lambda: bh.insert_now(dev, b"k", b"v")):
        with pytest.raises(ValueError, match=f"bucket 0 read returned {BS - 1} bytes, expected {BS}"):
            call()
    assert bh.stats()["bucket_reads"] == 2 and bh.stats()["bucket_writes"] == 0


def test_a_failed_blocking_write_leaves_no_lying_filter():
    bh, dev = make(nbuckets=2, bucket_size=BS)
    bh.reset()

    def fail(*a, **k):
        raise OSError(5, "I/O error")

    dev.write = fail
    with pytest.raises(OSError):
        bh.insert_now(dev, b"k", b"v")
    b = bh.bucket_of(key_hash(b"k"))
    assert bh.bloom.is_unknown(b)           # as after a failed generator write
    with pytest.raises(ValueError, match="keys are at most"):
        bh.insert_now(dev, b"k" * 70000, b"v")
