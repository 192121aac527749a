"""Memoization for ``Cache.memoize`` and ``AsyncCache.memoize``: how a call becomes a key.

Owns the default key of a call and the check of what a memoized function returns; the
decorators themselves live on the two caches (one awaits, one does not). The surprise:
the default key is exact about types (``f(1)`` and ``f(1.0)``, ``f((1, 2))`` and
``f([1, 2])`` are different calls), and arguments that are not plain data (objects,
``self``) cannot be keyed at all: pass ``key=`` for those.
"""
from __future__ import annotations

import hashlib
from typing import Any, Callable

import msgpack

KEY_PREFIX = b"memo:"


def _plain(obj: Any) -> msgpack.ExtType:
    # msgpack's ``default`` under strict_types: what it does not take as it is
    if type(obj) is tuple:
        return msgpack.ExtType(1, _pack(list(obj)))
    if type(obj) is int:                 # beyond 64 bits
        return msgpack.ExtType(2, str(obj).encode())
    raise TypeError(f"{type(obj).__qualname__!r} is not plain data (bytes, str, int, float, bool, None, "
                    "and lists, tuples and dicts of them)")


def _pack(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True, strict_types=True, default=_plain)


def call_key(name: str, args: tuple, kwargs: dict, typed: bool = False) -> bytes:
    """The default key of the call ``name(*args, **kwargs)``: ``b"memo:<name>:"`` and a
    128-bit BLAKE2b digest of the arguments, serialized with msgpack (keyword arguments
    sorted by name), so it is the same in every process and always short. ``typed``: the
    arguments' type names are part of it too (for types msgpack writes alike, like str
    and a str subclass). TypeError naming the function if an argument is not plain data."""
    payload: list[Any] = [list(args), sorted(kwargs.items())]
    if typed:
        payload.append([type(a).__qualname__ for a in args] + [type(kwargs[k]).__qualname__ for k in sorted(kwargs)])
    try:
        packed = _pack(payload)
    except (TypeError, ValueError, OverflowError) as e:
        raise TypeError(f"flashcache memoize: {name}: an argument cannot be part of the default key: {e}; "
                        "pass key=lambda *args, **kw: ... to make the key yourself") from None
    return KEY_PREFIX + name.encode() + b":" + hashlib.blake2b(packed, digest_size=16).hexdigest().encode()


def key_function(fn: Callable, key: Callable[..., Any] | None, typed: bool) -> Callable[..., Any]:
    """What the memoized ``fn`` keys a call by: ``key`` (called with the call's arguments,
    its result used as the cache key as it is), or ``call_key`` under fn's module and
    qualified name."""
    if key is not None:
        if not callable(key):
            raise TypeError(f"flashcache memoize: key = {key!r}: pass a function of the call's arguments "
                            "that returns the cache key (bytes or str), or None for the default")
        return key
    name = f"{fn.__module__}.{fn.__qualname__}"

    def cache_key(*args: Any, **kwargs: Any) -> bytes:
        return call_key(name, args, kwargs, typed)
    return cache_key


def check_result(codec: str | None, fn: Callable, value: Any) -> None:
    """A cache without a codec stores bytes only: say so, naming the function, rather than
    let the set fail deep inside."""
    if codec is None and not isinstance(value, (bytes, bytearray, memoryview)):
        raise TypeError(f"flashcache memoize: {fn.__qualname__} returned a {type(value).__name__}, and a cache "
                        'with codec=None stores bytes only: open it with codec="msgpack" (or "pickle") '
                        "to memoize other results")
