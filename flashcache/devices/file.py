"""The psync device: pread/pwrite on a regular file or a block device.

Owns opening a target (create, the owner's lock, size discovery, format safety, O_DIRECT), trim (hole
punching on files, BLKDISCARD on block devices) and the blocking I/O path. The uring
device subclasses it and replaces only the I/O. The surprise: with ``direct=True`` every
buffer handed to the kernel must be page aligned, so data is staged through mmap'd
buffers (Python bytes objects are not aligned).
"""
from __future__ import annotations

import ctypes
import errno
import fcntl
import logging
import mmap
import os
import stat
import struct
import sys
import threading
import time
import types
from typing import Any

from ..errors import DeviceError, DeviceInUseError

try:
    from ..uring._results_c import Reader   # the C single read (flashcache/uring/results.c)
except ImportError:                          # not built: the Python read below does it all
    Reader = None
from . import owner
from .base import BaseDevice, PlacementStream
from .safety import probe_fd, refuse_foreign

log = logging.getLogger("flashcache.devices")

BLKGETSIZE64 = 0x80081272
BLKSSZGET = 0x1268
BLKDISCARD = 0x1277
FALLOC_FL_KEEP_SIZE = 0x01
FALLOC_FL_PUNCH_HOLE = 0x02

_libc = ctypes.CDLL(None, use_errno=True)
_libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_long, ctypes.c_long]

DEFAULT_MAX_IO = 8 << 20

# With a GIL, `obj.n += 1` on an int cannot be interleaved with another thread's (CPython
# checks for thread switches only at calls and backward jumps), so the psync hot path skips
# the counter lock; a free-threaded build takes it.
GIL_GUARDS_COUNTERS = not (hasattr(sys, "_is_gil_enabled") and not sys._is_gil_enabled())


def _hint_for(err: int, path: str) -> str:
    if err in (errno.EACCES, errno.EPERM):
        return "check the file's permissions, or run as a user that may open it for write"
    if err == errno.ENOSPC:
        return f"the filesystem holding {path} is full: free space or choose a smaller device.size"
    if err == errno.EINVAL:
        return "O_DIRECT needs block-aligned offsets, lengths and buffers (is block_size below the device's logical block size?)"
    if err == errno.ENOENT:
        return "check the path; its parent directory must exist"
    return ""


def open_target(path: str, size: int | None, *, direct: bool, fmt: bool,
                block_size: int, probe: bool = True, claim=None) -> tuple[int, int, bool]:
    """Open (creating if needed) a file or block device for the cache, and lock it.

    Returns (fd, size, is_block); the exclusive lock (devices/owner.py) holds until ``fd``
    is closed, and is taken before anything reads, resizes or writes the target, so a
    second open fails with DeviceInUseError and changes nothing. Refuses foreign data
    unless ``fmt``; ``probe=False`` skips that check. ``claim()``, when given, runs once the
    target is locked and returns ``probe`` instead: for an owner whose state beside the
    target (the emulated SSD's FTL) says whether the target is its own, and which only
    the lock holder may read or drop.
    """
    flags = os.O_RDWR | os.O_CLOEXEC
    created = False
    try:
        st = os.stat(path)
    except FileNotFoundError:
        st = None
    if st is not None and stat.S_ISCHR(st.st_mode):
        raise DeviceError(path, "is a character device", None,
                          'for an NVMe generic device (/dev/ngXnY) use device.kind = "nvme"')
    if st is not None and stat.S_ISDIR(st.st_mode):
        raise DeviceError(path, "is a directory", errno.EISDIR,
                          "device.path must name a file (it is created if missing) or a block device")
    if st is None:
        if not size:
            raise DeviceError(path, "does not exist and no device.size was given to create it", errno.ENOENT,
                              'set device.size (e.g. "1GiB") or point device.path at an existing file')
        flags |= os.O_CREAT | os.O_EXCL
        created = True
    try:
        fd = os.open(path, flags | (os.O_DIRECT if direct else 0), 0o644)
    except OSError as e:
        if created and e.errno == errno.EEXIST:      # made by another process since the stat
            return open_target(path, size, direct=direct, fmt=fmt, block_size=block_size, probe=probe,
                               claim=claim)
        if direct and e.errno == errno.EINVAL:
            raise DeviceError(path, "open with O_DIRECT failed", e.errno,
                              "this filesystem does not support O_DIRECT (tmpfs does not); set device.direct = false") from None
        raise DeviceError(path, "open for read/write failed", e.errno, _hint_for(e.errno, path)) from None
    try:
        owner.lock(fd, path)
        if claim is not None:
            probe = claim()
        st = os.fstat(fd)
        is_block = stat.S_ISBLK(st.st_mode)
        if is_block:
            buf = fcntl.ioctl(fd, BLKGETSIZE64, b"\0" * 8)
            devsize = struct.unpack("<Q", buf)[0]
            lbs = struct.unpack("<i", fcntl.ioctl(fd, BLKSSZGET, b"\0" * 4))[0]
            if block_size < lbs:
                raise DeviceError(path, f"block_size {block_size} is below the device's logical block size {lbs}",
                                  None, f"set device.block_size = {lbs} or larger")
            if size and size > devsize:
                raise DeviceError(path, f"device.size {size} is larger than the block device ({devsize} bytes)",
                                  None, "lower device.size or leave it out to use the whole device")
            use = size or devsize
        else:
            use = size or st.st_size
            if not use:
                raise DeviceError(path, "is an empty file and no device.size was given", None,
                                  'set device.size (e.g. "1GiB")')
        use -= use % block_size
        if not created and probe:
            verdict = _probe(fd, path, st.st_size if not is_block else use, direct)
            refuse_foreign(path, verdict, fmt, log)
        if not is_block and st.st_size != use:
            try:
                os.ftruncate(fd, use)
            except OSError as e:
                raise DeviceError(path, f"resizing the file to {use} bytes failed", e.errno,
                                  _hint_for(e.errno, path)) from None
        return fd, use, is_block
    except BaseException as e:
        os.close(fd)
        if created and not isinstance(e, DeviceInUseError):   # else it is another process's by now
            try:
                os.unlink(path)
            except OSError:
                pass
        raise


def _probe(fd: int, path: str, size: int, direct: bool):
    if not direct:
        return probe_fd(fd, size)
    # O_DIRECT fds need aligned buffers: probe through a second, buffered descriptor.
    fd2 = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return probe_fd(fd2, size)
    finally:
        os.close(fd2)


class _AlignedPool:
    """Per-thread page-aligned staging buffers for O_DIRECT."""

    def __init__(self) -> None:
        self._local = threading.local()

    def get(self, n: int) -> mmap.mmap:
        m = getattr(self._local, "buf", None)
        if m is None or len(m) < n:
            if m is not None:
                m.close()
            m = mmap.mmap(-1, max(n, 1 << 16))
            self._local.buf = m
        return m


class FileDevice(BaseDevice):
    """A cache device on a regular file or a block device, with pread/pwrite (psync).

    >>> dev = FileDevice("/tmp/fc.img", size=64 << 20)      # doctest: +SKIP
    >>> dev.write(0, b"x" * 4096); dev.read(0, 4096)[:1]    # doctest: +SKIP
    """

    kind = "file"
    engine = "psync"

    def __init__(self, path: str, size: int | None = None, *, block_size: int = 4096,
                 direct: bool = False, format: bool = False, max_io: int = DEFAULT_MAX_IO):
        if block_size < 512 or block_size & (block_size - 1):
            raise ValueError(f"{path}: block_size {block_size} must be a power of two >= 512")
        self.direct = direct
        self.fd, real_size, self.is_block = open_target(path, size, direct=direct, fmt=format,
                                                        block_size=block_size)
        super().__init__(path, real_size, block_size, max_io)
        self._pool = _AlignedPool()
        self._busy = 0                            # I/Os using the fd now (Python paths; C keeps its own)
        self._c_reads = None
        if type(self).read is FileDevice.read and Reader is not None:
            # psync reads: checks, pread and counters in one C call (the Python read below
            # is its fallback for everything unusual, and says what went wrong); with
            # O_DIRECT through the thread's aligned 64 KiB buffer in C (mode 2), as the
            # Python read does through _AlignedPool, larger ones in Python
            self._c_reads = Reader(self.fd, self.size, self._bs_mask, self.max_io,
                                   types.MethodType(FileDevice.read, self), 2 if direct else 0)
            self.read = self._c_reads.read
            if not direct and not self.is_block:
                # reads of up to a page (a BigHash bucket) copy from a read-only mapping of
                # the file: the same page cache without a system call each (results.c)
                self._c_reads.map_reads()
            if type(self).write is FileDevice.write:
                # and writes: checks, pwrite and counters (per stream too) in one C call,
                # with the Python write below as its fallback in the same way
                self._c_reads.set_write(types.MethodType(FileDevice.write, self), self._streams)
                self.write = self._c_reads.write

    def placement_off_reason(self) -> str:
        what = "block device" if self.is_block else "regular file"
        return f"{self.engine} {what} device has no FDP placement (use an nvme or emulated device)"

    def waf_unavailable_reason(self) -> str | None:
        return f"{self.engine} device on a {'block device' if self.is_block else 'regular file'} cannot report media writes (no FDP statistics log)"

    def _err(self, what: str, e: OSError, offset: int, length: int) -> DeviceError:
        self.counters.errors += 1
        return DeviceError(self.path, f"{what} of {length} bytes at offset {offset} failed", e.errno,
                           _hint_for(e.errno or 0, self.path))

    def read(self, offset: int, length: int) -> bytes:
        # The hot path, flattened: one pread, one bytes object, one lock for the counters.
        # O_DIRECT reads into this thread's aligned buffer and copies out once.
        if (self._closed or offset < 0 or length < 0 or (offset | length) & self._bs_mask
                or offset + length > self.size or length > self.max_io):
            return super().read(offset, length)
        self._enter("read")                      # close() waits for it
        try:
            if self.direct:
                m = self._pool.get(length)
                got = os.preadv(self.fd, [memoryview(m)[:length]], offset)
                data = m[:length] if got == length else b""
            else:
                data = os.pread(self.fd, length, offset)
        except OSError as e:
            raise self._err("read", e, offset, length) from None
        finally:
            self._leave()
        if len(data) != length:
            return super().read(offset, length)
        c = self.counters
        if GIL_GUARDS_COUNTERS:
            c.reads += 1
            c.bytes_read += length
        else:
            with self._count_lock:
                c.reads += 1
                c.bytes_read += length
        return data

    def write(self, offset: int, data, stream: PlacementStream | None = None) -> None:
        # The hot path, flattened like read(): one pwrite, the counters without a lock.
        n = len(data) if type(data) is bytes or type(data) is bytearray else -1
        if (n < 0 or self._closed or offset < 0 or (offset | n) & self._bs_mask
                or offset + n > self.size or n > self.max_io or stream is not None and (
                    type(stream) is not PlacementStream or self._streams.get(stream.name) is not stream)):
            return super().write(offset, data, stream)
        self._enter("write")                     # close() waits for it
        try:
            if self.direct:                      # through this thread's aligned buffer
                m = self._pool.get(n)
                m[:n] = data
                put = os.pwritev(self.fd, [memoryview(m)[:n]], offset)
            else:
                put = os.pwrite(self.fd, data, offset)
        except OSError as e:
            raise self._err("write", e, offset, n) from None
        finally:
            self._leave()
        if put != n:
            self._write(offset + put, memoryview(data)[put:], stream)   # the rest, or a clear error
        if not GIL_GUARDS_COUNTERS:
            return self._count("w", n, stream)
        c = self.counters
        c.writes += 1
        c.bytes_written += n
        name = stream.name if stream is not None else "default"
        ps = c.per_stream_bytes_written
        if name in ps:
            ps[name] += n               # no call in between: no thread switch (see above)
        else:
            with self._count_lock:       # first write of this stream: create its counter
                ps[name] = ps.get(name, 0) + n

    def _enter(self, what: str) -> None:
        """Count an I/O that is about to use the fd, then check the device is still open
        (ClosedError if not): close() waits for the count to drop to zero before closing
        the fd, so no I/O reaches the kernel on a closed, perhaps reused, fd number. Pair
        with _leave(). Without a GIL the count takes the counters' lock."""
        if GIL_GUARDS_COUNTERS:
            self._busy += 1                      # no call in between: no thread switch
        else:
            with self._count_lock:
                self._busy += 1
        if self._closed:
            self._leave()
            self._check_open(what)

    def _leave(self) -> None:
        if GIL_GUARDS_COUNTERS:
            self._busy -= 1
        else:
            with self._count_lock:
                self._busy -= 1

    def _read(self, offset: int, length: int) -> bytes:
        self._enter("read")
        try:
            return self._read_open(offset, length)
        finally:
            self._leave()

    def _read_open(self, offset: int, length: int) -> bytes:
        if not self.direct and length <= self.max_io:
            try:
                data = os.pread(self.fd, length, offset)      # one syscall, one bytes object
            except OSError as e:
                raise self._err("read", e, offset, length) from None
            if len(data) == length:
                return data
        out = bytearray(length)
        view = memoryview(out)
        done = 0
        while done < length:
            n = min(length - done, self.max_io)
            try:
                if self.direct:
                    m = self._pool.get(n)
                    got = os.preadv(self.fd, [memoryview(m)[:n]], offset + done)
                    view[done:done + got] = memoryview(m)[:got]
                else:
                    got = os.preadv(self.fd, [view[done:done + n]], offset + done)
            except OSError as e:
                raise self._err("read", e, offset + done, n) from None
            if got == 0:
                raise DeviceError(self.path, f"read at offset {offset + done} hit end of file "
                                  f"({length - done} bytes short)", errno.EIO,
                                  "the file was truncated behind flashcache's back")
            done += got
        return bytes(out)

    def _write(self, offset: int, data, stream: PlacementStream | None) -> None:
        self._enter("write")
        try:
            self._write_open(offset, data)
        finally:
            self._leave()

    def _write_open(self, offset: int, data) -> None:
        view = memoryview(data).cast("B")
        length = view.nbytes
        done = 0
        while done < length:
            n = min(length - done, self.max_io)
            try:
                if self.direct:
                    m = self._pool.get(n)
                    m[:n] = view[done:done + n]
                    put = os.pwritev(self.fd, [memoryview(m)[:n]], offset + done)
                else:
                    put = os.pwrite(self.fd, view[done:done + n], offset + done)
            except OSError as e:
                raise self._err("write", e, offset + done, n) from None
            if put == 0:
                raise DeviceError(self.path, f"write at offset {offset + done} wrote nothing", errno.ENOSPC,
                                  _hint_for(errno.ENOSPC, self.path))
            done += put

    def _trim(self, offset: int, length: int) -> None:
        self._enter("trim")
        try:
            self._trim_open(offset, length)
        finally:
            self._leave()

    def _trim_open(self, offset: int, length: int) -> None:
        if self.is_block:
            try:
                fcntl.ioctl(self.fd, BLKDISCARD, struct.pack("<QQ", offset, length))
            except OSError as e:
                raise DeviceError(self.path, f"BLKDISCARD of {length} bytes at {offset} failed", e.errno,
                                  "the device does not support discard: set trim_regions = false") from None
            return
        if _libc.fallocate(self.fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, length) != 0:
            err = ctypes.get_errno()
            raise DeviceError(self.path, f"punching a hole of {length} bytes at {offset} failed", err,
                              "this filesystem cannot punch holes: set trim_regions = false")

    def flush(self) -> None:
        self._enter("flush")
        try:
            os.fdatasync(self.fd)
        except OSError as e:
            raise DeviceError(self.path, "fdatasync failed", e.errno) from None
        finally:
            self._leave()

    def _let_go(self) -> None:
        r = getattr(self, "_c_reads", None)
        if r is not None:
            r.close()                             # the C paths test only their own flag
        owner.let_go(self.fd)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            r = self._c_reads
            if r is not None:
                r.close()                         # later I/O falls back, and is refused...
            while self._busy or (r is not None and r.busy):
                time.sleep(0.0001)                # ...and what is in the kernel finishes first:
            if r is not None:
                r.unmap()                         # the mapping holds the file, and the lock
            os.close(self.fd)                     # the fd number must not be reused under it

    def stats(self) -> dict[str, Any]:
        st = {**super().stats(), "engine": self.engine, "direct": self.direct,
              "target": "block device" if self.is_block else "regular file"}
        return st
