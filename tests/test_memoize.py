"""flashcache.memoize (the default key of a call) and the memoize decorators of Cache and
AsyncCache."""
from __future__ import annotations

import asyncio

import pytest

import flashcache
from flashcache.async_cache import AsyncCache
from flashcache.memoize import call_key
from tests.clock import FakeClock
from tests.test_cache import cfg, fill_until_flash


def test_the_default_key_is_the_same_in_every_process():
    # a golden value: keys are on flash and shared by processes, so their format is fixed
    key = call_key("m.f", (1, "a", b"b", (2, 3), [4], {"k": None}, 2 ** 70, 1.5, True), {"z": 1, "a": 2})
    assert key == b"memo:m.f:24fdc6b09912c5e2c9ee6057a6d7cafe"


def test_the_default_key_tells_calls_apart_exactly():
    calls = [((1,), {}), ((1.0,), {}), ((True,), {}), (("1",), {}), ((b"1",), {}), (((1, 2),), {}),
             (([1, 2],), {}), ((), {"x": 1}), ((), {"y": 1}), ((1, 2), {}), ((2, 1), {}), ((None,), {})]
    keys = {call_key("f", a, kw) for a, kw in calls}
    assert len(keys) == len(calls)
    assert call_key("f", (), {"a": 1, "b": 2}) == call_key("f", (), {"b": 2, "a": 1})    # keyword order
    assert call_key("f", (1,), {}) != call_key("g", (1,), {})
    assert call_key("f", ("x",), {}, typed=True) != call_key("f", ("x",), {})


def test_an_argument_that_is_not_plain_data_asks_for_a_key_function():
    with pytest.raises(TypeError, match=r"memoize: m\.f: an argument cannot be part of the default key: 'object' "
                                        r"is not plain data .* pass key=lambda"):
        call_key("m.f", (object(),), {})


@pytest.fixture
def clock():
    return FakeClock()


def test_memoize_runs_once_per_call_and_respects_the_ttl(tmp_path, clock):
    with flashcache.Cache(cfg(tmp_path), clock=clock, codec="msgpack") as c:
        runs = []

        @c.memoize(ttl=10)
        def square(x, *, label=""):
            runs.append(x)
            return {"x": x * x, "label": label}

        assert square(3) == {"x": 9, "label": ""} and square(3) == {"x": 9, "label": ""}
        assert square(3, label="b") == {"x": 9, "label": "b"} and runs == [3, 3]
        assert square.__name__ == "square" and square.__wrapped__ is not None
        fill_until_flash(c)                                 # from flash too
        assert square(3) == {"x": 9, "label": ""} and runs == [3, 3]
        clock.t += 11
        assert square(3) == {"x": 9, "label": ""} and runs == [3, 3, 3]
        assert c.delete(square.cache_key(3)) is True        # invalidate one call
        square(3)
        assert runs == [3, 3, 3, 3]


def test_memoize_caches_none_and_uses_a_key_function(tmp_path):
    with flashcache.Cache(cfg(tmp_path), codec="pickle") as c:
        runs = []

        @c.memoize(key=lambda user, **_: f"user:{user.id}")
        def load(user, verbose=False):
            runs.append(user.id)
            return None

        class User:
            id = 7
        assert load(User()) is None and load(User(), verbose=True) is None and runs == [7]
        assert load.cache_key(User()) == "user:7" and c.get("user:7", "absent") is None


def test_memoize_without_a_codec_needs_bytes(tmp_path):
    with flashcache.Cache(cfg(tmp_path)) as c:
        @c.memoize()
        def raw(n):
            return b"x" * n

        @c.memoize()
        def text(n):
            return "x" * n
        assert raw(3) == b"xxx" and raw(3) == b"xxx"
        with pytest.raises(TypeError, match=r'text returned a str, and a cache with codec=None stores bytes only: '
                                            r'open it with codec="msgpack"'):
            text(3)


@pytest.mark.parametrize("kw, exc, msg", [
    ({"ttl": float("inf")}, ValueError, "ttl = inf"),
    ({"ttl": -5}, ValueError, "ttl = -5"),
    ({"key": "user"}, TypeError, "key = 'user': pass a function"),
    ({"typed": "yes"}, TypeError, "typed = 'yes': use True or False"),
])
def test_memoize_checks_its_arguments_when_decorating(tmp_path, kw, exc, msg):
    with flashcache.Cache(cfg(tmp_path)) as c:
        with pytest.raises(exc, match=msg):
            c.memoize(**kw)(lambda: b"")


def test_async_memoize(tmp_path):
    async def main():
        async with AsyncCache(cfg(tmp_path), codec="msgpack") as c:
            runs = []

            @c.memoize(ttl=60)
            async def fetch(n):
                runs.append(n)
                await asyncio.sleep(0)
                return [n]
            assert await fetch(1) == [1] and await fetch(1) == [1] and runs == [1]
            assert await c.delete(fetch.cache_key(1))
            assert await fetch(1) == [1] and runs == [1, 1]
            with pytest.raises(TypeError, match="is not an async def function; use Cache.memoize"):
                c.memoize()(lambda: 1)
            with pytest.raises(ValueError, match="ttl = nan"):
                c.memoize(ttl=float("nan"))
    asyncio.run(main())
