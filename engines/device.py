"""The Device protocol the engines need, and the sans-I/O request types they yield.

Owns the contract only: no I/O happens here except in ``run()``, the plain blocking
driver. Engine operations are generators that yield ``Read``/``Write``/``Trim`` requests
and receive each result (bytes for a Read, None otherwise), so one implementation serves
blocking calls, batched ``get_many`` and asyncio drivers, and tests can drive an engine
with no device at all.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Generator, Protocol, Sequence, TypeVar, runtime_checkable


@runtime_checkable
class Stream(Protocol):
    """A placement stream: opaque to engines, passed back on each write.

    ``pid`` is the NVMe placement identifier the device tags writes with, or None when
    placement is off; ``placement`` is "on" or "off: <reason>".
    """

    name: str
    pid: int | None
    placement: str


@runtime_checkable
class Device(Protocol):
    """What an engine needs from a device.

    Offsets and lengths are multiples of ``block_size``; a misaligned call raises
    ValueError (a programming error). ``max_io`` is the largest single transfer the
    device takes; larger calls are split by the device itself.

    Optional, for C callers (the engines' C cores, engines/_device.h): when ``read`` is a bound C method whose
    object has ``read_into_hook()``, that returns a capsule named
    ``"engines.device.read_into"`` holding ``struct { int (*fn)(void *ctx, char *buf,
    unsigned long long len, unsigned long long off); void *ctx; }``: fn reads into the
    caller's buffer and returns 1, counted as one of the device's reads, or returns 0
    having done nothing, and the caller calls ``read`` instead (which says what is wrong).
    """

    path: str
    size: int
    block_size: int
    max_io: int

    def read(self, offset: int, length: int) -> bytes: ...
    def write(self, offset: int, data: bytes | bytearray | memoryview, stream: Stream | None = None) -> None: ...
    def trim(self, offset: int, length: int) -> None: ...
    def read_many(self, reqs: Sequence[tuple[int, int]]) -> list[bytes]: ...
    def write_many(self, reqs: Sequence[tuple[int, Any, Stream | None]]) -> None: ...
    def open_stream(self, name: str) -> Stream: ...
    def flush(self) -> None: ...
    def close(self) -> None: ...


def as_bytes(owner: str, what: str, x: object):
    """``x`` as a bytes-like object whose len() counts bytes (a memoryview is cast to
    unsigned bytes); TypeError naming ``owner`` and ``what`` for anything else."""
    if isinstance(x, (bytes, bytearray)):
        return x
    if isinstance(x, memoryview):
        return x if x.format == "B" and x.ndim == 1 else x.cast("B")
    raise TypeError(f"{owner}: {what} must be bytes, bytearray or memoryview, got {type(x).__name__}")


MAX_EXPIRY = 0xFFFFFFFF
"""The latest absolute expiry the engines store (u32 whole seconds: 2106-02-07 06:28:15 UTC
on the wall clock)."""


def expiry_seconds(owner: str, expiry: float) -> int:
    """An absolute expiry as the engines store it: whole seconds (rounded up), 0 = never;
    ValueError naming ``owner`` outside 0 .. MAX_EXPIRY."""
    if not expiry:
        return 0
    if not 0 <= expiry <= MAX_EXPIRY:
        raise ValueError(f"{owner}: expiry = {expiry!r}: use 0 (never) or an absolute time in seconds below 2**32")
    return math.ceil(expiry)


@dataclass(slots=True)  # not frozen: a frozen __init__ costs 0.2 us more per request; treat as immutable
class Read:
    offset: int
    length: int


@dataclass(slots=True)  # not frozen: a frozen __init__ costs 0.2 us more per request; treat as immutable
class Write:
    offset: int
    data: bytes | bytearray | memoryview
    stream: Any = None


@dataclass(slots=True)  # not frozen: a frozen __init__ costs 0.2 us more per request; treat as immutable
class Trim:
    offset: int
    length: int


Request = Read | Write | Trim
T = TypeVar("T")
Op = Generator[Request, Any, T]


def run(op: Op[T], device: Device) -> T:
    """Drive one sans-I/O operation to completion with blocking device calls."""
    try:
        req = next(op)
        while True:
            if isinstance(req, Read):
                res: Any = device.read(req.offset, req.length)
            elif isinstance(req, Write):
                device.write(req.offset, req.data, req.stream)
                res = None
            elif isinstance(req, Trim):
                device.trim(req.offset, req.length)
                res = None
            else:  # pragma: no cover - a bug in an engine
                raise TypeError(f"engine yielded {req!r}, expected Read, Write or Trim")
            req = op.send(res)
    except StopIteration as stop:
        return stop.value


def run_many(ops: Sequence[Op[Any]], device: Device) -> list[Any]:
    """Drive many operations together: each round gathers every pending Read into one
    ``read_many`` call (one submission on a ring device), then resumes each op."""
    results: list[Any] = [None] * len(ops)
    pending: list[tuple[int, Op[Any], Request]] = []
    for i, op in enumerate(ops):
        try:
            pending.append((i, op, next(op)))
        except StopIteration as stop:
            results[i] = stop.value
    while pending:
        reads = [(i, op, r) for i, op, r in pending if isinstance(r, Read)]
        got = device.read_many([(r.offset, r.length) for _, _, r in reads]) if reads else []
        answers = {i: data for (i, _, _), data in zip(reads, got)}
        nxt: list[tuple[int, Op[Any], Request]] = []
        for i, op, r in pending:
            if isinstance(r, Write):
                device.write(r.offset, r.data, r.stream)
                ans: Any = None
            elif isinstance(r, Trim):
                device.trim(r.offset, r.length)
                ans = None
            else:
                ans = answers[i]
            try:
                nxt.append((i, op, op.send(ans)))
            except StopIteration as stop:
                results[i] = stop.value
        pending = nxt
    return results


# The first bytes of any device that holds a flashcache (the router's superblock starts
# with them). Devices use it to tell "our own old cache" from foreign data they must not
# overwrite without `format = true`.
SUPERBLOCK_MAGIC = b"FLCACHE\x01"
