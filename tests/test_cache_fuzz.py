"""The public Cache API against a model, under hypothesis' stateful testing: random calls
(every method, the dict forms) with random keys, values and TTLs, junk included (None,
numbers, NaN and infinities, lists, empty and oversized keys, values larger than flash
takes). Each call either raises a clear TypeError/ValueError/KeyError, exactly when the
model says the input is bad, and changes nothing, or behaves as the model allows: a miss
is always allowed (a cache may evict), a wrong or stale value never. After every step the
cache still works, and after every run it closes and reopens warm.

The DRAM tier is tiny, so items keep moving to flash (BigHash and BlockCache) and back.
``make test`` runs a few seconds of it; the ``slow`` profile runs long.
"""
from __future__ import annotations

import math
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule, run_state_machine_as_test

import flashcache
from engines.device import MAX_EXPIRY
from tests.clock import FakeClock
from tests.test_cache import cfg

_MISSING = object()
_U64 = 1 << 64


class Huge(bytes):
    """A value larger than flash takes, with a short repr (hypothesis prints the steps)."""

    def __repr__(self):
        return f"Huge({len(self)} bytes)"


KEYS = [b"k0", b"k1", b"k2", "k3", "ключ", b"n0", b"n1"]          # str keys are UTF-8
JUNK_KEYS = [None, 7, 1.5, float("nan"), [b"k0"], b"", "", Huge(b"x" * 5000), "\ud800", bytearray(b"k1")]
SIZES = [0, 1, 30, 300, 900, 1500, 8000, 70_000]
NUMBERS = [b"0", b"7", b"%d" % (_U64 - 1), b"12abc", b"-3"]
JUNK_VALUES = [None, 42, 1.5, "text", [b"v"], {"a": 1}, Huge(2 << 20)]
TTLS = [None, None, 0, 3, 5, 20, 7.5, 1e5]
JUNK_TTLS = [float("nan"), float("inf"), float("-inf"), -1, 5e9, 10 ** 30, True, "10", [1]]


def mostly(good, junk, odds: int = 6):
    """``good`` about ``odds`` times as often as ``junk``."""
    return st.integers(0, odds).flatmap(lambda i: junk if i == 0 else good)


def key_st():
    return mostly(st.sampled_from(KEYS), st.sampled_from(JUNK_KEYS))


def value_st():
    good = st.one_of(st.builds(lambda n, b: bytes([b]) * n, st.sampled_from(SIZES), st.integers(0, 255)),
                     st.sampled_from(NUMBERS), st.builds(bytearray, st.binary(max_size=20)))
    return mostly(good, st.sampled_from(JUNK_VALUES))


def ttl_st():
    return mostly(st.one_of(st.sampled_from(TTLS), st.floats(min_value=0, max_value=50)), st.sampled_from(JUNK_TTLS))


def u64_st():
    return st.one_of(st.integers(0, 10), st.sampled_from([_U64 - 1, _U64, -1, 1.0, True, "1", None]))


class CacheVsModel(RuleBasedStateMachine):
    """The model: for each key, the value and absolute expiry the cache may return, or
    nothing. An item is certainly gone at ceil(expiry) (flash keeps whole seconds, so
    between expiry and then either answer is right). ``seen`` adds up what the runs did,
    so a test can require that they went through flash and met bad input."""

    seen: dict[str, int] = {}

    def __init__(self):
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="flashcache-fuzz-"))
        self.clock = FakeClock()
        self.conf = cfg(self.dir, dram="4KiB")
        self.cache = flashcache.Cache(self.conf, clock=self.clock)
        self.model: dict[bytes, tuple[bytes, float]] = {}
        self.max_item = self.cache.navy.max_item_size

    # -- what the model expects ----------------------------------------------------------
    def key_error(self, key):
        if not isinstance(key, (bytes, bytearray, memoryview, str)):
            return TypeError
        if isinstance(key, str):
            try:
                key = key.encode()
            except UnicodeEncodeError:
                return ValueError
        return ValueError if not key or len(key) > self.cache.max_key_size else None

    def ttl_error(self, ttl):
        if ttl is None:
            return None
        if isinstance(ttl, bool) or not isinstance(ttl, (int, float)):
            return TypeError
        if ttl == 0:
            return None
        return ValueError if not ttl > 0 or ttl > MAX_EXPIRY - self.clock.t else None

    def item_error(self, key, value, ttl):
        err = self.key_error(key)
        if err is None and not isinstance(value, (bytes, bytearray, memoryview)):
            err = TypeError
        if err is None and len(self.k(key)) + len(value) > self.max_item:
            err = ValueError
        return err or self.ttl_error(ttl)

    @staticmethod
    def k(key) -> bytes:
        return key.encode() if isinstance(key, str) else bytes(key)

    def expiry(self, ttl) -> float:
        return self.clock.t + ttl if ttl else 0.0

    def state(self, k: bytes) -> str:
        """"absent", "live" or "either" (between expiry and the whole second after it)."""
        ent = self.model.get(k)
        if ent is None:
            return "absent"
        exp = ent[1]
        if not exp or self.clock.t < exp:
            return "live"
        return "either" if self.clock.t < math.ceil(exp) else "absent"

    def call(self, err, fn, *args):
        """Run fn(*args): it must raise ``err`` (a class) if the model expects one, else not."""
        if err is not None:
            with pytest.raises(err):
                fn(*args)
            self.seen["refused"] = self.seen.get("refused", 0) + 1
            return _MISSING
        return fn(*args)

    def check_got(self, k: bytes, got) -> None:
        """A read returned ``got`` (None: a miss): the model's value or a miss, nothing else."""
        s = self.state(k)
        if got is None:
            if s != "absent":
                self.model.pop(k, None)            # evicted: from now on a miss is the only answer
            return
        assert s != "absent", (k, got[:20], "a value for a key that holds none")
        assert got == self.model[k][0], (k, got[:20], self.model[k][0][:20])

    # -- the rules -------------------------------------------------------------------------
    @initialize(sizes=st.lists(st.sampled_from(SIZES), min_size=len(KEYS), max_size=len(KEYS)))
    def fill(self, sizes):
        for key, n in zip(KEYS, sizes):
            value = key.encode() * n if isinstance(key, str) else key * n
            self.cache.set(key, value)
            self.model[self.k(key)] = (value, 0.0)

    @rule()
    def read_all(self):
        for key in KEYS:
            self.check_got(self.k(key), self.cache.get(key))

    @rule(key=key_st(), value=value_st(), ttl=ttl_st())
    def set(self, key, value, ttl):
        if self.call(self.item_error(key, value, ttl), self.cache.set, key, value, ttl) is not _MISSING:
            self.model[self.k(key)] = (bytes(value), self.expiry(ttl))

    @rule(key=key_st(), value=value_st())
    def setitem(self, key, value):
        if self.call(self.item_error(key, value, None), self.cache.__setitem__, key, value) is not _MISSING:
            self.model[self.k(key)] = (bytes(value), 0.0)

    @rule(items=st.lists(st.tuples(key_st(), value_st()), max_size=4), ttl=ttl_st())
    def set_many(self, items, ttl):
        mapping = dict(items) if all(isinstance(k, (bytes, str)) for k, _ in items) else None
        if mapping is None:
            return
        # every item is checked before any is stored: the first bad one is the error
        err = next((e for e in (self.item_error(k, v, ttl) for k, v in mapping.items()) if e is not None), None)
        if self.call(err, self.cache.set_many, mapping, ttl) is not _MISSING:
            for key, value in mapping.items():
                self.model[self.k(key)] = (bytes(value), self.expiry(ttl))

    @rule(key=key_st())
    def get(self, key):
        got = self.call(self.key_error(key), self.cache.get, key)
        if got is not _MISSING:
            self.check_got(self.k(key), got)

    def or_none(self, fn, key):
        """fn(key) as the model expects: refused (_MISSING) if the key is bad, None for a KeyError."""
        err = self.key_error(key)
        if err is not None:
            return self.call(err, fn, key)
        try:
            return fn(key)
        except KeyError:
            return None

    @rule(key=key_st())
    def getitem(self, key):
        got = self.or_none(self.cache.__getitem__, key)
        if got is not _MISSING:
            self.check_got(self.k(key), got)

    @rule(key=key_st())
    def contains(self, key):
        got = self.call(self.key_error(key), self.cache.__contains__, key)
        if got is not _MISSING and got:
            assert self.state(self.k(key)) != "absent", key

    @rule(keys=st.lists(key_st(), max_size=5))
    def get_many(self, keys):
        # the result is keyed by the keys as given: a bytearray cannot be one
        err = next((e for e in map(self.key_error, keys) if e is not None), None) or \
            (TypeError if any(isinstance(k, bytearray) for k in keys) else None)
        got = self.call(err, self.cache.get_many, keys)
        if got is _MISSING:
            return
        assert set(got) <= set(keys)
        for key in keys:
            self.check_got(self.k(key), got.get(key))

    @rule(key=key_st())
    def delete(self, key):
        if self.call(self.key_error(key), self.cache.delete, key) is not _MISSING:
            self.model.pop(self.k(key), None)

    @rule(key=key_st())
    def delitem(self, key):
        # a KeyError is allowed even for a live item: it may have been evicted
        if self.or_none(self.cache.__delitem__, key) is not _MISSING:
            self.model.pop(self.k(key), None)

    @rule(key=key_st(), ttl=ttl_st())
    def touch(self, key, ttl):
        err = self.key_error(key) or self.ttl_error(ttl)
        s = self.state(self.k(key)) if err is None else None
        got = self.call(err, self.cache.touch, key, ttl)
        if got is _MISSING:
            return
        k = self.k(key)
        if got:
            assert s != "absent", (key, "touch found a key that holds nothing")
            self.model[k] = (self.model[k][0], self.expiry(ttl))
        else:
            self.model.pop(k, None)

    @rule(key=key_st(), value=value_st(), ttl=ttl_st())
    def add(self, key, value, ttl):
        err = self.item_error(key, value, ttl)
        s = self.state(self.k(key)) if err is None else None
        got = self.call(err, self.cache.add, key, value, ttl)
        if got is _MISSING:
            return
        if got:                                   # allowed even for a live item: it may have been evicted
            self.model[self.k(key)] = (bytes(value), self.expiry(ttl))
        else:
            assert s != "absent", (key, "add refused a key that holds nothing")

    @rule(key=key_st(), delta=u64_st(), default=st.one_of(st.none(), u64_st()), down=st.booleans())
    def incr(self, key, delta, default, down):
        err = self.key_error(key)
        for n in (delta,) + (() if default is None else (default,)):
            if err is None:
                err = TypeError if isinstance(n, bool) or not isinstance(n, int) else \
                    ValueError if not 0 <= n < _U64 else None
        op = self.cache.decr if down else self.cache.incr
        if err is not None:
            self.call(err, op, key, delta, default)
            return
        k = self.k(key)
        s = self.state(k)
        old = self.model[k][0] if s != "absent" else None
        try:
            got = op(key, delta, default)
        except KeyError:
            assert default is None
            self.model.pop(k, None)                 # absent (or evicted) after all
            return
        except ValueError:
            assert old is not None and not (old.isdigit() and len(old) <= 20 and int(old) < _U64), old
            return
        start = None
        if old is not None and old.isdigit() and len(old) <= 20 and int(old) < _U64:
            start = int(old)
        want = {(n + delta) % _U64 if not down else max(n - delta, 0)
                for n in ([start] if start is not None else []) + ([default] if default is not None else [])}
        assert got in want, (key, old, delta, default, got)
        if start is None or (got != ((start + delta) % _U64 if not down else max(start - delta, 0))):
            self.model[k] = (b"%d" % got, 0.0)       # made from the default: no expiry
        else:
            self.model[k] = (b"%d" % got, self.model[k][1])

    @rule(key=key_st(), default=st.sampled_from([_MISSING, None, b"dflt"]))
    def pop(self, key, default):
        err = self.key_error(key)
        if err is not None:
            self.call(err, self.cache.pop, key, *(() if default is _MISSING else (default,)))
            return
        k = self.k(key)
        try:
            got = self.cache.pop(key) if default is _MISSING else self.cache.pop(key, default)
        except KeyError:
            got = None
        if got is not None and got is not default:
            self.check_got(k, got)
        self.model.pop(k, None)

    @rule()
    def clear(self):
        self.cache.clear()
        self.model.clear()

    @rule()
    def length(self):
        n = len(self.cache)
        assert isinstance(n, int) and n >= 0

    @rule(dt=st.sampled_from([1, 3, 10, 0.5]))
    def tick(self, dt):
        self.clock.t += dt

    @rule(n=st.integers(5, 40))
    def push_to_flash(self, n):
        for i in range(n):
            self.cache.set(b"fill-%d" % i, bytes([i]) * 700)

    @invariant()
    def still_works(self):
        self.cache.set(b"__sentinel__", b"ok")
        assert self.cache.get(b"__sentinel__") == b"ok"

    def teardown(self):
        try:
            st = self.cache.stats()
            for name, n in (("flash hits", st["since_open"]["hits"]["flash"]), ("demotions", st["since_open"]["demotions"]),
                            ("flash items", st["flash"]["blockcache"]["items"])):
                self.seen[name] = self.seen.get(name, 0) + n
            self.cache.close()
            with flashcache.Cache(self.conf, clock=self.clock) as c:     # reopens warm, answers as the model allows
                assert c.stats()["start"] == "warm"
                self.cache = c
                for k in list(self.model):
                    self.check_got(k, c.get(k))
                for k in KEYS:
                    self.check_got(self.k(k), c.get(k))
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)


def test_the_api_against_a_model():
    CacheVsModel.seen = {}
    run_state_machine_as_test(CacheVsModel, settings=settings(
        max_examples=25, stateful_step_count=40, deadline=None, suppress_health_check=[HealthCheck.too_slow]))
    seen = CacheVsModel.seen
    assert seen["flash hits"] > 20 and seen["demotions"] > 200 and seen["refused"] > 50, seen


@pytest.mark.slow
def test_the_api_against_a_model_long():
    run_state_machine_as_test(CacheVsModel, settings=settings(
        max_examples=400, stateful_step_count=100, deadline=None, suppress_health_check=[HealthCheck.too_slow]))
