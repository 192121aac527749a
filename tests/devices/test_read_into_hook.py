"""The engines' read-into hook on the real devices: BigHash's C core reads buckets straight
into its own buffer through a psync or uring device's C Reader (no bytes object), with the
same answers, counters and device I/O as the generator form through ``device.read``; a
read the hook cannot do (a swapped read, a closed device) goes the usual way."""
from __future__ import annotations

import random

import pytest

from engines.bighash import BigHash
from engines.device import run
from flashcache.devices.file import FileDevice
from flashcache.devices.uring import UringDevice
from flashcache.errors import ClosedError

BS = 4096
N = 64


def _devices(tmp_path, kind):
    """Two devices of ``kind``: psync, psync-direct (O_DIRECT: the C Reader reads through
    its aligned buffer) or uring."""
    cls = UringDevice if kind == "uring" else FileDevice
    return [cls(str(tmp_path / f"{name}.img"), (N + 1) * BS, format=True, direct=kind == "psync-direct")
            for name in ("a", "b")]


@pytest.mark.parametrize("kind", ["psync", "psync-direct", "uring"])
def test_the_hook_is_offered_and_reads_what_read_reads(tmp_path, kind):
    dev = _devices(tmp_path, kind)[0]
    try:
        dev.write(BS, bytes(range(256)) * 16)
        assert dev._c_reads is not None and dev.read == dev._c_reads.read   # what the core looks behind
        cap = dev._c_reads.read_into_hook()
        assert "engines.device.read_into" in repr(cap)
        bh = BigHash(BS, N * BS, BS)
        bh.reset()
        reads = dev.stats()["reads"]
        bh.insert_now(dev, b"k", b"v" * 100)
        assert bh.lookup_item_now(dev, b"k") == (b"v" * 100, 0.0)
        assert dev.stats()["reads"] == reads + 2     # the hook's reads are the device's reads
        assert bh._core.hooked_reads == 2
    finally:
        dev.close()


@pytest.mark.parametrize("kind", ["psync", "psync-direct", "uring"])
def test_core_through_the_hook_matches_the_generator_form(tmp_path, kind):
    da, db = _devices(tmp_path, kind)
    clock = lambda: 1000.0                                       # noqa: E731
    a, b = BigHash(BS, N * BS, BS, clock=clock), BigHash(BS, N * BS, BS, clock=clock)
    try:
        rnd = random.Random(3)
        for step in range(1500):
            key = b"key%d" % rnd.randrange(400)
            if rnd.random() < 0.5:
                value = bytes([step % 251]) * rnd.choice([10, 100, 700])
                exp = rnd.choice([0, 0, 999, 1500.5])
                assert run(a.insert(key, value, exp), da) == b.insert_now(db, key, value, exp)
            else:
                assert run(a.lookup_item(key), da) == b.lookup_item_now(db, key)
        assert a.stats() == b.stats() and a.stats()["hits"] > 100
        assert b._core.hooked_reads == b.stats()["bucket_reads"] > 700 and a._core.hooked_reads == 0
        sa, sb = da.stats(), db.stats()
        assert (sa["reads"], sa["bytes_read"], sa["writes"]) == (sb["reads"], sb["bytes_read"], sb["writes"])
        assert da.read(0, (N + 1) * BS) == db.read(0, (N + 1) * BS)
    finally:
        da.close()
        db.close()


@pytest.mark.parametrize("kind", ["psync", "uring"])
def test_a_swapped_read_and_a_closed_device_go_the_usual_way(tmp_path, kind):
    dev = _devices(tmp_path, kind)[0]
    bh = BigHash(BS, N * BS, BS)
    bh.insert_now(dev, b"k", b"v")
    seen = []
    real = dev.read

    def spying(offset, length):
        seen.append(offset)
        return real(offset, length)

    hooked = bh._core.hooked_reads
    dev.read = spying                     # a Python read: the core must call it, not the hook
    assert bh.lookup_item_now(dev, b"k") == (b"v", 0.0) and len(seen) == 1
    assert bh._core.hooked_reads == hooked
    dev.read = real
    dev.close()
    with pytest.raises(ClosedError):
        bh.lookup_item_now(dev, b"k")


def _same_tag_keys() -> tuple[bytes, bytes]:
    """Two keys whose BlockCache tags (the high 32 bits of the key hash) are equal."""
    from engines.blockcache.entry import key_hash
    seen = {}
    i = 0
    while True:
        k = b"tag%d" % i
        t = key_hash(k) >> 32
        if t in seen:
            return seen[t], k
        seen[t] = k
        i += 1


@pytest.mark.parametrize("eviction", ["fifo", "lru"])
@pytest.mark.parametrize("kind", ["psync", "uring"])
def test_navy_blockcache_lookup_in_c_matches_the_generator_form(tmp_path, kind, eviction):
    """Navy's lookup in C (the Router: BlockCache's entry read through the hook and checked
    in C, anything but a plain hit handed to BlockCache's Python with the bytes read)
    against the generator form, on twin caches: hits from flash and from the open region's
    buffer, expired entries, entries with flipped bytes, a tag shared by two keys, removes:
    the same answers, counters, index hit counts, eviction order and device I/O."""
    from engines.blockcache.entry import encode_into, key_hash
    from engines.navy import Navy
    mib = 1 << 20
    cls = FileDevice if kind == "psync" else UringDevice
    da, db = (cls(str(tmp_path / f"{n}.img"), 24 * mib, format=True) for n in ("a", "b"))
    now = [1000.0]
    clock = lambda: now[0]                                          # noqa: E731
    a, b = (Navy(d, region_size=mib, bighash_fraction=0.1, small_item_max=1024, clock=clock,
                 blockcache_options={"eviction": eviction}) for d in (da, db))
    try:
        rnd = random.Random(11)
        k1, k2 = _same_tag_keys()
        lay = a.layout
        keys = [b"big%d" % i for i in range(150)] + [k1, k2, b"small"]
        for step in range(2500):
            key = rnd.choice(keys)
            r = rnd.random()
            if r < 0.35:
                value = bytes([step % 251]) * rnd.choice([2000, 9000, 30_000, 100])
                exp = rnd.choice([0, 0, 0, now[0] + 5])
                assert run(a.insert(key, value, exp), da) == b.insert_now(db, key, value, exp)
            elif r < 0.38:
                assert run(a.remove(key), da) == run(b.remove(key), db)
            elif r < 0.40:                      # flip a bit of the key's entry on flash, on both devices
                slot = a.blockcache.index.find(key_hash(key) >> 32)
                addr = a.blockcache.index.addr_of(slot) if slot >= 0 else None
                if addr is None or addr // a.blockcache._upr == a.blockcache.regions.open:
                    continue
                off = lay["engines"]["blockcache"]["offset"] + addr * a.blockcache.alignment + rnd.randrange(2000)
                for d in (da, db):
                    blk = bytearray(d.read(off & ~4095, 4096))
                    blk[off & 4095] ^= 1 << rnd.randrange(8)
                    d.write(off & ~4095, bytes(blk))
                assert run(a.lookup_item(key), da) == b.lookup_now(key) is None
            else:
                assert run(a.lookup_item(key), da) == b.lookup_now(key)
            if step % 100 == 0:
                now[0] += 2
            if step == 1250:                    # what a reset leaves on flash: another generation's entries
                for n in (a, b):
                    n.blockcache.generation += 1
        # a full 64-bit hash collision: where the index points for a key on flash, a valid
        # entry for another key of the same length that carries this key's hash
        ka = next(k for k in keys if a.blockcache.region_of(k) not in (None, a.blockcache.regions.open))
        for n, d in ((a, da), (b, db)):
            off = lay["engines"]["blockcache"]["offset"] + n.blockcache.index.addr_of(n.blockcache.index.find(key_hash(ka) >> 32)) * 512
            span = bytearray(d.read(off & ~4095, 8192))
            encode_into(span, off & 4095, key_hash(ka), n.blockcache.generation, 0, ka[:-1] + b"~", b"w" * 100)
            d.write(off & ~4095, bytes(span))
        assert run(a.lookup_item(ka), da) == b.lookup_now(ka) is None
        sa, sb = a.stats(), b.stats()
        for s in (sa, sb):
            s["bighash"].pop("generation"), s["blockcache"].pop("generation")
        assert sa == sb
        bc = sb["blockcache"]
        assert bc["entry_reads"] > 200 and bc["buffer_hits"] > 50 and bc["expired_misses"] > 5
        assert bc["checksum_failures"] > 10 and bc["collision_misses"] > 1 and bc["stale_misses"] > 5
        assert b.blockcache._core.hooked_reads == bc["entry_reads"] and a.blockcache._core.hooked_reads == 0
        ia, ib = a.blockcache.index, b.blockcache.index
        assert (ia.addr == ib.addr).all() and (ia.hits == ib.hits).all() and ib.hits.max() > 3
        assert a.blockcache.eviction.to_state() == b.blockcache.eviction.to_state()
        xa, xb = da.stats(), db.stats()
        assert (xa["reads"], xa["bytes_read"], xa["writes"]) == (xb["reads"], xb["bytes_read"], xb["writes"])
    finally:
        a.close()
        b.close()
        da.close()
        db.close()
