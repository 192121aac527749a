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


# -- the WAF limit (split_waf_limit) ------------------------------------------------------------


def test_soc_waf_matches_the_published_table():
    """docs/waf-model.md's FIFO column, from OP = (T - U) / U: alpha = 1 + OP."""
    for op, waf in ((0.07, 7.82), (0.12, 4.85), (0.28, 2.48), (0.5, 1.72), (1.0, 1.26)):
        assert navy_mod.soc_waf(1 + op) == pytest.approx(waf, abs=0.01)
    assert navy_mod.soc_waf(1.0) == float("inf")


def test_waf_cap_is_the_largest_share_within_the_limit():
    spare, room = 8 * MIB, 64 * MIB
    for limit in (1.02, 1.1, 1.5, 2.0):
        cap = navy_mod.waf_cap(limit, spare, room)
        assert navy_mod.soc_waf(1 + spare / (cap * room)) <= limit
        if cap < navy_mod.AUTO_MAX:
            assert navy_mod.soc_waf(1 + spare / ((cap + 0.01) * room)) > limit
    assert navy_mod.waf_cap(1.02, spare, room) < navy_mod.waf_cap(1.5, spare, room)
    assert navy_mod.waf_cap(1.01, 0, room) == navy_mod.AUTO_MIN       # no spare: the smallest share


class SpareDevice(PidDevice):
    """A device that reports its spare area, as the emulated SSD does."""

    def __init__(self, size: int, spare: int):
        super().__init__(size, block_size=4096)
        self.spare = spare

    def spare_bytes(self) -> int:
        return self.spare


def test_auto_split_stays_within_the_waf_limit_and_says_so():
    dev = SpareDevice(8 * MIB, spare=MIB)
    n = Navy(dev, region_size=512 << 10, bighash_fraction="auto", small_item_max=1024, split_waf_limit=1.1)
    cap = n.stats()["split"]["waf_cap"]
    assert cap < AUTO_PRIOR and n.layout["split"] == {"auto": cap}
    assert n.stats()["split"]["waf_limit"] == 1.1 and bighash_share(n) <= cap + 0.08     # whole regions
    feed(n, dev, small=3000, large=20, tag=b"s")          # small items dominate: still within the cap
    assert n.stats()["split"]["auto_would_choose"] == cap
    n.close()
    # without the limit the same mix would choose more (at the next format: a restart keeps the split)
    n = Navy(dev, region_size=512 << 10, bighash_fraction="auto", small_item_max=1024)
    assert n.start == "warm" and n.layout["split"] == {"auto": cap}
    assert n.stats()["split"]["auto_would_choose"] > cap and n.stats()["split"]["waf_cap"] == 1.0


def test_a_waf_limit_needs_a_device_that_reports_its_spare_and_a_value_above_one():
    with pytest.raises(ValueError, match="needs the device's spare area"):
        Navy(PidDevice(8 * MIB, block_size=4096), bighash_fraction="auto", split_waf_limit=1.1)
    with pytest.raises(ValueError, match="use a device WAF above 1"):
        Navy(SpareDevice(8 * MIB, MIB), bighash_fraction="auto", split_waf_limit=0.9)
