"""Reads that complete later: a dedicated io_uring ring whose eventfd an event loop watches.

Owns one ring per reader (separate from the device's own, so synchronous I/O on the
device never reaps these completions), the buffers of reads in flight, and the mapping
from completions back to requests. It does no waiting: ``submit`` returns at once, the
kernel signals ``eventfd`` when completions arrive, ``reap`` collects them. A reader a
forked child inherited refuses submit and reap (reading the shared eventfd would take the
parent's wake-up) and its close() does nothing. The surprise: a short read is not an error
at the end of a sparse file; the missing tail reads as zeros, as the device's own read would.
"""
from __future__ import annotations

import errno
import mmap
import os
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from .. import forksafe
from ..errors import DeviceError, ForkedError
from ..uring import Ring, address_of


@dataclass
class _Inflight:
    token: int
    buf: Any
    length: int
    offset: int


class RingReader:
    """Asynchronous reads of ``fd`` at ``base + offset`` through their own ring.

    ``check(offsets, lengths)`` validates a batch (the device's bounds and alignment
    checks); ``count(lengths)`` adds to the device's read counters. With ``direct`` the
    buffers are page-aligned (anonymous mmaps), as O_DIRECT needs.
    """

    def __init__(self, fd: int, *, path: str, depth: int = 128, direct: bool = False, base: int = 0,
                 check: Callable[[Sequence[int], Sequence[int]], None] | None = None,
                 count: Callable[[Sequence[int]], None] | None = None, ring: Ring | None = None):
        self.ring = ring if ring is not None else Ring(depth)
        try:
            self.eventfd = self.ring.register_eventfd()
        except BaseException:
            self.ring.close()
            raise
        self.fd = fd
        self.path = path
        self.direct = direct
        self.base = base
        self.depth = self.ring.entries
        self._check = check
        self._count = count
        self._inflight: dict[int, _Inflight] = {}
        self._next = 1
        self._forked = False
        self._pid = forksafe.track(self)

    def _inherited(self) -> None:
        self._forked = True

    def _refuse_forked(self, what: str) -> None:
        if self._forked:
            raise ForkedError(self.path, what, "asynchronous reader", self._pid)

    @property
    def free(self) -> int:
        """Reads that can be submitted now."""
        return self.depth - len(self._inflight)

    def submit(self, reqs: Sequence[tuple[int, int]]) -> list[int]:
        """Start reads of (offset, length); returns one token per request. At most ``free``."""
        self._refuse_forked("asynchronous read")
        if len(reqs) > self.free:
            raise ValueError(f"{len(reqs)} reads submitted with room for {self.free}")
        if self._check is not None:
            self._check([o for o, _ in reqs], [n for _, n in reqs])
        tokens = []
        for off, n in reqs:
            buf = mmap.mmap(-1, max(n, 1)) if self.direct else bytearray(n)
            tok = self._next
            self._next += 1
            self._prep(address_of(buf), n, off, tok)
            self._inflight[tok] = _Inflight(tok, buf, n, off)
            tokens.append(tok)
        if tokens:
            self.ring.submit(0)
        return tokens

    def _prep(self, addr: int, n: int, off: int, tok: int) -> None:
        self.ring.prep_read(self.fd, addr, n, self.base + off, user_data=tok)

    def _result(self, inf: _Inflight, res: int) -> bytes | BaseException:
        """A completion's data, or the error it carries."""
        if res < 0:
            return DeviceError(self.path, f"read of {inf.length} bytes at offset {inf.offset} failed", -res)
        data = bytes(inf.buf[:res])
        return data + bytes(inf.length - res) if res < inf.length else data

    def reap(self) -> list[tuple[int, bytes | BaseException]]:
        """Completions ready now: (token, data) or (token, the error)."""
        self._refuse_forked("reaping asynchronous reads")
        try:
            os.read(self.eventfd, 8)
        except BlockingIOError:
            pass
        out: list[tuple[int, bytes | BaseException]] = []
        done = []
        for c in self.ring.reap():
            inf = self._inflight.pop(c.user_data, None)
            if inf is None:
                continue
            got = self._result(inf, c.res)
            out.append((inf.token, got))
            if not isinstance(got, BaseException):
                done.append(inf.length)
            if self.direct:
                inf.buf.close()
        if done and self._count is not None:
            self._count(done)
        return out

    @property
    def inflight(self) -> int:
        return len(self._inflight)

    def close(self) -> None:
        """Wait for reads in flight (their buffers must outlive them), then close the ring.
        In a forked child: nothing (the reads in flight and the ring are the parent's)."""
        if self._forked:
            return
        if self._inflight and not self.ring._closed:
            try:
                while self._inflight:
                    self.ring.wait(1)
                    for c in self.ring.reap():
                        self._inflight.pop(c.user_data, None)
            except DeviceError as e:
                if e.errno != errno.EINTR:
                    raise
        self.ring.close()


class NvmeRingReader(RingReader):
    """Asynchronous NVMe Reads through io_uring passthrough (URING_CMD on /dev/ngXnY, a
    SQE128/CQE32 ring of its own). Each request is one Read command of at most the
    device's transfer size (callers split larger ones), into a page-aligned buffer (an
    unaligned one can push a full-size transfer past the queue's segment limit)."""

    def __init__(self, fd: int, *, path: str, nsid: int, lba_shift: int, base: int, max_io: int,
                 depth: int = 128, check=None, count=None):
        super().__init__(fd, path=path, depth=depth, direct=True, base=base, check=check, count=count,
                         ring=Ring(depth, sqe128=True, cqe32=True))
        self.nsid = nsid
        self.lba_shift = lba_shift
        self.max_io = max_io

    def submit(self, reqs: Sequence[tuple[int, int]]) -> list[int]:
        big = [n for _, n in reqs if n > self.max_io]
        if big:
            raise ValueError(f"{self.path}: an asynchronous read of {big[0]} bytes is larger than the "
                             f"device's transfer size ({self.max_io}); read it synchronously")
        return super().submit(reqs)

    def _prep(self, addr: int, n: int, off: int, tok: int) -> None:
        from .. import nvme
        slba = (self.base + off) >> self.lba_shift
        cmd = nvme.read_cmd(self.nsid, slba, n >> self.lba_shift).with_buffer(addr, n)
        self.ring.prep_uring_cmd(self.fd, nvme.NVME_URING_CMD_IO, cmd.pack_uring(), tok)

    def _result(self, inf: _Inflight, res: int) -> bytes | BaseException:
        from .. import nvme
        if res < 0:
            return DeviceError(self.path, f"read of {inf.length} bytes at offset {inf.offset} failed", -res)
        if res > 0:
            try:
                nvme.check_status(res, self.path, f"Read of {inf.length} bytes at offset {inf.offset}")
            except DeviceError as e:
                return e
        return bytes(inf.buf[:inf.length])
