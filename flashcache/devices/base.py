"""What every flashcache device shares: bounds and alignment checks, counters, streams,
the placement and WAF answers of a device without FDP, and use-after-close protection.

Subclasses implement ``_read``/``_write``/``_trim`` (and may override the batched forms);
they never re-check arguments. A device that a forked child inherited refuses every call
there (ForkedError; flashcache.forksafe) and its close() does nothing. The surprise: a
device without FDP still hands out streams, but each says ``placement = "off: <reason>"``
and ``pid = None``, so nobody can mistake it for placement.
"""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import Any, Sequence

from .. import forksafe
from ..errors import ClosedError, FlashCacheError, ForkedError
from .heap import keep_freed

log = logging.getLogger("flashcache.devices")

BATCH_HEAP_BYTES = 4 << 20   # what one batch of results may total, for heap.keep_freed


class WafUnavailableError(FlashCacheError):
    """The device cannot report media writes; ``reason`` says why."""

    def __init__(self, path: str, reason: str):
        self.path = path
        self.reason = reason
        super().__init__(f"{path}: device WAF unavailable: {reason}")


@dataclass(frozen=True, slots=True)
class WafSnapshot:
    """FDP Statistics (LID 0x22) counters, in bytes: host and media bytes with metadata
    written, media bytes erased. WAF over a window is d(mbmw) / d(hbmw)."""

    hbmw: int
    mbmw: int
    mbe: int

    def waf_since(self, earlier: "WafSnapshot") -> float | None:
        dh = self.hbmw - earlier.hbmw
        return (self.mbmw - earlier.mbmw) / dh if dh > 0 else None


@dataclass(slots=True)
class PlacementStream:
    """A placement stream handed out by ``Device.open_stream``.

    ``pid`` is the placement identifier writes are tagged with (None when off),
    ``handle`` the index into the device's RUH Status list, ``placement`` is "on" or
    "off: <reason>".
    """

    name: str
    pid: int | None = None
    handle: int | None = None
    placement: str = "off: device has no FDP"


@dataclass(slots=True)
class DeviceCounters:
    reads: int = 0
    bytes_read: int = 0
    writes: int = 0
    bytes_written: int = 0
    trims: int = 0
    bytes_trimmed: int = 0
    errors: int = 0
    per_stream_bytes_written: dict = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "reads": self.reads, "bytes_read": self.bytes_read,
            "writes": self.writes, "bytes_written": self.bytes_written,
            "trims": self.trims, "bytes_trimmed": self.bytes_trimmed,
            "errors": self.errors,
            "bytes_written_by_stream": dict(self.per_stream_bytes_written),
        }


class BaseDevice:
    """Shared checks and bookkeeping; see the module docstring."""

    kind = "base"
    _forked = False           # set in a forked child (see _inherited)

    def __init__(self, path: str, size: int, block_size: int, max_io: int, capacity: int | None = None):
        self.path = path
        self.size = size
        # the extent the device could give (a namespace, an emulated SSD); the cache uses
        # ``size`` of it, less when device.utilization leaves the rest to the drive as spare
        self.capacity = size if capacity is None else capacity
        self.block_size = block_size
        self._bs_mask = block_size - 1
        self.max_io = max_io
        self.counters = DeviceCounters()
        self._count_lock = threading.Lock()
        self._closed = False
        self._streams: dict[str, PlacementStream] = {}
        keep_freed(BATCH_HEAP_BYTES)     # batched results reuse freed heap (see heap.py)
        self._pid = forksafe.track(self)

    def _inherited(self) -> None:
        """In a forked child: every later call is refused (the fast paths all test
        ``_closed`` first, and the refusal says it was a fork), close() does nothing, and
        the descriptors let go of the parent's open file without unlocking it (only if
        still open: a closed device's descriptor numbers may name other files by now)."""
        was_open = not self._closed
        self._forked = True
        self._closed = True
        if was_open:
            self._let_go()

    def _let_go(self) -> None:
        """A forked child's part of _inherited: the descriptors this kind holds (owner.let_go)."""

    # -- checks ---------------------------------------------------------------------
    def _refuse(self, what: str):
        """The error for a call on a closed device, or on one a forked child inherited."""
        if self._forked:
            return ForkedError(self.path, what, "device", self._pid)
        return ClosedError(self.path, f"{what} after close()")

    def _check(self, what: str, offset: int, length: int) -> None:
        if self._closed:
            raise self._refuse(what)
        bs = self.block_size
        if offset < 0 or length < 0 or offset % bs or length % bs:
            raise ValueError(
                f"{self.path}: {what} at offset {offset} length {length} is not aligned to "
                f"the device block size {bs}; engines must issue block-aligned I/O")
        if offset + length > self.size:
            raise ValueError(
                f"{self.path}: {what} at offset {offset} length {length} ends past the "
                f"device size {self.size}")

    def _check_open(self, what: str) -> None:
        if self._closed:
            raise self._refuse(what)

    def _count(self, kind: str, nbytes: int, stream: PlacementStream | None = None) -> None:
        with self._count_lock:
            c = self.counters
            if kind == "r":
                c.reads += 1
                c.bytes_read += nbytes
            elif kind == "w":
                c.writes += 1
                c.bytes_written += nbytes
                name = stream.name if stream is not None else "default"
                c.per_stream_bytes_written[name] = c.per_stream_bytes_written.get(name, 0) + nbytes
            else:
                c.trims += 1
                c.bytes_trimmed += nbytes

    def _check_stream(self, stream) -> None:
        """A write's stream must be None or one this device's open_stream() gave: anything
        else is refused before any I/O (TypeError, or ValueError for another device's)."""
        if stream is None:
            return
        if type(stream) is not PlacementStream:
            raise TypeError(f"{self.path}: a write's stream must be None or a PlacementStream from this "
                            f"device's open_stream(name), not {type(stream).__name__} {stream!r}")
        if self._streams.get(stream.name) is not stream:
            raise ValueError(f"{self.path}: stream {stream.name!r} was not opened on this device (another "
                             f"device's?); open it here with open_stream({stream.name!r})")

    def _check_streams(self, streams) -> None:
        """_check_stream for a batch's streams: one check when all are the same (the usual)."""
        first = streams[0] if streams else None
        if any(s is not first for s in streams):
            for s in streams:
                self._check_stream(s)
        else:
            self._check_stream(first)

    def _check_many(self, what: str, offs, lens) -> None:
        """_check for a batch: one pass, and the per-item method call only for a bad item."""
        if self._closed:
            raise self._refuse(what)
        mask, size = self._bs_mask, self.size
        for off, ln in zip(offs, lens):
            if off < 0 or ln < 0 or (off | ln) & mask or off + ln > size:
                self._check(what, off, ln)

    def _count_writes(self, lens, streams) -> None:
        total = sum(lens)
        first = streams[0] if streams else None
        same = all(s is first for s in streams)         # the usual batch: one stream
        with self._count_lock:
            c = self.counters
            c.writes += len(lens)
            c.bytes_written += total
            per = c.per_stream_bytes_written
            if same:
                if lens:
                    name = first.name if first is not None else "default"
                    per[name] = per.get(name, 0) + total
                return
            for ln, s in zip(lens, streams):
                name = s.name if s is not None else "default"
                per[name] = per.get(name, 0) + ln

    def _count_many(self, kind: str, lengths) -> None:
        with self._count_lock:
            c = self.counters
            if kind == "r":
                c.reads += len(lengths)
                c.bytes_read += sum(lengths)

    # -- the Device protocol -----------------------------------------------------------
    def read(self, offset: int, length: int) -> bytes:
        if (self._closed or offset < 0 or length < 0 or (offset | length) & self._bs_mask
                or offset + length > self.size):
            self._check("read", offset, length)      # raises, naming what is wrong
        data = self._read(offset, length)
        with self._count_lock:
            c = self.counters
            c.reads += 1
            c.bytes_read += length
        return data

    def write(self, offset: int, data: bytes | bytearray | memoryview, stream: PlacementStream | None = None) -> None:
        n = len(data) if not isinstance(data, memoryview) else data.nbytes
        if (self._closed or offset < 0 or (offset | n) & self._bs_mask or offset + n > self.size):
            self._check("write", offset, n)
        self._check_stream(stream)
        self._write(offset, data, stream)
        self._count("w", n, stream)

    def trim(self, offset: int, length: int) -> None:
        self._check("trim", offset, length)
        if length:
            self._trim(offset, length)
        self._count("t", length)

    def deallocate_unused(self) -> int:
        """Deallocate (TRIM) the bytes between ``size`` and ``capacity``, which the cache
        never writes; returns how many. The cache calls it once when it formats the device:
        on a drive they may hold an earlier user's data, which its FTL would otherwise keep
        copying as live; deallocated, they are spare, as on a fresh drive."""
        n = self.capacity - self.size
        if n <= 0:
            return 0
        self._check_open("deallocate_unused")
        self._trim(self.size, n)
        self._count("t", n)
        return n

    def read_many(self, reqs: Sequence[tuple[int, int]]) -> list[bytes]:
        return [self.read(off, ln) for off, ln in reqs]

    def write_many(self, reqs: Sequence[tuple[int, Any, PlacementStream | None]]) -> None:
        self._check_streams([s for _, _, s in reqs])        # all of them before any I/O
        for off, data, stream in reqs:
            self.write(off, data, stream)

    def open_stream(self, name: str) -> PlacementStream:
        """A stream for one writer (an engine). Without FDP it says why placement is off."""
        self._check_open("open_stream")
        if name not in self._streams:
            s = PlacementStream(name=name, placement=f"off: {self.placement_off_reason()}")
            log.warning("%s: placement for stream %r is off: %s", self.path, name,
                        self.placement_off_reason())
            self._streams[name] = s
        return self._streams[name]

    @property
    def streams(self) -> dict[str, PlacementStream]:
        return dict(self._streams)

    def placement_off_reason(self) -> str:
        return f"{self.kind} device has no FDP placement"

    def waf_unavailable_reason(self) -> str | None:
        """None when ``waf_snapshot()`` works, else why it cannot."""
        return f"{self.kind} device cannot report media writes (no FDP statistics log)"

    def waf_snapshot(self) -> WafSnapshot:
        raise WafUnavailableError(self.path, self.waf_unavailable_reason() or "unknown")

    def async_reader(self, depth: int = 128):
        """A RingReader (flashcache.devices.async_io) for reads an event loop completes, or
        None when this device has none (``async_unavailable_reason`` says why)."""
        return None

    def inline_read_reason(self) -> str | None:
        """Why a blocking read of this device costs less than an asynchronous one (its reads
        are copies from memory), or None: the device does real I/O, so event loops read it
        asynchronously. AsyncCache's ``async_reads = "auto"`` asks this."""
        return None

    def async_unavailable_reason(self) -> str | None:
        return f"{self.kind} device ({getattr(self, 'engine', 'psync')}) has no io_uring ring for asynchronous reads"

    def _ring_reader(self, fd: int, depth: int, direct: bool = False):
        from .async_io import RingReader
        self._check_open("async_reader")
        return RingReader(fd, path=self.path, depth=depth, direct=direct,
                          check=lambda offs, lens: self._check_many("read", offs, lens),
                          count=lambda lens: self._count_many("r", lens))

    def flush(self) -> None:
        self._check_open("flush")

    def close(self) -> None:
        self._closed = True

    @property
    def closed(self) -> bool:
        return self._closed

    def stats(self) -> dict[str, Any]:
        return {
            "kind": self.kind, "path": self.path, "size_bytes": self.size, "capacity_bytes": self.capacity,
            "block_size": self.block_size, "max_io": self.max_io,
            **self.io_counts(),
            "placement": {name: s.placement for name, s in self._streams.items()},
            "waf": "available" if self.waf_unavailable_reason() is None
                   else f"unavailable: {self.waf_unavailable_reason()}",
        }

    def io_counts(self) -> dict[str, Any]:
        """The I/O counters as ``stats()`` reports them (reads, writes, trims, bytes, bytes
        written per stream name), with what a C fast path (``_c_reads``: results.c's
        Reader, which counts the reads and writes it does itself) has counted added in."""
        d = self.counters.as_dict()
        r = getattr(self, "_c_reads", None)
        if r is not None:
            d["reads"] += r.reads
            d["bytes_read"] += r.bytes_read
            if r.stream_bytes is not None:
                d["writes"] += r.writes
                d["bytes_written"] += r.bytes_written
                per = d["bytes_written_by_stream"]
                for name, n in r.stream_bytes.items():
                    per[name] = per.get(name, 0) + n
        return d

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- for subclasses ---------------------------------------------------------------
    def _read(self, offset: int, length: int) -> bytes:  # pragma: no cover - abstract
        raise NotImplementedError

    def _write(self, offset: int, data, stream) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _trim(self, offset: int, length: int) -> None:  # pragma: no cover - abstract
        raise NotImplementedError
