"""flashcache.Cache's API beyond get/set: TTL checking at the call, close() that keeps
going after an error, the dict forms, add/incr/decr/pop/clear/len, and the codecs."""
from __future__ import annotations

import pickle

import pytest

import flashcache
from engines.device import MAX_EXPIRY, run
from tests.test_cache import cfg, fill_until_flash


def on_flash_only(c, key: bytes) -> bool:
    return c.dram.latest(key) is None and run(c.navy.lookup(key), c.device) is not None


# --------------------------------------------------------------------------- TTL at the call

BAD_TTLS = [
    (float("inf"), ValueError, r"ttl = inf: use 0 for an item that never expires"),
    (float("-inf"), ValueError, r"ttl = -inf: use seconds >= 0"),
    (float("nan"), ValueError, r"ttl = nan: use seconds >= 0"),
    (-1, ValueError, r"ttl = -1: use seconds >= 0"),
    (5e9, ValueError, r"ttl = 5000000000.0: at most 4293967295 seconds from now: .* ttl is relative seconds, "
                      r"never an absolute time"),
    (10 ** 400, ValueError, r"ttl = 1000000000000000000000000000000000000000\.\.\.: at most"),
    (True, TypeError, "ttl must be a number of seconds or None, not bool"),
    ("10", TypeError, "ttl must be a number of seconds or None, not str"),
]


@pytest.mark.parametrize("ttl, exc, msg", BAD_TTLS, ids=[repr(t[0])[:12] for t in BAD_TTLS])
def test_a_bad_ttl_fails_at_the_call_and_poisons_nothing(tmp_path, clock, ttl, exc, msg):
    calls = {
        "set": lambda c: c.set(b"k", b"v" * 100, ttl=ttl),
        "set_many": lambda c: c.set_many({b"k": b"v" * 100, b"big": b"B" * 5000}, ttl=ttl),
        "touch": lambda c: c.touch(b"held", ttl),
        "add": lambda c: c.add(b"k", b"v", ttl=ttl),
        "memoize": lambda c: c.memoize(ttl=ttl),
    }
    conf = cfg(tmp_path)
    with flashcache.Cache(conf, clock=clock) as c:
        c.set(b"held", b"h" * 100)
        for name, call in calls.items():
            with pytest.raises(exc, match=msg):
                call(c)
        # nothing bad got in: items go through flash and back, and close() is clean
        c.set(b"after", b"a" * 200, ttl=100)
        fill_until_flash(c)
        assert c.get(b"after") == b"a" * 200 and c.get(b"held") == b"h" * 100
    with flashcache.Cache(conf, clock=clock) as c:
        assert c.stats()["start"] == "warm"
        assert c.get(b"after") == b"a" * 200
        assert c.touch(b"after", 50) is True


def test_the_longest_ttl_the_engines_store_is_accepted_and_one_more_second_is_not(tmp_path, clock):
    longest = MAX_EXPIRY - clock.t
    conf = cfg(tmp_path)
    with flashcache.Cache(conf, clock=clock) as c:
        c.set(b"small", b"s" * 100, ttl=longest)              # BigHash
        c.set(b"large", b"L" * 5000, ttl=longest)             # BlockCache
        with pytest.raises(ValueError, match=f"at most {int(longest)} seconds from now"):
            c.set(b"over", b"o", ttl=longest + 1)
        fill_until_flash(c)
        assert on_flash_only(c, b"small") and on_flash_only(c, b"large")
        assert c.get(b"small") == b"s" * 100 and c.get(b"large") == b"L" * 5000
    with flashcache.Cache(conf, clock=clock) as c:
        assert c.stats()["start"] == "warm" and c.get(b"large") == b"L" * 5000


def test_a_default_ttl_the_engines_cannot_store_fails_at_open(tmp_path):
    with pytest.raises(flashcache.ConfigError, match=r"cache.default_ttl = 1e\+10: at most \d+ seconds from now"):
        flashcache.Cache(cfg(tmp_path, cache_extra="default_ttl = 1e10"))


# --------------------------------------------------------------------------- close() goes on


def test_close_writes_what_it_can_then_raises_the_first_error(tmp_path, clock):
    conf = cfg(tmp_path)
    c = flashcache.Cache(conf, clock=clock)
    flash_items = {b"bh%d" % i: b"s" * 200 for i in range(20)} | {b"bc%d" % i: b"L" * 6000 for i in range(8)}
    c.set_many(flash_items)
    fill_until_flash(c)
    assert all(on_flash_only(c, k) for k in flash_items)
    dram_items = {b"d-small": b"x" * 100, b"bad": b"y" * 100, b"d-large": b"z" * 6000}
    c.set_many(dram_items)
    real = c.navy.insert_now

    def insert_now(device, key, value, expiry=0):
        if key == b"bad":
            raise OSError(5, "injected write error")
        return real(device, key, value, expiry)
    c.navy.insert_now = insert_now
    with pytest.raises(OSError, match="injected write error") as err:
        c.close()
    c.close()                                           # closed all the same: idempotent, no error
    with flashcache.Cache(conf, clock=clock) as c:
        assert c.stats()["start"] == "warm"
        assert c.get_many(list(flash_items)) == flash_items
        assert c.get(b"d-small") == b"x" * 100 and c.get(b"d-large") == b"z" * 6000
        assert c.get(b"bad") is None
    notes = "\n".join(err.value.__notes__)
    assert "1 of " in notes and "DRAM items could not be written to flash and are lost (the first: key b'bad')" in notes
    assert "went on past the error: the other DRAM items were written; warm-restart metadata: saved" in notes
    assert "the device was closed" in notes


def test_close_saves_the_metadata_even_when_the_device_close_fails(tmp_path, clock):
    conf = cfg(tmp_path)
    c = flashcache.Cache(conf, clock=clock)
    c.set(b"k", b"v" * 100)
    real = c.device.close

    def close():
        real()
        raise OSError(5, "injected close error")
    c.device.close = close
    with pytest.raises(OSError, match="injected close error") as err:
        c.close()
    with flashcache.Cache(conf, clock=clock) as c:
        assert c.stats()["start"] == "warm" and c.get(b"k") == b"v" * 100
    assert "the device did not close cleanly" in "\n".join(err.value.__notes__)


# --------------------------------------------------------------------------- the dict forms


def test_set_many_checks_every_item_before_storing_any(cache):
    with pytest.raises(TypeError, match="a value must be bytes-like, not int"):
        cache.set_many({"a": b"1", "b": 2, "c": b"3"})
    with pytest.raises(ValueError, match="ttl = -1"):
        cache.set_many({"a": b"1"}, ttl=-1)
    assert cache.get_many(["a", "b", "c"]) == {} and cache.stats()["since_open"]["sets"] == 0
    cache.set_many({"a": b"1", "c": b"3"}, ttl=5)
    assert cache.get_many(["a", "c"]) == {"a": b"1", "c": b"3"} and cache.stats()["since_open"]["sets"] == 2


def test_dict_forms(cache):
    cache[b"k"] = b"v"
    cache["s"] = bytearray(b"w")
    assert cache[b"k"] == b"v" and cache["s"] == b"w"
    with pytest.raises(KeyError) as err:
        cache["absent"]
    assert err.value.args == ("absent",)
    del cache["k"]
    with pytest.raises(KeyError):
        del cache["k"]
    with pytest.raises(KeyError):
        cache["k"]
    with pytest.raises(TypeError, match="not iterable"):
        iter(cache)
    assert bool(cache) is True
    cache.clear()
    assert bool(cache) is True and len(cache) == 0           # true even when empty


def test_getitem_finds_flash_and_misses_expired(cache, clock):
    cache["t"] = b"x" * 300
    cache.set("short", b"y" * 300, ttl=5)
    fill_until_flash(cache)
    assert on_flash_only(cache, b"t")
    assert cache["t"] == b"x" * 300
    clock.t += 6
    with pytest.raises(KeyError):
        cache["short"]


def test_len_counts_dram_and_blockcache(cache):
    assert len(cache) == 0
    cache.set_many({b"d%d" % i: b"v" for i in range(5)})
    assert len(cache) == 5
    cache.set_many({b"big%d" % i: b"B" * 20_000 for i in range(30)})    # past DRAM: BlockCache
    assert len(cache.dram) < 35 and len(cache) >= 30


# --------------------------------------------------------------------------- add


def test_add_stores_only_when_absent_in_every_tier(cache, clock):
    assert cache.add("a", b"1") is True
    assert cache.add("a", b"2") is False and cache["a"] == b"1"
    cache.set("f", b"old" * 100)
    fill_until_flash(cache)
    assert on_flash_only(cache, b"f")
    assert cache.add("f", b"new") is False and cache["f"] == b"old" * 100
    cache.set("e", b"x", ttl=5)
    clock.t += 6
    assert cache.add("e", b"fresh", ttl=5) is True and cache["e"] == b"fresh"
    clock.t += 6
    assert cache.get("e") is None                           # add's own ttl
    with pytest.raises(TypeError, match="a value must be bytes-like"):
        cache.add("z", "text")
    assert cache.get("z") is None
    assert cache.stats()["since_open"]["sets"] == 1004                     # 1002 sets, two adds that stored


# --------------------------------------------------------------------------- incr / decr


def test_incr_and_decr_are_memcached_counters(cache):
    cache["n"] = b"41"
    assert cache.incr("n") == 42 and cache["n"] == b"42"
    assert cache.incr("n", 8) == 50
    assert cache.decr("n", 45) == 5
    assert cache.decr("n", 100) == 0 and cache["n"] == b"0"           # stops at 0
    cache["max"] = b"%d" % (2 ** 64 - 1)
    assert cache.incr("max") == 0 and cache["max"] == b"0"            # wraps at 2**64
    cache["z"] = b"007"
    assert cache.incr("z", 0) == 7 and cache["z"] == b"7"


def test_incr_of_a_missing_key_raises_unless_given_a_default(cache, tmp_path):
    with pytest.raises(KeyError):
        cache.incr("missing")
    assert cache.get("missing") is None                    # nothing was stored
    assert cache.incr("missing", 5, default=10) == 15 and cache["missing"] == b"15"
    assert cache.decr("gone", 5, default=3) == 0


def test_incr_keeps_the_items_expiry_and_a_default_gets_the_default_ttl(tmp_path, clock):
    with flashcache.Cache(cfg(tmp_path, cache_extra='default_ttl = "100s"'), clock=clock) as c:
        c.set("t", b"1", ttl=10)
        clock.t += 5
        assert c.incr("t") == 2
        clock.t += 6
        assert c.get("t") is None                           # 11 s after the set, not the incr
        assert c.incr("d", default=0) == 1
        clock.t += 99
        assert c.get("d") == b"1"
        clock.t += 2
        assert c.get("d") is None


def test_incr_of_a_counter_on_flash(cache):
    cache.set("c", b"10")
    fill_until_flash(cache)
    assert on_flash_only(cache, b"c")
    assert cache.incr("c", 5) == 15
    fill_until_flash(cache, prefix=b"again")
    assert cache["c"] == b"15"


@pytest.mark.parametrize("value", [b"abc", b" 1", b"1 ", b"+1", b"-1", b"1.5", b"", b"1" * 21, b"%d" % 2 ** 64,
                                   "١".encode()])
def test_incr_of_a_value_that_is_not_a_counter_is_a_valueerror_and_changes_nothing(cache, value):
    cache["v"] = value
    with pytest.raises(ValueError, match=r"incr/decr of 'v': its value .* is not an unsigned 64-bit integer; "
                                         r'store counters as ASCII digits, like b"0"'):
        cache.incr("v")
    assert cache["v"] == value


@pytest.mark.parametrize("call, exc, msg", [
    (lambda c: c.incr("n", -1), ValueError, r"incr: delta = -1: use an int from 0 to 2\*\*64 - 1; use decr"),
    (lambda c: c.decr("n", 2 ** 64), ValueError, r"decr: delta = 18446744073709551616: use an int from 0"),
    (lambda c: c.incr("n", 1.0), TypeError, "incr: delta must be an int, not float"),
    (lambda c: c.incr("n", True), TypeError, "incr: delta must be an int, not bool"),
    (lambda c: c.incr("n", default="0"), TypeError, "incr: default must be an int, not str"),
    (lambda c: c.incr("n", default=-1), ValueError, "incr: default = -1: use an int from 0"),
    (lambda c: c.incr(7), TypeError, "a key must be bytes or str, not int"),
])
def test_incr_arguments_are_checked(cache, call, exc, msg):
    cache["n"] = b"1"
    with pytest.raises(exc, match=msg):
        call(cache)
    assert cache["n"] == b"1"


@pytest.mark.parametrize("codec", ["msgpack", "pickle"])
def test_incr_with_a_codec_stores_an_int(tmp_path, codec):
    with flashcache.Cache(cfg(tmp_path), codec=codec) as c:
        c["n"] = 41
        assert c.incr("n") == 42 and c["n"] == 42
        assert c.incr("new", default=0) == 1 and c["new"] == 1
        for bad in ("42", 4.0, True, -1, [1]):
            c["b"] = bad
            with pytest.raises(ValueError, match="is not an unsigned 64-bit integer; store counters as ints"):
                c.incr("b")


# --------------------------------------------------------------------------- pop


def test_pop(cache):
    cache["p"] = b"v"
    assert cache.pop("p") == b"v" and cache.get("p") is None
    with pytest.raises(KeyError):
        cache.pop("p")
    assert cache.pop("p", None) is None and cache.pop("p", 7) == 7
    cache.set("f", b"F" * 300)
    fill_until_flash(cache)
    assert on_flash_only(cache, b"f")
    assert cache.pop("f") == b"F" * 300
    assert run(cache.navy.lookup(b"f"), cache.device) is None and cache.get("f") is None


# --------------------------------------------------------------------------- clear


def test_clear_empties_dram_and_both_engines_for_good(tmp_path, clock):
    conf = cfg(tmp_path)
    old = {b"s%d" % i: b"s" * 200 for i in range(40)} | {b"l%d" % i: b"L" * 9000 for i in range(20)}
    with flashcache.Cache(conf, clock=clock) as c:
        c.set_many(old)
        fill_until_flash(c)
        assert sum(on_flash_only(c, k) for k in old) > 50
        c.clear()
        assert len(c) == 0 and len(c.dram) == 0
        assert c.get_many(list(old) + [b"fill1"]) == {}
        assert all(run(c.navy.lookup(k), c.device) is None for k in old)
        c.set(b"after", b"new")
    with flashcache.Cache(conf, clock=clock) as c:           # a clean restart keeps the clear
        assert c.stats()["start"] == "warm"
        assert c.get_many(list(old)) == {} and c.get(b"after") == b"new"
        c.set_many(old)
        fill_until_flash(c)
        assert sum(on_flash_only(c, k) for k in old if k.startswith(b"s")) > 30
        c.clear()
        c.navy._closed = True                   # then a crash: no warm-restart metadata
    with flashcache.Cache(conf, clock=clock) as c:           # BigHash's buckets are kept, yet stay cleared
        assert c.stats()["start"].startswith("recovered after a crash: blockcache recovered from checkpoint")
        assert c.get_many(list(old)) == {}


def test_clear_drops_a_demotion_ticketed_before_it(cache):
    """An item evicted before clear() whose write to flash comes after it must not land."""
    cache.set(b"late", b"x" * 300)
    ticket = cache.core.ticket()
    evicted = [e for e in cache.dram.snapshot() if e.key == b"late"]
    cache.clear()
    cache.core.demote(evicted, ticket)
    assert cache.get(b"late") is None
    assert cache.stats()["flash"]["inserts"] == 0


# --------------------------------------------------------------------------- codecs


class Point:
    def __init__(self, x, y):
        self.x, self.y = x, y

    def __eq__(self, other):
        return isinstance(other, Point) and (self.x, self.y) == (other.x, other.y)


def test_pickle_codec_stores_python_objects_through_flash(tmp_path):
    value = {"set": {1, 2}, "point": Point(1, 2), "tuple": (1, "a"), "bytes": b"raw"}
    with flashcache.Cache(cfg(tmp_path), codec="pickle") as c:
        c.set("obj", value)
        fill_until_flash(c)
        assert on_flash_only(c, b"obj")
        assert c.get("obj") == value
        assert c.dram.get(b"obj") == pickle.dumps(value, pickle.HIGHEST_PROTOCOL)
        with pytest.raises(TypeError, match="not storable with the pickle codec"):
            c.set("bad", lambda: 1)


def test_an_unknown_codec_names_the_choices(tmp_path):
    with pytest.raises(ValueError, match=r"""codec = 'json': use None \(bytes values\), "msgpack", or "pickle" """
                                         r"\(trusted data only: loading a pickle runs code\)"):
        flashcache.Cache(cfg(tmp_path), codec="json")
