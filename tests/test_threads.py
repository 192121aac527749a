"""Correctness under threads: for any interleaving, a get returns a miss or a value no
older than the last set/delete of that key that completed before the get began.

Threads set, get and delete keys of their own (each thread knows exactly what a get may
return) and keys they share (every operation is logged with a begin and an end stamp from
one counter, and each get is checked afterwards against the history). The DRAM tier is
small, so most items go through flash (demotions race deletes and overwrites); a short
switch interval makes the interleavings dense; and a floor on flash hits and demotions
makes sure the run really exercised flash.
"""
from __future__ import annotations

import bisect
import itertools
import random
import sys
import threading
import time
from dataclasses import dataclass, field

import pytest

import flashcache
import flashcache.cache
from flashcache import config

DELETE = object()


def stress_config(tmp_path, *, kind="emulated", engine="", dram="64KiB", cache_extra=""):
    return config.loads(f"""
[device]
kind = "{kind}"
path = "{tmp_path}/dev.img"
size = "64MiB"
{engine}
[device.emulator]
preset = "small-test"
[cache]
dram_size = "{dram}"
{cache_extra}
[cache.flash]
region_size = "256KiB"
bighash_fraction = 0.25
small_item_max = "1KiB"
""", "stress.toml")


@dataclass
class Report:
    ops: int = 0
    bad: list = field(default_factory=list)      # (key, got, allowed, why)
    checked_gets: int = 0


def _value(tid: int, n: int, rng: random.Random) -> bytes:
    tag = b"%d:%d:" % (tid, n)
    size = rng.choice((40, 300, 900, 2500, 6000))     # BigHash and BlockCache sizes
    return tag + bytes([n % 251]) * (size - len(tag))


def check_history(log: dict[bytes, list], report: Report) -> None:
    """Each key's log holds (begin, end, kind, value): kind "set", "delete" or "get" (value:
    what the get returned, None for a miss). Writes that overlap may take effect in either
    order, so a get may return the value of a set W unless W began after the get ended, or
    some other write began after W ended and ended before the get began (then W was
    certainly replaced or deleted first). A miss is always allowed."""
    for key, entries in log.items():
        writes = sorted((e for e in entries if e[2] != "get"), key=lambda w: w[1])
        by_value = {w[3]: w for w in writes if w[2] == "set"}
        ends = [w[1] for w in writes]
        latest_begin = list(itertools.accumulate((w[0] for w in writes), max))   # over writes by end
        for gb, ge, kind, got in entries:
            if kind != "get" or got is None:
                continue
            report.checked_gets += 1
            w = by_value.get(got)
            n = bisect.bisect_left(ends, gb)           # the writes that ended before the get began
            superseded_after = latest_begin[n - 1] if n else -1
            if w is None or w[0] > ge or superseded_after > w[1]:
                report.bad.append((key, got[:16], "a write began after this value's set ended and ended "
                                   "before the get began" if w else "never set"))


def _run_threads(n: int, target, switch: float = 1e-5) -> None:
    """Run target(0..n-1) in n threads with a short switch interval (dense interleavings);
    raise the first error any of them raised."""
    errors: list[BaseException] = []

    def run(t: int) -> None:
        try:
            target(t)
        except BaseException as e:        # noqa: BLE001 - reported below
            errors.append(e)
    old = sys.getswitchinterval()
    sys.setswitchinterval(switch)
    try:
        ts = [threading.Thread(target=run, args=(t,)) for t in range(n)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
    finally:
        sys.setswitchinterval(old)
    if errors:
        raise errors[0]


def stress(cache, *, threads: int = 8, ops: int = 3000, own_keys: int = 60, shared_keys: int = 40,
           seed: int = 1, switch: float = 1e-5, getter=None) -> Report:
    """Run the mixed workload on ``cache`` from ``threads`` threads and check every get."""
    report = Report()
    stamp = itertools.count()
    shared = [b"shared-%d" % i for i in range(shared_keys)]
    log: dict[bytes, list] = {k: [] for k in shared}
    get = getter or (lambda c, k: c.get(k))

    def worker(tid: int) -> None:
        rng = random.Random(seed * 1000 + tid)
        mine = [b"own-%d-%d" % (tid, i) for i in range(own_keys)]
        last: dict[bytes, bytes | None] = {}      # this thread's keys: what a get must return
        n = 0
        try:
            for _ in range(ops):
                n += 1
                if rng.random() < 0.6:
                    k = rng.choice(mine)
                    r = rng.random()
                    if r < 0.45:
                        v = _value(tid, n, rng)
                        cache.set(k, v)
                        last[k] = v
                    elif r < 0.6:
                        cache.delete(k)
                        last[k] = None
                    else:
                        got = get(cache, k)
                        if got is not None and got != last.get(k):
                            report.bad.append((k, got[:16], "own key: last op left %r" %
                                               (last.get(k) or b"")[:16]))
                else:
                    k = rng.choice(shared)
                    r = rng.random()
                    b = next(stamp)
                    if r < 0.4:
                        v = _value(tid, n, rng)
                        cache.set(k, v)
                        log[k].append((b, next(stamp), "set", v))
                    elif r < 0.55:
                        cache.delete(k)
                        log[k].append((b, next(stamp), "delete", None))
                    else:
                        got = get(cache, k)
                        log[k].append((b, next(stamp), "get", got))
        finally:
            report.ops += n

    _run_threads(threads, worker, switch)
    check_history(log, report)
    return report


def _assert_clean(cache, report: Report, *, min_flash_hits: int, min_demotions: int) -> None:
    st = cache.stats()["since_open"]
    assert not report.bad, f"{len(report.bad)} wrong values out of {report.ops} ops, e.g. {report.bad[:5]}"
    assert report.checked_gets > 200, report.checked_gets
    assert st["hits"]["flash"] >= min_flash_hits, st["hits"]
    assert st["demotions"] >= min_demotions, st["demotions"]


@pytest.mark.parametrize("hot", [True, False], ids=["c-hot-path", "python-path"])
def test_threads_never_see_deleted_or_overwritten_values(tmp_path, monkeypatch, hot):
    monkeypatch.setattr(flashcache.cache, "HOT_PATH", hot)
    with flashcache.Cache(stress_config(tmp_path)) as c:
        report = stress(c, threads=8, ops=2500)
        _assert_clean(c, report, min_flash_hits=500, min_demotions=2000)


def test_threads_on_a_file_device(tmp_path):
    with flashcache.Cache(stress_config(tmp_path, kind="file", engine='engine = "psync"\nformat = true')) as c:
        report = stress(c, threads=4, ops=2500, seed=2)
        _assert_clean(c, report, min_flash_hits=300, min_demotions=1000)


def test_threads_with_get_many(tmp_path):
    def get(c, k):
        return c.get_many([k, b"absent-key"]).get(k)
    with flashcache.Cache(stress_config(tmp_path)) as c:
        report = stress(c, threads=6, ops=2000, seed=3, getter=get)
        _assert_clean(c, report, min_flash_hits=300, min_demotions=1000)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(5))
def test_threads_long(tmp_path, seed):
    with flashcache.Cache(stress_config(tmp_path)) as c:
        report = stress(c, threads=12, ops=20000, seed=seed, shared_keys=100, own_keys=200)
        _assert_clean(c, report, min_flash_hits=5000, min_demotions=20000)


def test_async_tasks_never_see_deleted_or_overwritten_values(tmp_path):
    """Many tasks on one loop (flash read through the ring): a get awaits its flash read while other tasks set and delete
    the same keys; every get is checked against the history, as for threads."""
    import asyncio

    from flashcache.async_cache import AsyncCache

    report = Report()
    stamp = itertools.count()
    shared = [b"shared-%d" % i for i in range(40)]
    log: dict[bytes, list] = {k: [] for k in shared}

    async def task(c, tid: int) -> None:
        rng = random.Random(tid)
        mine = [b"own-%d-%d" % (tid, i) for i in range(8)]
        last: dict[bytes, bytes | None] = {}
        for n in range(120):
            report.ops += 1
            own = rng.random() < 0.5
            k = rng.choice(mine if own else shared)
            r = rng.random()
            b = next(stamp)
            if r < 0.4:
                v = _value(tid, n, rng)
                await c.set(k, v)
                kind, got = "set", v
            elif r < 0.55:
                await c.delete(k)
                kind, got = "delete", None
            else:
                kind, got = "get", await c.get(k)
            if own:
                if kind == "get" and got is not None and got != last.get(k):
                    report.bad.append((k, got[:16], "own key"))
                elif kind != "get":
                    last[k] = got
            else:
                log[k].append((b, next(stamp), kind, got))
            if rng.random() < 0.3:
                await asyncio.sleep(0)

    async def main():
        async with AsyncCache(stress_config(tmp_path, cache_extra='async_reads = "ring"')) as c:
            await asyncio.gather(*(task(c, t) for t in range(200)))
            return c.stats()["since_open"] | {"async_io": c.stats()["async_io"]}

    st = asyncio.run(main())
    check_history(log, report)
    assert not report.bad, f"{len(report.bad)} wrong values out of {report.ops} ops, e.g. {report.bad[:5]}"
    assert report.checked_gets > 500, report.checked_gets
    assert st["hits"]["flash"] >= 1000 and st["demotions"] >= 3000, (st["hits"], st["demotions"])
    assert st["async_io"]["batches"] > 0


# --------------------------------------------------------------------------- read-modify-writes


def _filler(c, tid: int, rng: random.Random) -> None:
    c.set(b"fill-%d-%d" % (tid, rng.randrange(300)), bytes(rng.choice((100, 900, 3000))))


@pytest.mark.parametrize("hot", [True, False], ids=["c-hot-path", "python-path"])
def test_incr_from_many_threads_loses_no_increment(tmp_path, monkeypatch, hot):
    """N threads incr one counter M times each, with filler sets between, on a DRAM tier
    so small that the counter keeps leaving it: it is read back from flash, or caught on
    its way there (evicted by another thread, not yet written), and the total is exact."""
    monkeypatch.setattr(flashcache.cache, "HOT_PATH", hot)
    threads, times = 8, 400
    with flashcache.Cache(stress_config(tmp_path, dram="8KiB")) as c:
        where = {"dram": 0, "in flight": 0, "flash": 0}
        held = c.core.held

        def spy(k):
            if k == b"ctr":
                where["dram" if c.dram.peek_expiry(k) is not None else
                      "in flight" if c.dram.latest(k) is not None else "flash"] += 1
            return held(k)
        c.core.held = spy
        c.set(b"ctr", b"0")

        def work(t: int) -> None:
            rng = random.Random(t)
            for _ in range(times):
                c.incr(b"ctr")
                for _ in range(3):
                    _filler(c, t, rng)
        _run_threads(threads, work)
        assert c.get(b"ctr") == b"%d" % (threads * times)
        assert where["flash"] + where["in flight"] >= 20, where
        assert c.dram.in_flight() == 0                    # every demotion settled


@pytest.mark.parametrize("op", ["incr", "add", "pop", "delete", "touch"])
def test_a_read_modify_write_sees_a_value_evicted_by_another_thread_and_not_yet_on_flash(tmp_path, monkeypatch, op):
    """Another thread's set evicts the key, and its write to flash waits: neither DRAM nor
    flash holds the key, yet it exists. A read-modify-write must find it (in flight), and
    the late write must then not undo the change."""
    monkeypatch.setattr(flashcache.cache, "HOT_PATH", False)
    from engines.device import run
    with flashcache.Cache(stress_config(tmp_path, dram="4KiB")) as c:
        c.set(b"ctr", b"41")
        evicted, go = threading.Event(), threading.Event()
        demote = c.core.demote

        def paused_demote(out, ticket, mine=0, failed=None):
            out = list(out)
            if any(e.key == b"ctr" for e in out):
                evicted.set()
                go.wait(10)
            return demote(out, ticket, mine, failed)
        c.core.demote = paused_demote
        t = threading.Thread(target=lambda: [c.set(b"f%d" % i, b"x" * 500) for i in range(20)])
        t.start()
        try:
            assert evicted.wait(10)
            assert c.dram.peek_expiry(b"ctr") is None and run(c.navy.lookup(b"ctr"), c.device) is None
            assert c.dram.in_flight() >= 1
            if op == "incr":
                assert c.incr(b"ctr") == 42
            elif op == "add":
                assert c.add(b"ctr", b"0") is False
            elif op == "pop":
                assert c.pop(b"ctr") == b"41"
            elif op == "delete":
                assert c.delete(b"ctr") is True
            else:
                assert c.touch(b"ctr", 100) is True
        finally:
            go.set()
            t.join()
        want = {"incr": b"42", "add": b"41", "pop": None, "delete": None, "touch": b"41"}[op]
        assert c.get(b"ctr") == want
        assert c.dram.in_flight() == 0


def test_add_from_many_threads_one_wins(tmp_path):
    """Threads add the same fresh keys at once (fillers push keys out to flash between):
    for each key exactly one add returns True, and its value is the one held."""
    keys = [b"new-%d" % i for i in range(150)]
    wins: dict[bytes, list[int]] = {k: [] for k in keys}
    with flashcache.Cache(stress_config(tmp_path, dram="8KiB")) as c:
        def work(t: int) -> None:
            rng = random.Random(t)
            for k in keys:
                if c.add(k, b"%d" % t + b"." * rng.choice((10, 2000))):
                    wins[k].append(t)
                _filler(c, t, rng)
        _run_threads(8, work)
        assert all(len(w) == 1 for w in wins.values()), {k: w for k, w in wins.items() if len(w) != 1}
        held = c.get_many(keys)
        assert all(v.split(b".")[0] == b"%d" % wins[k][0] for k, v in held.items())
        assert len(held) > 50


def test_pop_from_many_threads_hands_each_value_out_once(tmp_path):
    keys = [b"pop-%d" % i for i in range(200)]
    got: list[bytes] = []
    with flashcache.Cache(stress_config(tmp_path, dram="8KiB")) as c:
        c.set_many({k: k + b"." * 500 for k in keys})

        def work(t: int) -> None:
            rng = random.Random(t)
            for k in keys:
                v = c.pop(k, None)
                if v is not None:
                    got.append(v)
                _filler(c, t, rng)
        _run_threads(8, work)
        assert len(got) == len(set(got)) and len(got) > 100      # never twice; evicted ones are gone
        assert c.get_many(keys) == {}


def test_clear_under_threads_leaves_no_value_set_before_it(tmp_path):
    """Threads set and get while clear() runs now and then: a get that begins after a
    clear returned never sees a value whose set ended before that clear began."""
    stamp = itertools.count()
    sets: dict[bytes, tuple[int, int]] = {}          # value -> (begin, end)
    gets: list[tuple[int, bytes]] = []               # (begin, value)
    clears: list[tuple[int, int]] = []
    with flashcache.Cache(stress_config(tmp_path, dram="16KiB")) as c:
        done = threading.Event()

        def work(t: int) -> None:
            if t == 0:
                for _ in range(40):
                    time.sleep(0.002)
                    b = next(stamp)
                    c.clear()
                    clears.append((b, next(stamp)))
                done.set()
                return
            rng = random.Random(t)
            n = 0
            while not done.is_set():
                n += 1
                k = b"k%d" % rng.randrange(60)
                if rng.random() < 0.5:
                    v = b"%d:%d:" % (t, n) + b"." * rng.choice((50, 900, 4000))
                    b = next(stamp)
                    c.set(k, v)
                    sets[v] = (b, next(stamp))
                else:
                    b = next(stamp)
                    v = c.get(k)
                    if v is not None:
                        gets.append((b, v))
        _run_threads(7, work)
        assert c.dram.in_flight() == 0
    bad = [(gb, v[:12]) for gb, v in gets for cb, ce in clears if ce < gb and sets[v][1] < cb]
    assert not bad, f"{len(bad)} gets saw a value set before a clear that ended before them: {bad[:5]}"
    assert len(gets) > 300 and len(clears) == 40
