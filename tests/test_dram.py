"""The DRAM tier: LRU order, honest byte charge, expiry, demotion of evicted items."""
import threading
import tracemalloc

from flashcache.dram import DramTier, item_charge


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


def test_lru_order_and_demotion():
    c = Clock()
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
    c = Clock()
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
    d = DramTier(1 << 20, Clock())
    d.set(b"a", b"1" * 10, 0)
    d.set(b"a", b"2" * 1000, 0)
    assert d.used_bytes == item_charge(b"a", b"2" * 1000)
    assert d.delete(b"a") and not d.delete(b"a")
    assert d.used_bytes == 0


def test_too_big_goes_straight_out():
    d = DramTier(100, Clock())
    out = d.set(b"a", b"v" * 1000, 0)
    assert [e.key for e in out] == [b"a"] and len(d) == 0


def test_charge_covers_real_memory():
    tracemalloc.start()
    try:
        d = DramTier(1 << 40, Clock())
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
    d = DramTier(50 * item_charge(b"k-0000", b"v" * 50), Clock())

    def work(t):
        for i in range(2000):
            d.set(b"k-%04d" % ((i * 7 + t) % 500), b"v" * 50, 0)
            d.get(b"k-%04d" % (i % 500))

    ts = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    [t.start() for t in ts]
    [t.join() for t in ts]
    assert d.used_bytes <= d.capacity
    assert d.used_bytes == sum(item_charge(k, v) for k, (v, _, _) in d._items.items())


def test_add_never_overwrites_and_clean_travels_with_eviction():
    c = Clock()
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
