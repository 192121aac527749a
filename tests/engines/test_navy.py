"""The router: size routing, admission, layout and superblock, warm restart, crash safety."""
from __future__ import annotations

import pytest
from hypothesis import settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from engines import admission
from engines.device import SUPERBLOCK_MAGIC, run
from engines.navy import Navy
from tests.clock import FakeClock
from tests.engines.memdevice import PidDevice

MIB = 1 << 20


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
    bc, bh = lay["engines"]["blockcache"], lay["engines"]["bighash"]
    assert n.start == "formatted: new device"
    assert dev.buf[:8] == SUPERBLOCK_MAGIC
    assert list(lay["engines"]) == ["blockcache", "bighash"]
    assert bc["offset"] == lay["meta_end"] and bc["offset"] % MIB == 0
    assert bh["offset"] == bc["offset"] + bc["size"]
    assert bh["offset"] + bh["size"] <= dev.size
    assert bc["size"] % MIB == 0 and bh["size"] % 4096 == 0
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
    assert st["bighash"]["inserts"] == 1 and st["blockcache"]["inserts"] == 1
    # writes carry each engine's own stream
    bh_writes = [s for (op, off, _), s in zip([x for x in dev.log if x[0] == "write"], dev.streams)
                 if off >= n.layout["engines"]["bighash"]["offset"]]
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
    assert n.stats()["bighash"]["admission_rejects"] == 1 and n.stats()["blockcache"]["admission_rejects"] == 0
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
    # the clean mark was cleared right after recovery: a crash now is recovered as one,
    # BlockCache from the close's checkpoint plus its log, BigHash from its buckets
    n3 = navy(dev)
    assert n3.start.startswith("recovered after a crash: blockcache recovered from checkpoint")
    got = {k: run(n3.lookup(k), dev) for k in items}
    assert got == items


def test_corrupt_metadata_starts_cold_never_wrong(dev):
    n = navy(dev)
    items = fill(n, dev)
    n.close()
    dev.buf[n._slot_at(n._ckpt["slot"]) + 10] ^= 0xFF     # the close's checkpoint (a torn write)
    n2 = navy(dev)
    # the other slot's checkpoint (older, not clean) plus the log: recovered as after a crash
    assert n2.start.startswith("recovered after a crash: blockcache recovered from checkpoint 1 ")
    for k, v in items.items():
        assert run(n2.lookup(k), dev) in (v, None)


def test_layout_change_resets_and_says_what_changed(dev):
    n = navy(dev)
    fill(n, dev)
    n.close()
    n2 = navy(dev, bighash_fraction=0.5)
    assert n2.start.startswith("formatted: layout changed, the cache was reset")
    assert "engines.bighash.offset" in n2.start and "engines.bighash.size" in n2.start
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
    """Lookups may miss (eviction, admission, a crash), but a hit returns exactly the last
    value set, a removed key never comes back, and an expired item is never returned."""

    @initialize()
    def setup(self):
        self.dev = PidDevice(16 * MIB, block_size=4096)
        self.clock = FakeClock()
        self.nv = self.open()
        self.model: dict[bytes, tuple[bytes, float]] = {}
        self.removed: set[bytes] = set()

    def open(self):
        return navy(self.dev, bighash_fraction=0.1, region_size=MIB, clock=self.clock)

    keys = st.sampled_from([b"k%d" % i for i in range(40)])

    @rule(k=keys, size=st.sampled_from([1, 100, 900, 3000, 200_000]), tag=st.integers(0, 255),
          ttl=st.sampled_from([0, 0, 5, 50]))
    def insert(self, k, size, tag, ttl):
        v = bytes([tag]) * size
        expiry = self.clock.t + ttl if ttl else 0
        run(self.nv.insert(k, v, expiry), self.dev)
        self.model[k] = (v, expiry)
        self.removed.discard(k)

    @rule(k=keys)
    def remove(self, k):
        run(self.nv.remove(k), self.dev)
        self.model.pop(k, None)
        self.removed.add(k)

    @rule(k=keys)
    def lookup(self, k):
        got = run(self.nv.lookup(k), self.dev)
        if got is None:
            return
        assert k not in self.removed, "a deleted key came back"
        v, expiry = self.model[k]
        assert got == v, "a hit returned something other than the last value set"
        assert not expiry or expiry > self.clock.t, "an expired item was returned"

    @rule(dt=st.sampled_from([1, 4, 10, 60]))
    def advance_clock(self, dt):
        self.clock.t += dt

    @rule()
    def restart_clean(self):
        self.nv.close()
        self.nv = self.open()
        assert self.nv.start == "warm"

    @rule()
    def crash(self):
        self.nv = self.open()
        assert self.nv.start.startswith(("cold", "recovered after a crash")), self.nv.start

    @invariant()
    def superblock_is_ours(self):
        assert bytes(self.dev.buf[:8]) == SUPERBLOCK_MAGIC


TestNavyVsDict = NavyVsDict.TestCase
TestNavyVsDict.settings = settings(max_examples=60, stateful_step_count=50, deadline=None)


def test_placement_each_engine_writes_through_its_own_handle(tmp_path):
    """On the emulated FDP SSD, BigHash and BlockCache writes land on different handles."""
    from flashcache.devices.emulated import open_emulated
    from flashcache.emulator import Geometry
    g = Geometry(capacity_bytes=64 * MIB, op=0.12, ru_bytes=MIB, handles=("II",) * 4)
    dev = open_emulated(str(tmp_path / "e.img"), g)
    try:
        n = Navy(dev, region_size=MIB, bighash_fraction=0.25, small_item_max=1024)
        base = [h["hbmw"] for h in dev.ftl.handle_counters()]
        for i in range(50):
            run(n.insert(b"s%d" % i, b"x" * 100), dev)
        mid = [h["hbmw"] for h in dev.ftl.handle_counters()]
        for i in range(40):
            run(n.insert(b"L%d" % i, b"y" * 100_000), dev)
        end = [h["hbmw"] for h in dev.ftl.handle_counters()]
        pid_bh, pid_bc = n.streams["bighash"].pid, n.streams["blockcache"].pid
        assert pid_bh != pid_bc and None not in (pid_bh, pid_bc)
        small = [b - a for a, b in zip(base, mid)]
        large = [b - a for a, b in zip(mid, end)]
        assert small[pid_bh] == 50 * 4096 and sum(small) == small[pid_bh]      # one bucket write each
        assert large[pid_bc] >= 3 * MIB and large[pid_bc] == sum(large) - large[pid_bh]
        assert large[0] == 0                                                      # nothing on the default handle
        n.close()
    finally:
        dev.close()


def test_corruption_gives_misses_and_counts_never_wrong_bytes():
    """Flip random bytes all over the device (superblock excepted: that resets, tested
    above): buckets, regions and metadata. Every lookup is the right value or a miss."""
    import random
    rnd = random.Random(5)
    for trial in range(6):
        dev = PidDevice(16 * MIB, block_size=4096)
        n = navy(dev, bighash_fraction=0.1, region_size=MIB)
        items = {}
        for i in range(300):
            k = b"c%d" % i
            v = bytes([i % 256]) * rnd.choice([50, 700, 5000, 90_000])
            run(n.insert(k, v), dev)
            items[k] = v
        if trial % 2:
            n.close()                                    # metadata written too: flips may hit it
        else:
            run(n.blockcache.flush(), dev)
        lay = n.layout
        spans = [(n.block, lay["meta_end"])] + [(e["offset"], e["offset"] + e["size"]) for e in lay["engines"].values()]
        for _ in range(400):
            lo, hi = rnd.choice(spans)
            dev.buf[rnd.randrange(lo, hi)] ^= 1 << rnd.randrange(8)
        n2 = navy(dev, bighash_fraction=0.1, region_size=MIB)       # must not raise
        wrong = [k for k, v in items.items() if run(n2.lookup(k), dev) not in (v, None)]
        assert not wrong
        st = n2.stats()
        fails = st["bighash"]["checksum_failures"] + st["blockcache"]["checksum_failures"]
        hits = st["hits"]
        assert hits > 0 and (fails > 0 or n2.start.startswith("cold"))


def test_may_hold_is_never_false_for_a_held_key(dev):
    n = navy(dev)
    assert not n.may_hold(b"never")                    # a fresh cache: known empty everywhere
    for i in range(200):
        run(n.insert(b"m%d" % i, b"x" * (100 if i % 2 else 5000)), dev)
    assert all(n.may_hold(b"m%d" % i) for i in range(200))
    run(n.remove(b"m3"), dev)
    assert not n.may_hold(b"m3") or run(n.lookup(b"m3"), dev) is None


def test_dynamic_admission_hears_the_device_writes(dev):
    now = [0.0]
    adm = admission.DynamicRandomAdmission(1000.0, window_s=1.0, seed=1, clock=lambda: now[0])
    n = navy(dev, admission=adm)
    for i in range(50):
        run(n.insert(b"d%d" % i, b"x" * 100), dev)          # 50 bucket writes: ~200 KiB in a second
    now[0] += 1.0
    run(n.insert(b"last", b"x"), dev)
    assert adm.last_rate and adm.last_rate >= 50 * 4096
    assert adm.probability == pytest.approx(0.75)           # down by the 25 % step limit
    st = n.stats()
    assert st["bighash"]["device_bytes_written"] == st["bighash"]["bytes_written"] >= 50 * 4096


@pytest.mark.parametrize("policy", ["all", "reject_first", "dynamic"])
def test_blocking_forms_do_what_the_generators_do(policy):
    """insert_now / lookup_item_now against run(insert) / run(lookup_item) on twin caches:
    same answers, device I/O, counters and admission state, small and large items."""
    import random

    def make_policy(now):
        if policy == "all":
            return admission.AcceptAll()
        if policy == "reject_first":
            return admission.RejectFirstAdmission()
        return admission.DynamicRandomAdmission(200_000.0, window_s=1.0, seed=3, clock=lambda: now[0])

    now = [0.0]
    da, db = PidDevice(32 * MIB, block_size=4096), PidDevice(32 * MIB, block_size=4096)
    pa, pb = make_policy(now), make_policy(now)
    a, b = navy(da, admission=pa), navy(db, admission=pb)
    rnd = random.Random(5)
    for step in range(600):
        key = b"k%d" % rnd.randrange(120)
        if rnd.random() < 0.6:
            value = bytes([step % 251]) * rnd.choice([10, 300, 900, 5000, 40_000])
            assert run(a.insert(key, value, 0), da) == b.insert_now(db, key, value, 0)
        else:
            assert run(a.lookup_item(key), da) == b.lookup_item_now(db, key)
        if step % 50 == 0:
            now[0] += 0.5
    # same I/O, offset for offset (the bytes differ: each cache has its own generation)
    assert da.log == db.log
    sa, sb = a.stats(), b.stats()
    for s in (sa, sb):
        s["bighash"].pop("generation"), s["blockcache"].pop("generation")
    assert sa == sb
    with pytest.raises(ValueError, match="larger than the largest the flash engines take"):
        b.insert_now(db, b"huge", b"x" * (64 * MIB))
    # may_hold in C (the Router) answers as the Python probes do, for every key
    for n in (a, b):
        for eng in n.engines.values():         # each engine's C may_hold answers as its Python probe
            keys = [b"k%d" % i for i in range(200)]
            assert [eng.may_hold(k) for k in keys] == [eng.may_hold(bytearray(k)) for k in keys]
        answers = [(n.may_hold(b"k%d" % i), n.may_hold(bytearray(b"k%d" % i))) for i in range(200)]
        assert all(x[0] == x[1] for x in answers)
        assert any(x[0] for x in answers) and not all(x[0] for x in answers)


def test_a_failed_small_insert_in_c_releases_its_lock_and_raises():
    """Navy.insert_now's C form (Router.insert) holds BigHash's bucket lock stripe around
    the write: a failing device write comes out as the device's exception, and the lock
    is free again (another thread can take every stripe)."""
    import threading
    dev = PidDevice(32 * MIB, block_size=4096)
    n = navy(dev)
    real = dev.write
    calls = []

    def failing(offset, data, stream=None):
        calls.append(offset)
        raise OSError(5, "injected I/O error")

    dev.write = failing
    with pytest.raises(OSError, match="injected"):
        n.insert_now(dev, b"k", b"v" * 10)
    assert calls                                    # it did reach the device
    dev.write = real
    free = []

    def take_each():
        for lk in n.bighash.locks:
            got = lk.acquire(timeout=1)
            free.append(got)
            if got:
                lk.release()

    t = threading.Thread(target=take_each)
    t.start()
    t.join()
    assert free and all(free)
    assert n.insert_now(dev, b"k", b"v" * 10) and run(n.lookup(b"k"), dev) == b"v" * 10


def test_clear_empties_both_engines_and_the_superblock_keeps_it(dev):
    n = navy(dev)
    items = fill(n, dev)
    gens = (n.bighash.generation, n.blockcache.generation)
    n.clear()
    assert all(run(n.lookup(k), dev) is None for k in items)
    assert (n.bighash.generation, n.blockcache.generation) == (gens[0] + 1, gens[1] + 1)
    assert run(n.insert(b"after", b"a" * 100), dev) and run(n.lookup(b"after"), dev) == b"a" * 100
    # a crash now (no close): the superblock already holds the new generations, so the
    # old buckets read as empty and only what came after the clear is served
    n2 = navy(dev)
    assert n2.start.startswith("recovered after a crash")   # from the checkpoint clear() wrote
    assert all(run(n2.lookup(k), dev) is None for k in items)
    assert run(n2.lookup(b"after"), dev) == b"a" * 100


def test_clear_waits_for_an_engine_operation_in_progress(dev):
    """clear() takes BlockCache's lock and every BigHash stripe: it cannot reset an engine
    in the middle of another thread's insert."""
    import threading
    n = navy(dev)
    for lock in (n.bighash.locks[7], n.blockcache.lock):   # another thread's insert, say
        lock.acquire()
        done = threading.Event()
        t = threading.Thread(target=lambda done=done: (n.clear(), done.set()))
        t.start()
        assert not done.wait(0.2)
        lock.release()
        assert done.wait(10)
        t.join()


def test_close_saves_the_metadata_when_blockcache_flush_fails(dev):
    """A device error on the flush of BlockCache's buffer must not cost the warm restart:
    the metadata (without what only the buffer held) is saved, then the error raised."""
    n = navy(dev)
    sealed = {b"s%d" % i: bytes([i]) * 60_000 for i in range(40)}         # fills regions: sealed
    small = {b"b%d" % i: bytes([i]) * 50 for i in range(30)}
    for k, v in (sealed | small).items():
        run(n.insert(k, v), dev)
    run(n.insert(b"buffered", b"B" * 5000), dev)                          # only in the buffer
    real = dev.write
    bc = n.layout["engines"]["blockcache"]
    bc_lo, bc_hi = bc["offset"], bc["offset"] + bc["size"]

    def failing(offset, data, stream=None):
        if bc_lo <= offset < bc_hi:
            raise OSError(5, "injected region write error")
        return real(offset, data, stream)
    dev.write = failing
    with pytest.raises(OSError, match="injected region write error") as err:
        n.close()
    dev.write = real
    n2 = navy(dev)
    assert n2.start == "warm"
    assert "the warm-restart metadata was saved without the items only it held" in err.value.__notes__[0]
    assert all(run(n2.lookup(k), dev) == v for k, v in small.items())
    got = {k: run(n2.lookup(k), dev) for k in sealed}
    assert sum(got[k] == v for k, v in sealed.items()) >= 30 and all(got[k] in (None, v) for k, v in sealed.items())
    assert run(n2.lookup(b"buffered"), dev) is None
