"""Tests for engines/bighash/bloom.py: the per-bucket bloom filters."""
from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engines.bighash.bloom import BloomFilters, positions

u64 = st.integers(min_value=0, max_value=(1 << 64) - 1)


@settings(max_examples=200, deadline=None)
@given(
    nbytes=st.integers(1, 16),
    k=st.integers(1, 8),
    bucket=st.integers(0, 3),
    keyhashes=st.lists(u64, max_size=60),
)
def test_no_false_negatives(nbytes, k, bucket, keyhashes):
    bf = BloomFilters(4, nbytes, k)
    bf.clear_all()
    bf.rebuild(bucket, keyhashes)
    for kh in keyhashes:
        assert bf.may_contain(bucket, kh)


def test_fresh_filters_are_unknown_so_everything_may_be_there():
    bf = BloomFilters(3, 8)
    rng = random.Random(1)
    assert all(bf.may_contain(b, rng.getrandbits(64)) for b in range(3) for _ in range(100))


def test_clear_rejects_everything_and_invalidate_accepts_everything():
    bf = BloomFilters(2, 8)
    rng = random.Random(2)
    probes = [rng.getrandbits(64) for _ in range(200)]
    bf.clear(1)
    assert not any(bf.may_contain(1, kh) for kh in probes)
    assert all(bf.may_contain(0, kh) for kh in probes)  # the neighbour is untouched
    bf.invalidate(1)
    assert all(bf.may_contain(1, kh) for kh in probes)


def test_rebuild_replaces_the_old_contents_and_touches_one_bucket():
    bf = BloomFilters(3, 8)
    bf.clear_all()
    bf.rebuild(1, [11, 22, 33])
    before = bf.bits.copy()
    bf.rebuild(1, [])
    assert not bf.bits[1].any()
    assert (bf.bits[0] == before[0]).all() and (bf.bits[2] == before[2]).all()
    assert not bf.may_contain(1, 11)


@pytest.mark.parametrize("shared_high_bits", [False, True])
def test_false_positive_rate_is_low(shared_high_bits):
    # 8 bytes, 4 hashes, 5 keys: theory says ~0.5 %. The keys of one bucket share their
    # high 32 bits (the engine picks the bucket from them), so the filter must not use them.
    rng = random.Random(3)
    bf = BloomFilters(1, 8, 4)
    high = rng.getrandbits(32)

    def h():
        return (high << 32 | rng.getrandbits(32)) if shared_high_bits else rng.getrandbits(64)

    fp = 0
    trials = 200
    probes_per = 50
    for _ in range(trials):
        bf.rebuild(0, [h() for _ in range(5)])
        fp += sum(bf.may_contain(0, h()) for _ in range(probes_per))
    assert fp / (trials * probes_per) < 0.03


@settings(max_examples=100, deadline=None)
@given(nbytes=st.integers(1, 64), k=st.integers(1, 8), keyhashes=st.lists(u64, max_size=40))
def test_rebuild_sets_exactly_the_documented_positions(nbytes, k, keyhashes):
    # The C rebuild (engines/bighash/_bucket.c) must set exactly the bits `positions` documents.
    bf = BloomFilters(2, nbytes, k)
    bf.rebuild(1, keyhashes)
    mask = 0
    for kh in keyhashes:
        for p in positions(kh, nbytes * 8, k):
            mask |= 1 << p
    assert bf.bits[1].tobytes() == mask.to_bytes(nbytes, "little")
    assert bf.bits[0].all()  # untouched: still unknown
    assert bf.is_unknown(0) and (bf.is_unknown(1) == (mask == (1 << nbytes * 8) - 1))


def test_disabled_filters_always_say_maybe_and_use_no_dram():
    bf = BloomFilters(10, 0)
    assert not bf.enabled and bf.dram_bytes == 0
    bf.rebuild(3, [1, 2])
    bf.clear(3)
    assert bf.may_contain(3, 12345)
    assert BloomFilters.from_bytes(bf.to_bytes()).may_contain(3, 999)


def test_dram_bytes_is_nbuckets_times_nbytes():
    assert BloomFilters(1000, 8).dram_bytes == 8000


@settings(max_examples=100, deadline=None)
@given(
    nbuckets=st.integers(1, 20),
    nbytes=st.integers(0, 12),
    k=st.integers(1, 6),
    fill=st.lists(st.tuples(st.integers(0, 19), st.lists(u64, max_size=8)), max_size=10),
    cleared=st.lists(st.integers(0, 19), max_size=5),
)
def test_to_bytes_from_bytes_round_trip(nbuckets, nbytes, k, fill, cleared):
    bf = BloomFilters(nbuckets, nbytes, k)
    for b in cleared:
        bf.clear(b % nbuckets)
    for b, khs in fill:
        bf.rebuild(b % nbuckets, khs)
    back = BloomFilters.from_bytes(bf.to_bytes())
    assert (back.nbuckets, back.nbytes, back.num_hashes) == (nbuckets, nbytes, k)
    assert back.bits.shape == bf.bits.shape and (back.bits == bf.bits).all()
    last = {b % nbuckets: khs for b, khs in fill}  # a rebuild replaces the bucket's filter
    for b, khs in last.items():
        for kh in khs:
            assert back.may_contain(b, kh)


def test_from_bytes_says_what_was_wrong():
    good = BloomFilters(4, 8).to_bytes()
    with pytest.raises(ValueError, match="need at least"):
        BloomFilters.from_bytes(good[:5])
    with pytest.raises(ValueError, match="bad magic"):
        BloomFilters.from_bytes(b"XXXX" + good[4:])
    with pytest.raises(ValueError, match="format version 9"):
        BloomFilters.from_bytes(good[:4] + b"\x09\x00" + good[6:])
    with pytest.raises(ValueError, match="need 45 bytes, got 44"):
        BloomFilters.from_bytes(good[:-1])


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=80))
def test_from_bytes_garbage_is_a_clean_error(data):
    try:
        BloomFilters.from_bytes(data)
    except ValueError:
        pass


@pytest.mark.parametrize(
    "args, match",
    [((0, 8), "nbuckets = 0"), ((4, -1), "nbytes = -1"), ((4, 8, 0), "num_hashes = 0"), ((4, 8.0), "nbytes = 8.0")],
)
def test_bad_arguments_name_the_value(args, match):
    with pytest.raises(ValueError, match=match):
        BloomFilters(*args)


def test_bucket_out_of_range_raises():
    bf = BloomFilters(2, 8)
    with pytest.raises(IndexError, match="bucket 2 out of range"):
        bf.may_contain(2, 1)


def test_c_works_on_the_numpy_array_itself():
    # may_contain / is_unknown read the array's memory (no copy): numpy writes show up,
    # and rebuild writes land in the array, also after from_bytes and for a tuple/iterator.
    bf = BloomFilters(3, 8, 4)
    bf.bits[1] = 0
    assert not bf.may_contain(1, 0x1234) and not bf.is_unknown(1) and bf.is_unknown(2)
    bf.rebuild(1, (h for h in [0x1234]))
    assert bf.may_contain(1, 0x1234) and bf.bits[1].any() and bf.bits[0].all() and bf.bits[2].all()
    again = BloomFilters.from_bytes(bf.to_bytes())
    assert again.may_contain(1, 0x1234) and not again.may_contain(1, 0x99990000)
    again.rebuild(1, ())
    assert not again.bits[1].any() and not again.may_contain(1, 0x1234)
    again.bits.fill(0xFF)
    assert again.is_unknown(1) and again.may_contain(1, 0x99990000)


@settings(max_examples=100, deadline=None)
@given(nbytes=st.integers(1, 4096).filter(lambda n: n < 40 or n % 512 == 0), k=st.integers(1, 32), keyhashes=st.lists(u64, max_size=30), probe=u64)
def test_c_may_contain_is_the_documented_bit_test(nbytes, k, keyhashes, probe):
    bf = BloomFilters(1, nbytes, k)
    bf.rebuild(0, keyhashes)
    bits = int.from_bytes(bf.bits[0].tobytes(), "little")
    assert bf.may_contain(0, probe) == all(bits >> p & 1 for p in positions(probe, nbytes * 8, k))
    assert all(bf.may_contain(0, kh) for kh in keyhashes)
