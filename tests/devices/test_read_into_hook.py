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
    cls = FileDevice if kind == "psync" else UringDevice
    return [cls(str(tmp_path / f"{name}.img"), (N + 1) * BS, format=True) for name in ("a", "b")]


@pytest.mark.parametrize("kind", ["psync", "uring"])
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


@pytest.mark.parametrize("kind", ["psync", "uring"])
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
