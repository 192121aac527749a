"""The uring device: the file device's targets, with I/O through flashcache's io_uring ring.

Owns the ring of one device and its registered (fixed) staging buffers; opening, size,
format safety and trim come from FileDevice. Batched calls (read_many/write_many) run in
one C call that keeps the ring full as requests complete; I/O larger than the staging
goes through it in pieces, the staging reused as they complete (ring.h,
fc_rw_batch_staged). The surprise: data is staged through page-aligned registered
buffers (one copy, as the psync path also makes one), which is what lets the same code
run with O_DIRECT and lets the kernel skip pinning pages per I/O.
"""
from __future__ import annotations

import errno
import functools
import logging
import threading
import time
import types
from typing import Any, Sequence

from ..errors import ClosedError, DeviceError
from ..uring import Ring
from .base import BaseDevice, PlacementStream
from .file import DEFAULT_MAX_IO, GIL_GUARDS_COUNTERS, FileDevice, _hint_for
from .heap import keep_freed
from ..uring.ring import Reader, ffi, new_bytes, pin

log = logging.getLogger("flashcache.devices")

SLOT_BYTES = 64 << 10


class UringDevice(FileDevice):
    """A FileDevice whose reads and writes go through io_uring (see module docstring)."""

    kind = "file"
    engine = "uring"

    def __init__(self, path: str, size: int | None = None, *, block_size: int = 4096,
                 direct: bool = False, format: bool = False, queue_depth: int = 64,
                 max_io: int = DEFAULT_MAX_IO):
        super().__init__(path, size, block_size=block_size, direct=direct, format=format, max_io=max_io)
        try:
            self.ring = Ring(queue_depth, coop_taskrun=True)
        except BaseException:
            super().close()
            raise
        self._ring_lock = threading.Lock()
        self.slots = min(queue_depth, self.ring.entries)
        self.slot_bytes = max(SLOT_BYTES, block_size)
        self.fixed = "on"
        try:
            self._bufs = self.ring.register_buffers(1, self.slots * self.slot_bytes)
            self._base = self.ring.buffer_addr(0)
        except DeviceError as e:
            # Still a working io_uring device, just without fixed buffers; said in stats and log.
            import mmap
            from ..uring import address_of
            self.fixed = f"off: {e}"
            log.warning("%s: io_uring fixed buffers are off: %s", path, e)
            self._plain = mmap.mmap(-1, self.slots * self.slot_bytes)
            self._bufs = [memoryview(self._plain)]
            self._base = address_of(self._plain)
        self._stage = self._bufs[0]
        self._stage_bytes = self.slots * self.slot_bytes
        keep_freed(self._stage_bytes)            # read_many's results: freed heap kept (heap.py)
        self._fixed_index = 0 if self.fixed == "on" else -1
        self._mm = self.ring.buffer_mmap(0) if self.fixed == "on" else self._plain
        self._count_lock = self._ring_lock   # one lock per I/O: the ring's also guards counters
        self._tls = threading.local()
        self._busy = 0
        self._closing = False
        self._thread_rings: list[Ring] = []
        self._thread_ring_errors: dict[str, str] = {}     # kind of per-thread ring -> why none
        self._batch_rings = 0
        self._batch_flags = "none made yet"
        self._c_reads = None
        if GIL_GUARDS_COUNTERS and Reader is not None:
            # Single reads in one C call on each thread's own ring; UringDevice.read (below)
            # is its fallback: it makes a new thread's ring (and hands it to C) and does
            # the careful path for anything unusual.
            self._c_reads = Reader(self.fd, self.size, self._bs_mask, self.slot_bytes,
                                   types.MethodType(UringDevice.read, self), True)
            self.read = self._c_reads.read
            # single writes too, on the same per-thread ring: no lock, no Python frame
            self._c_reads.set_write(types.MethodType(UringDevice._write_first, self), self._streams)
            self.write = self._c_reads.write
        if GIL_GUARDS_COUNTERS:
            self._thread_reader()               # the opening thread's, made now (the usual reader)
        # The single-read hot path calls the C function with everything but the length and
        # offset bound in advance (the ring's own wrapper costs a third of a QD1 read).
        from ..uring.ring import OP_READ, OP_READ_FIXED, ffi, lib
        self._read_one = functools.partial(
            lib.fc_rw_one, self.ring._r, OP_READ_FIXED if self._fixed_index >= 0 else OP_READ, self.fd,
            ffi.cast("void *", self._base))

    def async_reader(self, depth: int = 128):
        return self._ring_reader(self.fd, depth, direct=self.direct)

    def async_unavailable_reason(self) -> str | None:
        return None

    def read(self, offset: int, length: int) -> bytes:
        # The hot path, flattened (see FileDevice.read): one lock, one C call, one copy.
        if (self._closed or offset < 0 or length < 0 or (offset | length) & self._bs_mask
                or offset + length > self.size or length > self.slot_bytes):
            return BaseDevice.read(self, offset, length)   # not FileDevice's pread fast path
        if not GIL_GUARDS_COUNTERS:
            return self._read_shared(offset, length)
        try:
            read_one = self._tls.reader
        except AttributeError:
            read_one = self._thread_reader()
        if read_one is None:
            return self._read_shared(offset, length)
        # One small ring per thread for single reads: no lock between threads (a ring is
        # single-issuer), the GIL released in the kernel as everywhere, the bytes object
        # made in C. ``_busy`` (an int the GIL keeps exact) lets close() wait for reads in
        # flight before unmapping.
        self._busy += 1
        try:
            if self._closing:
                return self._read_shared(offset, length)          # the lock orders it after close
            data = read_one(length, offset)
        finally:
            self._busy -= 1
        if type(data) is int:
            return self._read_shared(offset, length)   # short or failed: the careful path
        c = self.counters
        c.reads += 1
        c.bytes_read += length
        return data

    def _read_shared(self, offset: int, length: int) -> bytes:
        with self._ring_lock:
            if self._closing or self._closed:
                raise ClosedError(self.path, "read after close()")
            r = self._read_one(length, offset, self._fixed_index)
            if r != length:
                self._finish_short(False, 0, r, offset, length)
            c = self.counters
            c.reads += 1
            c.bytes_read += length
            return self._mm[:length]

    def _thread_reader(self):
        """This thread's single-read ring (2 entries, one registered slot), made on first
        use; None when it cannot be made (e.g. the locked-memory limit), said once."""
        def setup(ring):
            reader = ring.reader(self.fd)
            if self._c_reads is not None:
                self._c_reads.adopt(int(ffi.cast("uintptr_t", ring._r)), ring.buffer_addr(0))
            return reader

        with self._ring_lock:
            reader = None if self._closed else self._thread_ring(
                "read", "single reads share the device ring under its lock", 2, self.slot_bytes, setup,
                coop_taskrun=True)
        self._tls.reader = reader
        return reader

    def _thread_batch(self):
        """This thread's batch ring, made on first use: the device ring's depth and staging
        size, with SINGLE_ISSUER|DEFER_TASKRUN (see Ring): a batch of buffered writes runs
        at the pace of the kernel worker that does them, and this keeps completion work
        off that worker. Such a ring serves only the thread that made it, hence one per
        thread (each with its own registered staging, ``slots x slot_bytes``). None, said
        once in the log and in stats(), when it cannot be made (e.g. the locked-memory
        limit): batches then share the device ring under its lock, as before."""
        with self._ring_lock:
            tb = None if self._closed or self._closing else self._thread_ring(
                "batch", "batches share the device ring under its lock", self.slots, self._stage_bytes,
                lambda ring: types.SimpleNamespace(ring=ring, base=ring.buffer_addr(0), index=0),
                defer_taskrun=True)
            if tb is not None:
                self._batch_rings += 1
                r = tb.ring                      # what the kernel gave: older ones lack a flag
                self._batch_flags = ("SINGLE_ISSUER|DEFER_TASKRUN" if r.defer_taskrun else
                                     "COOP_TASKRUN (no DEFER_TASKRUN before Linux 6.1)" if r.coop_taskrun else
                                     "no taskrun flags (Linux before 5.19)")
        self._tls.batch = tb
        return tb

    def _thread_ring(self, kind: str, instead: str, entries: int, staging: int, setup, **flags):
        """Make one of this thread's rings (the caller holds the device lock): ``entries``
        deep, one registered buffer of ``staging`` bytes, then ``setup(ring)`` gives what
        the thread keeps. None when a step fails: the ring is closed, and the first
        failure of each kind is logged (with what happens ``instead``) and kept for stats."""
        ring = None
        try:
            ring = Ring(entries, **flags)
            ring.register_buffers(1, staging)
            kept = setup(ring)
        except (DeviceError, OSError) as e:
            if ring is not None:
                ring.close()
            if kind not in self._thread_ring_errors:
                self._thread_ring_errors[kind] = str(e)
                log.warning("%s: per-thread %s rings unavailable (%s); %s", self.path, kind, e, instead)
            return None
        self._thread_rings.append(ring)
        return kept

    def ring_info(self) -> dict[str, Any]:
        return {**self.ring.info(), "staging": f"{self.slots} x {self.slot_bytes // 1024} KiB",
                "fixed_buffers": self.fixed,
                "batch_rings": (f"off: {self._thread_ring_errors['batch']}" if "batch" in self._thread_ring_errors else
                                f"{self._batch_rings} per-thread, {self._batch_flags}")}

    # -- I/O ------------------------------------------------------------------------------
    def _staged(self, write: bool, offs, lens, ptrs) -> None:
        """Requests of any size (``lens[i]`` bytes at ``offs[i]``, to or from the C
        pointer ``ptrs[i]``) in slot-sized pieces, all in one C call on this thread's batch
        ring: the staging buffer is reused as the pieces complete, so the ring stays full
        to the end (a 16 MiB region write keeps ``queue_depth`` pieces in flight, where it
        used to go in waves of one ring-full, each waiting for its slowest piece)."""
        p_offs: list[int] = []
        p_lens: list[int] = []
        p_ptrs = []
        step = self.slot_bytes
        for off, ln, ptr in zip(offs, lens, ptrs):
            for pos in range(0, ln, step):
                p_offs.append(off + pos)
                p_lens.append(min(step, ln - pos))
                p_ptrs.append(ptr + pos)
        user = ffi.new("char *[]", p_ptrs)
        self._run_packed(write, p_lens, p_offs, lambda ring, base, index: ring.rw_staged(
            write, self.fd, base, self._stage_bytes, p_lens, p_offs, index, user), final=True)

    def _finish_short(self, write: bool, addr0: int, r: int, off: int, n: int, ring: Ring | None = None,
                      index: int | None = None, final: bool = False) -> int:
        """A piece that completed short or with an error: retry the remainder once per
        short completion (the kernel may split), or raise with the errno. ``ring`` and
        ``index``: where ``addr0`` is registered (default: the device ring's staging).
        ``final``: ``r`` is what C already finished (a staged batch): raise, never retry."""
        if ring is None:
            ring, index = self.ring, self._fixed_index
        what = "write" if write else "read"
        done = 0
        if final and r >= 0:
            done, r = r, 0                  # C retried while it made progress: it stopped here
        while True:
            if r < 0:
                self.counters.errors += 1
                raise DeviceError(self.path, f"{what} of {n} bytes at offset {off} failed", -r,
                                  _hint_for(-r, self.path))
            if r == 0:
                self.counters.errors += 1
                err = errno.ENOSPC if write else errno.EIO
                raise DeviceError(self.path, f"{what} at offset {off + done} made no progress "
                                  f"({n - done} of {n} bytes left)", err,
                                  _hint_for(err, self.path) if write else
                                  "the file was truncated behind flashcache's back")
            done += r
            if done >= n:
                return n
            r = ring.rw_one(write, self.fd, addr0 + done, n - done, off + done, index)

    def _read(self, offset: int, length: int) -> bytes:
        if length <= self.slot_bytes:               # the common case: one SQE, one C call
            with self._ring_lock:
                r = self.ring.rw_one(False, self.fd, self._base, length, offset, self._fixed_index)
                if r != length:
                    self._finish_short(False, self._base, r, offset, length)
                return bytes(self._stage[:length])
        (out,), dst = new_bytes([length])          # read into the result itself: no copy after
        self._staged(False, [offset], [length], ffi.from_buffer("char *[]", dst))
        return out

    # Not FileDevice's pwrite fast path: a uring device writes through its ring.
    write = BaseDevice.write

    def _write_first(self, offset: int, data, stream: PlacementStream | None = None) -> None:
        """The C write's fallback (see __init__): makes this thread's ring when it has none,
        so its next writes go through C, then the checked write through the device ring."""
        if GIL_GUARDS_COUNTERS and not self._closing and not hasattr(self._tls, "reader"):
            self._thread_reader()
        BaseDevice.write(self, offset, data, stream)

    def _write(self, offset: int, data, stream: PlacementStream | None) -> None:
        v = memoryview(data).cast("B")
        n = v.nbytes
        if n <= self.slot_bytes:
            with self._ring_lock:
                self._stage[:n] = v
                r = self.ring.rw_one(True, self.fd, self._base, n, offset, self._fixed_index)
                if r != n:
                    self._finish_short(True, self._base, r, offset, n)
            return
        self._staged(True, [offset], [n], [ffi.from_buffer("char[]", v)])

    def _fits_packed(self, lens) -> bool:
        """Whether requests packed back to back fit the registered staging buffer. Many
        small requests then run as one C batch that keeps the ring full, refilling it as
        each completes (a true queue depth, not submit-all-then-wait-all); C computes each
        request's staging address (base + the lengths before it)."""
        return sum(lens) <= self._stage_bytes

    def _batch_ring(self):
        """The ring a packed batch on this thread runs on: (ring, staging address, buffer
        index, lock or None). This thread's own ring when it has one (no lock: no other
        thread submits on it), else the device ring under its lock."""
        if GIL_GUARDS_COUNTERS:
            try:
                tb = self._tls.batch
            except AttributeError:
                tb = self._thread_batch()
            if tb is not None:
                return tb.ring, tb.base, tb.index, None
        return self.ring, self._base, self._fixed_index, self._ring_lock

    def _run_packed(self, write: bool, lens, offs, run, on_short=None, final: bool = False) -> None:
        """Run one packed batch: ``run(ring, base, index)`` returns each request's result;
        short or failed requests are then finished (or raised) in order, and
        ``on_short(i, addr, length)`` is called for each one finished. ``final``: the
        results are final (a staged batch): a short or failed one raises."""
        ring, base, index, lock = self._batch_ring()
        if lock is None:
            # close() waits while _busy is set (the GIL keeps the count exact, as for single
            # reads); one that finds the device closing takes the device lock below instead
            self._busy += 1
            try:
                if not (self._closing or self._closed):
                    self._finish_packed(write, lens, offs, run(ring, base, index), ring, base, index, on_short, final)
                    return
            finally:
                self._busy -= 1
            ring, base, index, lock = self.ring, self._base, self._fixed_index, self._ring_lock
        with lock:
            if self._closing or self._closed:
                raise ClosedError(self.path, f"{'write' if write else 'read'}_many after close()")
            self._finish_packed(write, lens, offs, run(ring, base, index), ring, base, index, on_short, final)

    def _finish_packed(self, write: bool, lens, offs, res, ring, base: int, index: int, on_short,
                       final: bool = False) -> None:
        if res != lens:
            a = base
            for i, (r, off, ln) in enumerate(zip(res, offs, lens)):
                if r != ln:
                    self._finish_short(write, a, r, off, ln, ring, index, final)
                    if on_short is not None:
                        on_short(i, a, ln)
                a += ln

    def read_many(self, reqs: Sequence[tuple[int, int]]) -> list[bytes]:
        offs = [o for o, _ in reqs]
        lens = [n for _, n in reqs]
        self._check_many("read", offs, lens)
        if self._fits_packed(lens):
            # The results exist before the I/O: the C loop copies each request on into its
            # bytes object as it completes, while the others are still in flight.
            out, dst = new_bytes(lens)

            def run(ring, base, index):
                return ring.read_packed_into(self.fd, base, lens, offs, index, dst)

            def copy_on(i, addr, ln):                    # a finished short one: copy it on
                ffi.memmove(ffi.cast("char **", ffi.from_buffer(dst))[i], ffi.cast("char *", addr), ln)

            self._run_packed(False, lens, offs, run, copy_on)
        else:
            out, dst = new_bytes(lens)
            self._staged(False, offs, lens, ffi.from_buffer("char *[]", dst))
        self._count_many("r", lens)
        return out

    def write_many(self, reqs: Sequence[tuple[int, Any, PlacementStream | None]]) -> None:
        # C reads each item's length and address (pinning any that is not bytes); the ring
        # loop copies each into the staging buffer just before its SQE, overlapping the I/O.
        lens, srcs, keep = pin([d for _, d, _ in reqs])
        offs = [o for o, _, _ in reqs]
        streams = [s for _, _, s in reqs]
        self._check_many("write", offs, lens)
        self._check_streams(streams)
        if self._fits_packed(lens):
            self._run_packed(True, lens, offs, lambda ring, base, index: ring.write_packed_from(
                self.fd, base, lens, offs, index, srcs))
        else:
            self._staged(True, offs, lens, ffi.from_buffer("char *[]", srcs))
        del keep                                         # the pins hold until the I/O is done
        self._count_writes(lens, streams)

    def close(self) -> None:
        if not self._closed:
            self._closing = True                # new single reads take the locked path...
            if self._c_reads is not None:
                self._c_reads.close()
            while self._busy or (self._c_reads is not None and self._c_reads.busy):
                time.sleep(0.0001)              # ...and those in flight finish first
            with self._ring_lock:
                self._stage.release() if hasattr(self, "_plain") else None
                self.ring.close()
                for r in self._thread_rings:
                    r.close()
                self._thread_rings = []
                self._tls = threading.local()
            super().close()

    def stats(self) -> dict[str, Any]:
        return {**super().stats(), "ring": self.ring_info() if not self._closed else "closed"}
