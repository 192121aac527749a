"""bighash_fraction = "auto": the split between BigHash and BlockCache sized from the mix
of item bytes the device has seen, kept across warm restarts and crashes, moved when the
cache formats (README, "The split")."""
from __future__ import annotations

import pytest

from engines import navy as navy_mod
from engines import superblock
from engines.device import run
from engines.navy import AUTO_PRIOR, Navy, auto_fraction
from tests.engines.memdevice import PidDevice

MIB = 1 << 20


def auto(dev, region=512 << 10) -> Navy:
    return Navy(dev, region_size=region, bighash_fraction="auto", small_item_max=1024)


def feed(n: Navy, dev, small: int, large: int, tag: bytes) -> None:
    """``small`` items of 1000 B (BigHash's) and ``large`` of 60 KB (BlockCache's), interleaved."""
    for i in range(max(small, large)):
        if i < small:
            run(n.insert(tag + b"s%d" % i, bytes([i % 251]) * 1000), dev)
        if i < large:
            run(n.insert(tag + b"L%d" % i, bytes([i % 251]) * 60_000), dev)


def bighash_share(n: Navy) -> float:
    return n.stats()["split"]["bighash_share"]


def test_auto_fraction_rule():
    size = 8 * MIB
    assert auto_fraction({}, size) == AUTO_PRIOR                                  # nothing seen yet
    assert auto_fraction({"small": 1.0, "large": 1.0}, size) == AUTO_PRIOR        # too little seen
    assert auto_fraction({"small": 1 * MIB, "large": 9 * MIB}, size) == 0.1
    assert auto_fraction({"small": 0.0, "large": 9 * MIB}, size) == navy_mod.AUTO_MIN
    assert auto_fraction({"small": 9 * MIB, "large": 0.0}, size) == navy_mod.AUTO_MAX


def test_bad_fraction_is_refused():
    with pytest.raises(ValueError, match='bighash_fraction = \'half\': use a share from 0 to 1, or "auto"'):
        Navy(PidDevice(8 * MIB, block_size=4096), bighash_fraction="half")


def test_auto_split_across_restarts_a_crash_and_a_mix_that_shifts_halfway():
    dev = PidDevice(8 * MIB, block_size=4096)
    n = auto(dev)
    assert n.start == "formatted: new device" and n.layout["split"] == {"auto": AUTO_PRIOR}
    assert n.stats()["split"]["mode"] == "auto" and abs(bighash_share(n) - AUTO_PRIOR) < 0.08    # whole regions
    # first half: large items dominate (small share about 0.1 of the bytes)
    feed(n, dev, small=500, large=80, tag=b"a")
    seen = n.stats()["split"]
    assert 0.05 < seen["observed_small_share"] < 0.15 and seen["auto_would_choose"] <= 0.15
    fp = n.fingerprint
    n.close()
    # a warm restart keeps the recorded split (and its items), though the mix says otherwise
    n = auto(dev)
    assert n.start == "warm" and n.fingerprint == fp and n.layout["split"] == {"auto": AUTO_PRIOR}
    assert run(n.lookup(b"as499"), dev) == bytes([499 % 251]) * 1000
    assert superblock.Superblock.decode(bytes(dev.buf[:4096])).mix["large"] > 4 * MIB   # the mix is on the device
    # a crash (no close) keeps it too: the layout comes from the superblock, BigHash's items stay
    feed(n, dev, small=50, large=0, tag=b"b")
    del n
    n = auto(dev)
    assert not n.start.startswith("formatted") and n.fingerprint == fp
    assert run(n.lookup(b"bs49"), dev) == bytes([49]) * 1000
    n.close()
    # the cache formats (here: another region size): now the split follows the mix seen
    n = auto(dev, region=256 << 10)
    assert n.start.startswith("formatted: layout changed")
    first = n.layout["split"]["auto"]
    assert 0.05 <= first <= 0.15 and abs(bighash_share(n) - first) < 0.04
    # second half: the mix shifts to small items; the split holds while running...
    feed(n, dev, small=9000, large=10, tag=b"c")
    assert n.layout["split"]["auto"] == first and n.stats()["split"]["auto_would_choose"] >= 0.5
    n.close()
    n = auto(dev, region=256 << 10)
    assert n.start == "warm" and n.layout["split"]["auto"] == first
    n.close()
    # ... and follows it at the next format
    n = auto(dev)
    assert n.start.startswith("formatted: layout changed")
    assert n.layout["split"]["auto"] >= 0.5 and bighash_share(n) >= 0.45
    n.close()


def test_a_fixed_split_stays_available_and_records_the_mix_too():
    dev = PidDevice(8 * MIB, block_size=4096)
    n = Navy(dev, region_size=512 << 10, bighash_fraction=0.5, small_item_max=1024)
    assert "split" not in n.layout and n.stats()["split"]["mode"] == "fixed"
    assert abs(bighash_share(n) - 0.5) < 0.08
    feed(n, dev, small=500, large=80, tag=b"a")
    n.close()
    n = auto(dev)                                  # switching to "auto" formats, from the mix seen
    assert n.start.startswith("formatted") and n.layout["split"]["auto"] <= 0.15
    n.close()
