"""The DRAM tier: LRU order, honest byte charge, expiry, demotion of evicted items."""
import threading
import tracemalloc

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flashcache.dram import DramTier, item_charge
from tests.clock import FakeClock


def test_lru_order_and_demotion():
    c = FakeClock(1000.0)
    per = item_charge(b"k0", b"x" * 100)
    d = DramTier(per * 3, c)
    for i in range(3):
        assert d.set(b"k%d" % i, b"x" * 100, 0) == []
    assert d.get(b"k0") == b"x" * 100          # k0 is now most recent
    out = d.set(b"k3", b"x" * 100, 0)
    assert [e.key for e in out] == [b"k1"]     # least recent goes
    assert d.get(b"k1") is None and d.get(b"k0") is not None
    assert d.used_bytes == 3 * per and len(d) == 3


def test_expiry_never_returned_and_not_demoted():
    c = FakeClock(1000.0)
    d = DramTier(10 * item_charge(b"a", b"v"), c)
    d.set(b"a", b"v", c.t + 5)
    d.set(b"b", b"v", c.t + 50)
    c.t += 10
    assert d.get(b"a") is None
    assert d.get(b"b") == b"v"
    assert d.touch(b"b", c.t + 1)
    c.t += 2
    assert d.get(b"b") is None and not d.touch(b"b", 0)
    d2 = DramTier(item_charge(b"a", b"v"), c)
    d2.set(b"a", b"v", c.t + 1)
    c.t += 5
    assert d2.set(b"z", b"v", 0) == []        # expired a is dropped, not demoted
    assert d2.stats()["expired"] == 1


def test_replace_and_delete_keep_accounting():
    d = DramTier(1 << 20, FakeClock(1000.0))
    d.set(b"a", b"1" * 10, 0)
    d.set(b"a", b"2" * 1000, 0)
    assert d.used_bytes == item_charge(b"a", b"2" * 1000)
    assert d.delete(b"a") and not d.delete(b"a")
    assert d.used_bytes == 0


def test_too_big_goes_straight_out():
    d = DramTier(100, FakeClock(1000.0))
    out = d.set(b"a", b"v" * 1000, 0)
    assert [e.key for e in out] == [b"a"] and len(d) == 0


def test_charge_covers_real_memory():
    tracemalloc.start()
    try:
        d = DramTier(1 << 40, FakeClock(1000.0))
        n = 20000
        keys = [b"key-%010d" % i for i in range(n)]
        vals = [bytes(64 + i % 200) for i in range(n)]
        before = tracemalloc.get_traced_memory()[0]
        for i, (k, v) in enumerate(zip(keys, vals)):
            d.set(k, v, 1e12 + i)             # distinct float expiries: the worst case
        real = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    overhead_charged = d.used_bytes - sum(len(k) + len(v) for k, v in zip(keys, vals))
    # keys/values were allocated before: the real growth is the per-item overhead only,
    # which must fit in what we charge beyond the raw payload.
    assert real <= overhead_charged, (real / n, overhead_charged / n)


def test_threads_keep_budget():
    d = DramTier(50 * item_charge(b"k-0000", b"v" * 50), FakeClock(1000.0))

    def work(t):
        for i in range(2000):
            d.set(b"k-%04d" % ((i * 7 + t) % 500), b"v" * 50, 0)
            d.get(b"k-%04d" % (i % 500))

    ts = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    [t.start() for t in ts]
    [t.join() for t in ts]
    assert d.used_bytes <= d.capacity
    assert d.used_bytes == sum(item_charge(e.key, e.value) for e in d.snapshot())


def test_add_never_overwrites_and_clean_travels_with_eviction():
    c = FakeClock(1000.0)
    per = item_charge(b"k0", b"x" * 100)
    d = DramTier(per * 2, c)
    d.set(b"k0", b"x" * 100, 0)
    added, out = d.add(b"k0", b"y" * 100, 0)          # a racing promotion of an older value
    assert not added and out == [] and d.get(b"k0") == b"x" * 100
    assert d.add(b"k1", b"z" * 100, 0, clean=True) == (True, [])
    out = d.set(b"k2", b"w" * 100, 0)
    assert [(e.key, e.clean) for e in out] == [(b"k0", False)]
    out = d.set(b"k3", b"w" * 100, 0)
    assert [(e.key, e.clean) for e in out] == [(b"k1", True)]
    d.touch(b"k2", c.t + 100)                           # new expiry: flash's copy is stale now
    assert [(e.key, e.clean) for e in d.drain()] == [(b"k3", False), (b"k2", False)]


class ModelTier:
    """The tier's contract in plain Python (what dram.py was before the LRU moved to C),
    with the items in flight: dirty evictions not yet settled, forgotten at the key's next
    event in the tier."""

    def __init__(self, cap, clock):
        from collections import OrderedDict
        self.cap, self.clock, self.items, self.bytes = cap, clock, OrderedDict(), 0
        self.hits = self.misses = self.evictions = self.expired = 0
        self.pending = {}                       # key -> (value object, expiry)

    def _drop(self, k):
        v, e, cl = self.items.pop(k)
        self.bytes -= item_charge(k, v)
        self.pending.pop(k, None)

    def get(self, k):
        ent = self.items.get(k)
        if ent is not None and ent[1] and ent[1] <= self.clock():
            self._drop(k)
            self.expired += 1
            ent = None
        if ent is None:
            self.misses += 1
            return None
        self.items.move_to_end(k)
        self.hits += 1
        return ent[0]

    def _put(self, k, v, e, cl):
        charge = item_charge(k, v)
        self.pending.pop(k, None)
        if charge > self.cap:
            if not cl:
                self.pending[k] = (v, float(e))
            return [(k, v, float(e), cl)]
        self.items[k] = (v, e, cl)
        self.bytes += charge
        out = []
        while self.bytes > self.cap:
            k2 = next(iter(self.items))
            v2, e2, cl2 = self.items[k2]
            self._drop(k2)
            if e2 and e2 <= self.clock():
                self.expired += 1
                continue
            self.evictions += 1
            if not cl2:
                self.pending[k2] = (v2, float(e2))
            out.append((k2, v2, float(e2), cl2))
        return out

    def set(self, k, v, e, clean=False):
        if k in self.items:
            self._drop(k)
        return self._put(k, v, e, clean)

    def add(self, k, v, e, clean=True):
        return (False, []) if k in self.items else (True, self._put(k, v, e, clean))

    def delete(self, k):
        if k not in self.items:
            return self.pending.pop(k, None) is not None
        self._drop(k)
        return True

    def touch(self, k, e):
        ent = self.items.get(k)
        if ent is None or (ent[1] and ent[1] <= self.clock()):
            return False
        self.items[k] = (ent[0], e, False)
        self.items.move_to_end(k)
        self.pending.pop(k, None)
        return True

    def drain(self):
        now, items = self.clock(), list(self.items.items())
        for k in self.items:
            self.pending.pop(k, None)
        self.items.clear()
        self.bytes = 0
        return [(k, v, float(e), cl) for k, (v, e, cl) in items if not e or e > now]

    def latest(self, k):
        ent = self.items.get(k)
        return (ent[0], float(ent[1])) if ent is not None else self.pending.get(k)

    def settle(self, k, v, e):
        p = self.pending.get(k)
        if p is not None and p[0] is v and p[1] == e:
            del self.pending[k]
            return True
        return False

    def clear(self):
        self.items.clear()
        self.pending.clear()
        self.bytes = 0


_ops = st.lists(st.tuples(st.sampled_from(["get", "set", "set", "add", "delete", "touch", "tick", "drain", "peek",
                                           "latest", "settle", "clear"]),
                          st.integers(0, 12), st.sampled_from([1, 40, 300, 2000]),
                          st.sampled_from([0, 0, 3, 30.5]), st.booleans()), max_size=150)


@settings(max_examples=150, deadline=None)
@given(_ops, st.sampled_from([0, 500, 1500, 5000]))
def test_c_lru_matches_the_model(ops, cap):
    """Every answer, eviction (order, expiry, clean flag), item in flight, counter and byte
    count of the C LRU equals the plain Python model's, over random operations with expiry."""
    clock = FakeClock(1000.0)
    d, m = DramTier(cap, clock), ModelTier(cap, clock)
    for op, i, n, ttl, clean in ops:
        k, v = b"key%d" % i, bytes([i]) * n
        e = clock.t + ttl if ttl else 0
        if op == "get":
            assert d.get(k) == m.get(k)
        elif op == "set":
            assert [tuple(x) for x in d.set(k, v, e, clean)] == m.set(k, v, e, clean)
        elif op == "add":
            added, out = d.add(k, v, e, clean=clean)
            assert (added, [tuple(x) for x in out]) == m.add(k, v, e, clean)
        elif op == "delete":
            assert d.delete(k) == m.delete(k)
        elif op == "touch":
            assert d.touch(k, e) == m.touch(k, e)
        elif op == "tick":
            clock.t += 10
        elif op == "peek":
            ent = m.items.get(k)
            assert d.peek_expiry(k) == (None if ent is None else ent[1])
        elif op == "latest":
            assert d.latest(k) == m.latest(k)
        elif op == "settle":                    # the very item in flight, or another one
            sv, se = m.pending[k] if k in m.pending and clean else (v, float(e))
            assert d.settle(k, sv, se) == m.settle(k, sv, se)
        elif op == "clear":
            d.clear()
            m.clear()
        else:
            assert [tuple(x) for x in d.drain()] == m.drain()
        assert d.used_bytes == m.bytes <= max(cap, 0) and len(d) == len(m.items)
        assert d.in_flight() == len(m.pending)
        assert [(x.key, x.value, x.expiry, x.clean) for x in d.snapshot()] == \
            [(k2, v2, float(e2), cl2) for k2, (v2, e2, cl2) in m.items.items()]
    assert (d.hits, d.misses, d.evictions, d.expired) == (m.hits, m.misses, m.evictions, m.expired)


def test_keys_must_be_bytes_and_errors_leave_the_tier_whole():
    d = DramTier(1 << 20, FakeClock(1000.0))
    d.set(b"a", b"1", 0)
    for bad in ("a", bytearray(b"a"), 1):
        with pytest.raises(TypeError, match="keys and values are bytes"):
            d.set(bad, b"v", 0)
        with pytest.raises(TypeError, match="keys and values are bytes"):
            d.get(bad)
    with pytest.raises(TypeError, match="keys and values are bytes"):
        d.set(b"b", "v", 0)

    def broken_clock():
        raise RuntimeError("clock failed")

    e = DramTier(1 << 20, broken_clock)
    e.set(b"a", b"1", 0)
    with pytest.raises(RuntimeError, match="clock failed"):
        e.set(b"b", b"2", 5.0)                  # asks the time before touching anything
    assert len(e) == 1 and e.get(b"a") == b"1" and e.used_bytes == item_charge(b"a", b"1")


def test_a_clock_that_lets_other_threads_run_is_safe():
    """The clock may be Python code (another thread can run while it does): get() looks
    the key up again after asking the time, so an item deleted meanwhile is not revived."""
    d = None

    def clock():
        d.delete(b"a")                          # what another thread could do right then
        return 1000.0

    d = DramTier(1 << 20, clock)
    d.set(b"a", b"1", 2000.0)
    assert d.get(b"a") is None and len(d) == 0 and d.used_bytes == 0


def test_an_expiry_given_by_touch_is_honoured_on_eviction():
    c = FakeClock(1000.0)
    per = item_charge(b"a", b"v")
    d = DramTier(per, c)
    d.set(b"a", b"v", 0)
    assert d.touch(b"a", c.t + 3)
    c.t += 10
    assert d.set(b"b", b"v", 0) == [] and d.expired == 1     # dropped, not demoted
    d.touch(b"b", c.t + 3)
    d.touch(b"b", 0)                                          # and taken back
    c.t += 10
    assert [e.key for e in d.set(b"c", b"v", 0)] == [b"b"]


def test_evicted_fields_agree_with_c_and_a_planted_swap_fails_naming_the_field():
    """C builds Evicted by position (flashcache/_hot.h EV_*); dram.py checks the order at
    import. A swap of two fields fails, naming the first position that differs."""
    from flashcache import _hot_c
    from flashcache.dram import Evicted, _check_evicted_fields
    assert _hot_c.EVICTED_FIELDS == Evicted._fields
    with pytest.raises(ImportError, match=r"field 2 is 'expiry' in Python but 'clean' in flashcache/_hot.h"):
        _check_evicted_fields(("key", "value", "clean", "expiry"), Evicted._fields)
    with pytest.raises(ImportError, match=r"field 4 is 'extra' in Python but None"):
        _check_evicted_fields(_hot_c.EVICTED_FIELDS, (*Evicted._fields, "extra"))
