"""Reads that complete later: a dedicated io_uring ring whose eventfd an event loop watches.

Owns one ring per reader (separate from the device's own, so synchronous I/O on the
device never reaps these completions), the buffers of reads in flight, and the mapping
from completions back to requests. It does no waiting: ``submit`` returns at once, the
kernel signals ``eventfd`` when completions arrive, ``reap`` collects them. The surprise:
a short read is not an error at the end of a sparse file; the missing tail reads as zeros,
as the device's own read would.
"""
from __future__ import annotations

import errno
import mmap
import os
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from ..errors import DeviceError
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
                 count: Callable[[Sequence[int]], None] | None = None):
        self.ring = Ring(depth)
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

    @property
    def free(self) -> int:
        """Reads that can be submitted now."""
        return self.depth - len(self._inflight)

    def submit(self, reqs: Sequence[tuple[int, int]]) -> list[int]:
        """Start reads of (offset, length); returns one token per request. At most ``free``."""
        if len(reqs) > self.free:
            raise ValueError(f"{len(reqs)} reads submitted with room for {self.free}")
        if self._check is not None:
            self._check([o for o, _ in reqs], [n for _, n in reqs])
        tokens = []
        for off, n in reqs:
            buf = mmap.mmap(-1, max(n, 1)) if self.direct else bytearray(n)
            tok = self._next
            self._next += 1
            self.ring.prep_read(self.fd, address_of(buf), n, self.base + off, user_data=tok)
            self._inflight[tok] = _Inflight(tok, buf, n, off)
            tokens.append(tok)
        if tokens:
            self.ring.submit(0)
        return tokens

    def reap(self) -> list[tuple[int, bytes | BaseException]]:
        """Completions ready now: (token, data) or (token, the error)."""
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
            if c.res < 0:
                out.append((inf.token, DeviceError(self.path, f"read of {inf.length} bytes at offset {inf.offset} "
                                                              "failed", -c.res)))
                continue
            data = bytes(inf.buf[:c.res])
            if c.res < inf.length:
                data += bytes(inf.length - c.res)
            out.append((inf.token, data))
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
        """Wait for reads in flight (their buffers must outlive them), then close the ring."""
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
