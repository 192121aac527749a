"""The Engine interface: what the router (``engines.navy``) needs from a flash engine.

Owns the contract only. An engine lives in its own folder (``bighash/``, ``blockcache/``),
owns one extent of the device and one placement stream, and offers: item operations as
sans-I/O generators (``engines.device``), ``may_hold`` decided in DRAM, its life cycle
(reset, persist, recover, a cold start, flush, stats), its record in the superblock (its
``name``, ``generation`` and ``layout``) and how it is built on its extent
(``extent_unit``, ``build``). The blocking ``*_now`` forms default to driving the
generators; an engine may do them in C and offer them to the router's C as ``c_ops()``
(engines/_engine.h). The surprise: an engine takes its own locks inside its operations
(BigHash a stripe per bucket, BlockCache one lock), so the router holds none and any
driver (blocking, batched, asyncio) gets the same guarantees.

Adding an engine: a folder ``engines/<name>/`` with a subclass of ``Engine`` (its on-flash
format declared with ``engines.formats``, checked against its C if it has any), and one
``Slot`` line in ``engines.navy.default_engines``. The router, its C, the superblock and
the stats take it from there (tests/engines/tiny_engine.py is such an engine).
"""
from __future__ import annotations

import abc
import contextlib
import operator
from typing import Any, Callable, ClassVar, Mapping

from .device import Device, Op, run


class Engine(abc.ABC):
    """One flash engine on one extent (see the module docstring).

    Attributes every engine has: ``name`` (class-level: names its stream, its superblock
    record and its stats), ``stream`` (the placement stream each of its Writes carries),
    ``generation`` (stamped on what it writes; anything else reads as empty; the router
    keeps it in the superblock) and ``max_item_size`` (the largest key + value it takes).
    """

    name: ClassVar[str]
    stream: Any
    generation: int
    max_item_size: int

    # -- building ------------------------------------------------------------------------
    @classmethod
    @abc.abstractmethod
    def extent_unit(cls, options: Mapping[str, Any]) -> int:
        """What the offset and size of its extent must be multiples of, with ``options``."""

    @classmethod
    @abc.abstractmethod
    def build(cls, offset: int, size: int, *, stream: Any, clock: Callable[[], float], block_size: int,
              options: Mapping[str, Any]) -> "Engine":
        """The engine over ``[offset, offset + size)`` of a device of ``block_size``
        blocks; ``options`` are its own settings (ValueError names a bad one)."""

    @abc.abstractmethod
    def layout(self) -> dict[str, Any]:
        """The settings that decide where its bytes sit and how they read (plain values):
        recorded in the superblock, where any change resets the cache."""

    # -- item operations (sans-I/O) ----------------------------------------------------------
    @abc.abstractmethod
    def lookup_item(self, key: bytes) -> Op[tuple[bytes, float] | None]:
        """``(value, expiry)`` for ``key`` (expiry 0 = never), or None. Counts its own
        lookups, including those its DRAM state answers without I/O."""

    @abc.abstractmethod
    def insert(self, key: bytes, value: bytes, expiry: float = 0) -> Op[Any]:
        """Store ``value`` under ``key`` (a truthy result); ValueError if it never fits."""

    @abc.abstractmethod
    def remove(self, key: bytes) -> Op[bool]:
        """Drop ``key``; True if it held it."""

    @abc.abstractmethod
    def may_hold(self, key: bytes) -> bool:
        """False only if the engine surely does not hold ``key``, decided in DRAM."""

    # -- blocking forms: the generators driven at once, unless the engine does better ------
    def lookup_item_now(self, device: Device, key: bytes) -> tuple[bytes, float] | None:
        return run(self.lookup_item(key), device)

    def insert_now(self, device: Device, key: bytes, value: bytes, expiry: float = 0) -> Any:
        return run(self.insert(key, value, expiry), device)

    def c_ops(self) -> Any:
        """None, or a capsule "engines.engine.ops" with C forms of ``may_hold``,
        ``lookup_item_now`` and ``insert_now`` for the router's C (engines/_engine.h)."""
        return None

    # -- life cycle --------------------------------------------------------------------------
    def flush(self) -> Op[Any]:
        """Write what is acknowledged but still only in DRAM (default: nothing is)."""
        yield from ()

    @abc.abstractmethod
    def reset(self) -> None:
        """Empty the engine without I/O (a new generation: nothing old reads back)."""

    def held(self) -> contextlib.AbstractContextManager[Any]:
        """A context that holds every lock the engine's operations take, so that none runs
        inside it (the router's ``clear`` holds all engines' at once around their resets).
        An engine with locks overrides this; the default holds nothing."""
        return contextlib.nullcontext()

    @abc.abstractmethod
    def persist(self) -> dict[str, Any]:
        """The DRAM state as msgpack-friendly plain types, for ``recover``."""

    @abc.abstractmethod
    def recover(self, state: dict[str, Any] | None) -> bool:
        """Restore what ``persist`` saved; False (nothing changed) if it does not fit."""

    def replay(self, state: dict[str, Any]) -> Op[dict[str, Any] | None]:
        """Crash recovery from a checkpoint of ``persist``'s state (saved while running, not
        at a clean close): what it read, or None (nothing changed) if the engine cannot
        (the default: it then starts cold)."""
        yield from ()
        return None

    def start_cold(self) -> str:
        """Come up without saved state; say what that keeps (default: nothing, the engine
        resets, as one whose index lived in DRAM must)."""
        self.reset()
        return f"{self.name} starts empty"

    def after_open(self) -> Op[None]:
        """I/O the engine wants once the cache is open, warm or cold (default: none)."""
        yield from ()

    @abc.abstractmethod
    def stats(self) -> dict[str, Any]:
        """Its counters and state; ``bytes_written``, ``items`` and ``items_exact`` at least,
        and ``inserted_bytes`` (key + value bytes it took) for the router's "auto" split."""


def core_field(path: str, doc: str) -> property:
    """A property for state a C core owns: read and written at ``path`` (like
    ``"_core.generation"``), so Python and C share one copy."""
    holder, name = path.rsplit(".", 1)

    def set_(self: Any, value: Any) -> None:
        setattr(getattr(self, holder), name, value)

    return property(operator.attrgetter(path), set_, doc=doc)


def merged_counters(python: Mapping[str, int], c: Mapping[str, int]) -> dict[str, int]:
    """A Python form's counters plus its C twin's (each counts the steps it ran)."""
    out = dict(python)
    for k, v in c.items():
        out[k] += v
    return out
