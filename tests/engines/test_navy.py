"""The router: size routing, admission, layout and superblock, warm restart, crash safety."""
from __future__ import annotations

import msgpack
import pytest
from hypothesis import settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from engines import admission
from engines.device import SUPERBLOCK_MAGIC, run
from engines.navy import Navy
from tests.engines.conftest import MemDevice, MemStream

MIB = 1 << 20


class PidDevice(MemDevice):
    """A MemDevice whose streams get placement identifiers, like an FDP drive."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.next_pid = 1

    def open_stream(self, name):
        s = MemStream(name, pid=self.next_pid, placement="on")
        self.next_pid += 1
        return s


def navy(dev, **kw) -> Navy:
    kw.setdefault("region_size", 1 * MIB)
    kw.setdefault("bighash_fraction", 0.25)
    kw.setdefault("small_item_max", 1024)
    return Navy(dev, **kw)


@pytest.fixture
def dev():
    return PidDevice(32 * MIB, block_size=4096)


def test_layout_superblock_regions_then_buckets(dev):
    n = navy(dev)
    lay = n.layout
    assert n.start == "formatted: new device"
    assert dev.buf[:8] == SUPERBLOCK_MAGIC
    assert lay["bc_offset"] == lay["meta_end"] and lay["bc_offset"] % MIB == 0
    assert lay["bh_offset"] == lay["bc_offset"] + lay["bc_size"]
    assert lay["bh_offset"] + lay["bh_size"] <= dev.size
    assert lay["bc_size"] % MIB == 0 and lay["bh_size"] % 4096 == 0
    st = n.stats()
    assert st["bighash"]["placement"] == {"state": "on", "pid": 1}
    assert st["blockcache"]["placement"] == {"state": "on", "pid": 2}


def test_items_route_by_size_and_move_between_engines(dev):
    n = navy(dev)
    assert run(n.insert(b"small", b"s" * 100), dev)
    assert run(n.insert(b"large", b"L" * 50_000), dev)
    assert run(n.lookup(b"small"), dev) == b"s" * 100
    assert run(n.lookup(b"large"), dev) == b"L" * 50_000
    st = n.stats()
    assert st["bighash"]["router_inserts"] == 1 and st["blockcache"]["router_inserts"] == 1
    # writes carry each engine's own stream
    bh_writes = [s for (op, off, _), s in zip([x for x in dev.log if x[0] == "write"], dev.streams)
                 if off >= n.layout["bh_offset"]]
    assert bh_writes and all(s is n.streams["bighash"] for s in bh_writes)
    # the same key grows into a large item: it leaves BigHash
    run(n.insert(b"small", b"x" * 5000), dev)
    assert run(n.bighash.lookup(b"small"), dev) is None
    assert run(n.lookup(b"small"), dev) == b"x" * 5000
    # and shrinks back
    run(n.insert(b"small", b"y" * 10), dev)
    assert run(n.blockcache.lookup(b"small"), dev) is None
    assert run(n.lookup(b"small"), dev) == b"y" * 10


def test_delete_goes_to_both_engines(dev):
    n = navy(dev)
    run(n.insert(b"a", b"1" * 10), dev)
    run(n.insert(b"b", b"2" * 9000), dev)
    assert run(n.remove(b"a"), dev) and run(n.remove(b"b"), dev)
    assert run(n.lookup(b"a"), dev) is None and run(n.lookup(b"b"), dev) is None
    assert run(n.remove(b"a"), dev) is False


def test_too_large_item_is_refused_clearly(dev):
    n = navy(dev)
    with pytest.raises(ValueError, match=r"larger than the largest the flash engines take \(\d+ bytes\)"):
        run(n.insert(b"k", bytes(2 * MIB)), dev)


def test_admission_rejects_are_counted_and_write_nothing(dev):
    n = navy(dev, admission=admission.RandomAdmission(0.0))
    before = len(dev.log)
    assert run(n.insert(b"k", b"v" * 100), dev) is False
    assert n.stats()["admission_rejects"] == 1
    assert not [x for x in dev.log[before:] if x[0] == "write"]
    assert run(n.lookup(b"k"), dev) is None


def test_reject_first_through_the_router(dev):
    n = navy(dev, admission=admission.RejectFirstAdmission())
    assert run(n.insert(b"k", b"v"), dev) is False
    assert run(n.insert(b"k", b"v"), dev) is True
    assert run(n.lookup(b"k"), dev) == b"v"


def fill(n: Navy, dev, count: int = 50) -> dict[bytes, bytes]:
    items = {}
    for i in range(count):
        k = b"key%d" % i
        v = (b"%d" % i) * (10 if i % 2 else 3000)
        run(n.insert(k, v), dev)
        items[k] = v
    return items


def test_warm_restart_recovers_both_engines_then_invalidates(dev):
    n = navy(dev)
    items = fill(n, dev)
    assert n.close().startswith("saved")
    n2 = navy(dev)
    assert n2.start == "warm"
    assert all(run(n2.lookup(k), dev) == v for k, v in items.items())
    assert n2.stats()["inserts"] == 50            # counters survive a clean restart
    # the metadata was invalidated right after recovery: a crash now starts cold
    n3 = navy(dev)
    assert n3.start.startswith("cold: no clean-shutdown metadata")
    got = {k: run(n3.lookup(k), dev) for k in items}
    assert all(got[k] == items[k] for k in items if len(items[k]) <= 1000)   # BigHash survives
    assert all(got[k] is None for k in items if len(items[k]) > 1000)         # BlockCache starts empty


def test_corrupt_metadata_starts_cold_never_wrong(dev):
    n = navy(dev)
    items = fill(n, dev)
    n.close()
    dev.buf[n.block + 10] ^= 0xFF
    n2 = navy(dev)
    assert n2.start.startswith("cold: metadata checksum mismatch")
    for k, v in items.items():
        assert run(n2.lookup(k), dev) in (v, None)


def test_layout_change_resets_and_says_what_changed(dev):
    n = navy(dev)
    fill(n, dev)
    n.close()
    n2 = navy(dev, bighash_fraction=0.5)
    assert n2.start.startswith("formatted: layout changed, the cache was reset")
    assert "bh_offset" in n2.start
    assert run(n2.lookup(b"key1"), dev) is None and run(n2.lookup(b"key2"), dev) is None


def test_foreign_block_zero_is_reformatted_with_reason(dev):
    dev.buf[:4] = b"junk"
    n = navy(dev)
    assert n.start == "formatted: no flashcache superblock (block 0 holds other data)"


def test_corrupt_superblock(dev):
    navy(dev).close()
    dev.buf[30] ^= 0x01
    assert navy(dev).start == "formatted: superblock corrupt (checksum mismatch)"


def test_stale_index_after_reformat_never_serves_old_items(dev):
    n = navy(dev)
    items = fill(n, dev)
    n.close()
    navy(dev, bighash_fraction=0.5).close()       # reformat under another layout
    n3 = navy(dev)                                 # and back: reformatted again
    assert n3.start.startswith("formatted: layout changed")
    assert all(run(n3.lookup(k), dev) is None for k in items)


class NavyVsDict(RuleBasedStateMachine):
    """Lookups may miss (eviction, admission, a crash), but never return a value other than
    the latest one set, and a removed key never comes back."""

    @initialize()
    def setup(self):
        self.dev = PidDevice(16 * MIB, block_size=4096)
        self.nv = navy(self.dev, bighash_fraction=0.1, region_size=MIB)
        self.model: dict[bytes, bytes] = {}
        self.removed: set[bytes] = set()

    keys = st.sampled_from([b"k%d" % i for i in range(40)])

    @rule(k=keys, size=st.sampled_from([1, 100, 900, 3000, 200_000]), tag=st.integers(0, 255))
    def insert(self, k, size, tag):
        v = bytes([tag]) * size
        run(self.nv.insert(k, v), self.dev)
        self.model[k] = v
        self.removed.discard(k)

    @rule(k=keys)
    def remove(self, k):
        run(self.nv.remove(k), self.dev)
        self.model.pop(k, None)
        self.removed.add(k)

    @rule(k=keys)
    def lookup(self, k):
        got = run(self.nv.lookup(k), self.dev)
        if k in self.removed:
            assert got is None
        elif got is not None:
            assert got == self.model.get(k)

    @rule()
    def restart_clean(self):
        self.nv.close()
        self.nv = navy(self.dev, bighash_fraction=0.1, region_size=MIB)
        assert self.nv.start == "warm"

    @rule()
    def crash(self):
        self.nv = navy(self.dev, bighash_fraction=0.1, region_size=MIB)
        assert self.nv.start.startswith("cold")

    @invariant()
    def superblock_is_ours(self):
        assert bytes(self.dev.buf[:8]) == SUPERBLOCK_MAGIC


TestNavyVsDict = NavyVsDict.TestCase
TestNavyVsDict.settings = settings(max_examples=40, stateful_step_count=40, deadline=None)
