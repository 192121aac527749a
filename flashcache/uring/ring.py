"""The io_uring ring from Python: a thin class over flashcache's C ring (ring.c).

Owns one ring: its setup, prepared SQEs, batch submit/reap (in C, one Python call per
batch), registered buffers and the eventfd. It knows no devices. A Ring is not
thread-safe: one thread at a time (devices wrap it with a lock). The GIL is released
inside every C call (cffi API mode), so a thread waiting in the kernel does not stop the
others. The surprise: a completion's ``res`` is bytes or ``-errno`` for plain I/O, but
for NVMe passthrough a positive ``res`` is an NVMe status, not a byte count; and a ring a
forked child inherited shares its queues and buffers with the parent (MAP_SHARED), so
there it refuses every call (ForkedError) and close() leaves it alone.
"""
from __future__ import annotations

import errno
import functools
import mmap
import os
from dataclasses import dataclass
from typing import Any, Sequence

from .. import forksafe
from ..errors import ClosedError, DeviceError, ForkedError, UringUnavailableError

try:
    from ._results_c import Reader, new_bytes, pin, read_one   # made in C (results.c)
    from ._uring_c import ffi, lib
except ImportError as _e:  # the package was installed without its C modules
    ffi = lib = new_bytes = pin = read_one = Reader = None
    _IMPORT_ERROR: str | None = str(_e)
else:
    _IMPORT_ERROR = None

# io_uring constants (linux/io_uring.h)
IORING_SETUP_COOP_TASKRUN = 1 << 8
IORING_SETUP_SQE128 = 1 << 10
IORING_SETUP_CQE32 = 1 << 11
IORING_SETUP_SINGLE_ISSUER = 1 << 12
IORING_SETUP_DEFER_TASKRUN = 1 << 13
IORING_FEAT_SINGLE_MMAP = 1 << 0
IORING_FEAT_NODROP = 1 << 1
OP_NOP, OP_READ_FIXED, OP_WRITE_FIXED, OP_READ, OP_WRITE, OP_URING_CMD = 0, 4, 5, 22, 23, 46
_FEATURES = {0: "SINGLE_MMAP", 1: "NODROP", 2: "SUBMIT_STABLE", 3: "RW_CUR_POS", 4: "CUR_PERSONALITY",
             5: "FAST_POLL", 6: "POLL_32BITS", 7: "SQPOLL_NONFIXED", 8: "EXT_ARG", 9: "NATIVE_WORKERS",
             10: "RSRC_TAGS", 11: "CQE_SKIP", 12: "LINKED_FILE", 13: "REG_REG_RING"}

def _rw_op(write: bool, fixed: bool) -> int:
    """The opcode of a read or write, on a registered (fixed) buffer or not."""
    return (OP_WRITE_FIXED if fixed else OP_WRITE) if write else (OP_READ_FIXED if fixed else OP_READ)


_PSYNC_HINT = 'use the psync engine instead: engine = "psync" in the [device] table'


def io_uring_disabled_sysctl() -> int | None:
    """kernel.io_uring_disabled (0, 1 or 2), or None where the kernel has no such sysctl."""
    try:
        with open("/proc/sys/kernel/io_uring_disabled") as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


def _unavailable(err: int) -> UringUnavailableError:
    """Name why io_uring_setup failed, from errno and the sysctl where it exists."""
    sysctl = io_uring_disabled_sysctl()
    if err == errno.ENOSYS:
        what = "io_uring is not available: this kernel has no io_uring (CONFIG_IO_URING off, or older than 5.1)"
    elif err in (errno.EPERM, errno.EACCES) and sysctl == 2:
        what = "io_uring is disabled on this machine (sysctl kernel.io_uring_disabled = 2)"
    elif err in (errno.EPERM, errno.EACCES) and sysctl == 1:
        what = ("io_uring is restricted to privileged users and the kernel.io_uring_group group "
                "(sysctl kernel.io_uring_disabled = 1)")
    elif err in (errno.EPERM, errno.EACCES):
        what = "io_uring is forbidden here (a seccomp filter or container policy blocks io_uring_setup)"
    elif err == errno.EINVAL:
        what = "io_uring_setup rejected the ring flags (SQE128/CQE32 need Linux 5.19 or newer)"
    elif err == errno.ENOMEM:
        what = "io_uring_setup could not allocate the ring (locked-memory limit, see ulimit -l)"
    else:
        what = "io_uring_setup failed"
    return UringUnavailableError(None, what, err, _PSYNC_HINT)


@dataclass(frozen=True, slots=True)
class Completion:
    user_data: int
    res: int
    flags: int
    big0: int = 0   # big_cqe[0] with CQE32: NVMe completion DW0 (low) and DW1 (high)


class Ring:
    """One io_uring instance.

    >>> r = Ring(64)                                  # doctest: +SKIP
    >>> r.prep_read(fd, addr, 4096, 0, user_data=7)   # doctest: +SKIP
    >>> r.submit(wait_nr=1); r.reap()                 # doctest: +SKIP
    [Completion(user_data=7, res=4096, flags=0, big0=0)]
    """

    def __init__(self, entries: int = 64, *, sqe128: bool = False, cqe32: bool = False,
                 coop_taskrun: bool = False, defer_taskrun: bool = False):
        """``coop_taskrun``: completions are posted when this task next enters the kernel
        instead of interrupting it (IORING_SETUP_COOP_TASKRUN, Linux 5.19+): ~1.5x the
        rate of buffered writes the kernel punts to its workers (tools/bench_io.py).
        Only for rings whose owner always waits in io_uring_enter (the synchronous
        paths); a ring read through its eventfd from an event loop must not use it.

        ``defer_taskrun`` (implies coop_taskrun; Linux 6.1+): SINGLE_ISSUER|DEFER_TASKRUN,
        as fio sets them. A kernel worker that finishes a request (a buffered write, which
        ext4 always hands to one) only queues it for this task, which posts it when it
        waits, instead of taking the completion lock, posting and waking the task itself:
        the worker, which runs one file's writes one at a time, spends its time on writes.
        0.75-0.86 of fio's buffered QD32 writes against 0.47-0.67 without it (same runs).
        Only the thread that made the ring may then submit on it (others get EEXIST):
        for per-thread rings only.

        Kernels without a flag get a ring without it, and ``info()`` says so."""
        if lib is None:
            raise UringUnavailableError(None, f"flashcache's io_uring C module is not built ({_IMPORT_ERROR})",
                                        None, "reinstall with `make setup`, or " + _PSYNC_HINT)
        if entries < 1 or entries > 32768:
            raise ValueError(f"ring entries {entries} must be between 1 and 32768")
        self._r = ffi.new("struct fc_ring *")
        flags = (IORING_SETUP_SQE128 if sqe128 else 0) | (IORING_SETUP_CQE32 if cqe32 else 0)
        tries = [IORING_SETUP_COOP_TASKRUN | IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN] \
            if defer_taskrun else []
        tries += [IORING_SETUP_COOP_TASKRUN] if coop_taskrun or defer_taskrun else []
        for extra in tries + [0]:               # an older kernel refuses a flag it lacks: EINVAL
            ret = lib.fc_ring_init(self._r, entries, flags | extra)
            if ret != -errno.EINVAL:
                break
        self.defer_taskrun = ret >= 0 and bool(extra & IORING_SETUP_DEFER_TASKRUN)
        self.coop_taskrun = ret >= 0 and bool(extra & IORING_SETUP_COOP_TASKRUN)
        if ret < 0:
            raise _unavailable(-ret)
        self.sqe128, self.cqe32 = sqe128, cqe32
        self.entries = self._r.sq_entries
        self.cq_entries = self._r.cq_entries
        self.features = self._r.features
        self.fd = self._r.fd
        self._cqes = ffi.new("struct fc_cqe[]", max(64, self.cq_entries))
        # batch argument arrays, reused by every rw_batch of up to `entries` requests
        n = self.entries
        self._b_addrs = ffi.new("void *[]", n)
        self._b_lens = ffi.new("unsigned[]", n)
        self._b_offs = ffi.new("unsigned long long[]", n)
        self._b_bi = ffi.new("int[]", n)
        self._b_res = ffi.new("int[]", n)
        self._nv_cap = 0
        self._pk_cap = 0
        self._buffers: list[mmap.mmap] = []
        self._buffer_addrs: list[int] = []
        self._views: list[memoryview] = []
        self.eventfd: int | None = None
        self._closed = False
        self._forked = False
        self._pid = forksafe.track(self)

    def _inherited(self) -> None:
        """In a forked child: refuse every call; close() then does nothing, leaving the
        shared queues, buffers and descriptor to the parent (the child's references go
        when it exits or execs: the ring's descriptor is close-on-exec)."""
        self._forked = True
        self._closed = True

    # -- facts -------------------------------------------------------------------------
    def feature_names(self) -> list[str]:
        return [name for bit, name in _FEATURES.items() if self.features & (1 << bit)]

    def info(self) -> dict[str, Any]:
        return {"sq_entries": self.entries, "cq_entries": self.cq_entries,
                "sqe_bytes": 128 if self.sqe128 else 64, "cqe_bytes": 32 if self.cqe32 else 16,
                "single_mmap": bool(self.features & IORING_FEAT_SINGLE_MMAP),
                "fixed_buffers": len(self._buffers), "eventfd": self.eventfd is not None,
                "coop_taskrun": self.coop_taskrun, "defer_taskrun": self.defer_taskrun,
                "features": " ".join(self.feature_names())}

    def _check(self) -> None:
        if self._closed:
            if self._forked:
                raise ForkedError("io_uring", "ring used", "io_uring ring", self._pid)
            raise ClosedError("io_uring", "ring used after close()")

    # -- preparing ---------------------------------------------------------------------
    def _prep_ret(self, ret: int) -> None:
        if ret == -errno.EBUSY:
            raise DeviceError(None, f"submission queue full ({self.entries} entries)", errno.EBUSY,
                              "submit() before preparing more")
        if ret < 0:
            raise DeviceError(None, "preparing an SQE failed", -ret)

    def prep_read(self, fd: int, addr: int, length: int, offset: int, user_data: int, buf_index: int = -1) -> None:
        """READ (or READ_FIXED when ``buf_index`` >= 0, addr inside that registered buffer)."""
        self._check()
        op = OP_READ_FIXED if buf_index >= 0 else OP_READ
        self._prep_ret(lib.fc_prep_rw(self._r, op, fd, ffi.cast("void *", addr), length, offset, user_data, buf_index))

    def prep_nop(self, user_data: int) -> None:
        self._check()
        self._prep_ret(lib.fc_prep_nop(self._r, user_data))

    def prep_uring_cmd(self, fd: int, cmd_op: int, cmd: bytes, user_data: int, buf_index: int = -1) -> None:
        """URING_CMD: ``cmd`` goes into the SQE's command area (16 B, or 80 B with SQE128)."""
        self._check()
        room = (128 if self.sqe128 else 64) - 48
        if len(cmd) > room:
            raise ValueError(f"uring_cmd payload of {len(cmd)} bytes does not fit the {room}-byte command area"
                             + ("" if self.sqe128 else "; NVMe passthrough needs Ring(sqe128=True, cqe32=True)"))
        self._prep_ret(lib.fc_prep_uring_cmd(self._r, fd, cmd_op, cmd, len(cmd), user_data, buf_index))

    def last_sqe(self) -> bytes:
        """The raw bytes of the SQE prepared last (not yet submitted): for layout tests."""
        self._check()
        n = 128 if self.sqe128 else 64
        out = ffi.new("unsigned char[]", n)
        ret = lib.fc_last_sqe(self._r, out, n)
        if ret < 0:
            raise DeviceError(None, "no SQE is prepared", -ret)
        return bytes(ffi.buffer(out, ret))

    @property
    def space(self) -> int:
        return lib.fc_sq_space(self._r)

    @property
    def pending(self) -> int:
        return lib.fc_sq_pending(self._r)

    # -- submitting and reaping ----------------------------------------------------------
    def submit(self, wait_nr: int = 0) -> int:
        """Publish prepared SQEs and enter the kernel (waiting for ``wait_nr`` completions)."""
        self._check()
        ret = lib.fc_submit(self._r, wait_nr)
        if ret < 0 and ret not in (-errno.EBUSY, -errno.EAGAIN):
            raise DeviceError(None, "io_uring_enter failed", -ret)
        return max(ret, 0)

    def wait(self, min_complete: int = 1) -> int:
        self._check()
        ret = lib.fc_wait(self._r, min_complete)
        if ret < 0:
            raise DeviceError(None, "io_uring_enter (wait) failed", -ret)
        return ret

    def reap(self, max_n: int | None = None) -> list[Completion]:
        """Every completion ready now (up to ``max_n``), in completion order."""
        self._check()
        n = lib.fc_reap(self._r, self._cqes, min(max_n or len(self._cqes), len(self._cqes)))
        c = self._cqes
        return [Completion(c[i].user_data, c[i].res, c[i].flags, c[i].big0) for i in range(n)]

    # -- batches (one C call each) --------------------------------------------------------
    def _owned_by_batch(self, what: str) -> None:
        """A batch owns the ring while it runs: refuse one while SQEs wait to be submitted."""
        if self.pending:
            raise DeviceError(None, f"{what} with SQEs prepared and not submitted", errno.EBUSY,
                              "submit() them first: a batch owns the ring while it runs")

    def rw_batch(self, write: bool, fd: int, addrs: Sequence[int], lens: Sequence[int],
                 offsets: Sequence[int], buf_index: Sequence[int] | None = None) -> list[int]:
        """Run n reads or writes, all submitted together; returns each one's result (bytes
        done or -errno), in request order whatever order they completed in."""
        self._check()
        n = len(addrs)
        if not n:
            return []
        self._owned_by_batch("rw_batch")
        fixed = buf_index is not None
        op = _rw_op(write, fixed)
        if n == 1:
            r = lib.fc_rw_one(self._r, op, fd, ffi.cast("void *", addrs[0]), lens[0], offsets[0],
                              buf_index[0] if fixed else -1)
            return [r]
        if n <= self.entries:
            c_addrs, c_lens, c_offs, res = self._b_addrs, self._b_lens, self._b_offs, self._b_res
            c_addrs[0:n] = [ffi.cast("void *", a) for a in addrs]
            c_lens[0:n] = lens
            c_offs[0:n] = offsets
            c_bi = ffi.NULL
            if fixed:
                c_bi = self._b_bi
                c_bi[0:n] = buf_index
        else:
            c_addrs = ffi.new("void *[]", [ffi.cast("void *", a) for a in addrs])
            c_lens = ffi.new("unsigned[]", list(lens))
            c_offs = ffi.new("unsigned long long[]", list(offsets))
            c_bi = ffi.new("int[]", list(buf_index)) if fixed else ffi.NULL
            res = ffi.new("int[]", n)
        ret = lib.fc_rw_batch(self._r, op, fd, n, c_addrs, c_lens, c_offs, c_bi, res)
        if ret < 0:
            raise DeviceError(None, "io_uring batch submission failed", -ret)
        return list(res[0:n])

    def rw_packed(self, write: bool, fd: int, base: int, lens: Sequence[int], offsets: Sequence[int],
                  buf_index: int = -1) -> list[int]:
        """n reads or writes whose buffers lie back to back from ``base`` (request i at
        base + sum(lens[:i]), all inside registered buffer ``buf_index`` unless it is -1),
        with at most ``entries`` in flight and the ring refilled as each completes; results
        in request order, bytes done or -errno. Python passes only the two int lists: no
        address list, no per-call C arrays."""
        return self._packed("rw_packed", write, lens, offsets, buf_index, None, "", lambda op, n, _: (
            lib.fc_rw_batch_packed(self._r, op, fd, n, ffi.cast("char *", base), self._pk_lens, self._pk_offs,
                                   buf_index, self._pk_res)))

    def read_packed_into(self, fd: int, base: int, lens: Sequence[int], offsets: Sequence[int],
                         buf_index: int, dst) -> list[int]:
        """rw_packed for reads that also copy each request's bytes on to ``dst[i]`` (a
        buffer of pointers, one per request, e.g. from ``_results_c.new_bytes``) as it
        completes, while the rest are in flight. Results as rw_packed: a request that
        completed short had only its first ``res`` bytes copied."""
        return self._packed("read_packed_into", False, lens, offsets, buf_index, dst, "destinations",
                            lambda op, n, ptrs: lib.fc_rw_batch_packed_into(
                                self._r, op, fd, n, ffi.cast("char *", base), self._pk_lens, self._pk_offs,
                                buf_index, self._pk_res, ptrs, self._pk_src, self._pk_ready))

    def write_packed_from(self, fd: int, base: int, lens: Sequence[int], offsets: Sequence[int],
                          buf_index: int, srcs) -> list[int]:
        """rw_packed for writes whose bytes the C loop copies from ``srcs[i]`` (a buffer of
        pointers, e.g. from ``_results_c.pin``, whose holders stay alive and unresized
        until this returns) into the packed buffer just before each request is prepared,
        so the copying overlaps the I/O in flight. Results as rw_packed."""
        return self._packed("write_packed_from", True, lens, offsets, buf_index, srcs, "sources",
                            lambda op, n, ptrs: lib.fc_rw_batch_packed_from(
                                self._r, op, fd, n, ffi.cast("char *", base), self._pk_lens, self._pk_offs,
                                buf_index, self._pk_res, ptrs))

    def rw_staged(self, write: bool, fd: int, stage: int, stage_bytes: int, lens: Sequence[int],
                  offsets: Sequence[int], buf_index: int, user) -> list[int]:
        """Reads into or writes from ``user[i]`` (a C ``char *[]`` of n pointers whose
        buffers stay put until this returns) through the staging buffer at ``stage``
        (``stage_bytes`` long, inside registered buffer ``buf_index`` unless it is -1),
        reused as the batch moves: any number of requests, each at most ``stage_bytes``,
        with the ring kept full. A request the kernel completes short is finished in C, so
        each result is final: its length, -errno, or the bytes done before a completion
        that made no progress (see ring.h, fc_rw_batch_staged)."""
        self._check()
        if len(user) < len(lens):
            raise ValueError(f"rw_staged: {len(lens)} requests but {len(user)} buffers")
        bad = next((ln for ln in lens if not 0 < ln <= stage_bytes), None)
        if bad is not None:
            raise ValueError(f"rw_staged: a request of {bad} bytes; each must be 1 to {stage_bytes} "
                             "(the staging buffer's size)")
        return self._packed("rw_staged", write, lens, offsets, buf_index, None, "", lambda op, n, _: (
            lib.fc_rw_batch_staged(self._r, op, fd, n, ffi.cast("char *", stage), stage_bytes, self._pk_lens,
                                   self._pk_offs, buf_index, self._pk_res, user, self._pk_pos,
                                   self._pk_done, self._pk_state, self._pk_ready)))

    def _packed(self, what: str, write: bool, lens: Sequence[int], offsets: Sequence[int], buf_index: int,
                ptrs, ptrs_what: str, call) -> list[int]:
        """The packed and staged batches' shared steps: checks, the argument arrays,
        ``call(opcode, n, ptrs as a C pointer array)``, the results."""
        self._check()
        n = len(lens)
        if not n:
            return []
        self._owned_by_batch(what)
        if ptrs is not None and len(ptrs) < n * ffi.sizeof("char *"):
            raise ValueError(f"{what}: {n} requests but {len(ptrs) // ffi.sizeof('char *')} {ptrs_what}")
        self._grow_packed(n)
        self._pk_lens[0:n] = lens
        self._pk_offs[0:n] = offsets
        op = _rw_op(write, buf_index >= 0)
        ret = call(op, n, ffi.from_buffer("char *[]", ptrs) if ptrs is not None else None)
        if ret < 0:
            raise DeviceError(None, "io_uring batch submission failed", -ret)
        return ffi.unpack(self._pk_res, n)

    def _grow_packed(self, n: int) -> None:
        if self._pk_cap < n:                     # grown once, reused by later batches
            self._pk_cap = max(n, self.entries)
            self._pk_lens = ffi.new("unsigned[]", self._pk_cap)
            self._pk_offs = ffi.new("unsigned long long[]", self._pk_cap)
            self._pk_res = ffi.new("int[]", self._pk_cap)
            self._pk_src = ffi.new("char *[]", self._pk_cap)
            self._pk_ready = ffi.new("unsigned[]", self._pk_cap)
            self._pk_pos = ffi.new("size_t[]", self._pk_cap)
            self._pk_done = ffi.new("unsigned[]", self._pk_cap)
            self._pk_state = ffi.new("unsigned char[]", self._pk_cap)

    def reader(self, fd: int):
        """``f(length, offset) -> bytes | int``: one read on this ring into registered
        buffer 0 (register it first; ``length`` at most its size), returned as a new bytes
        object made in C, or the int result (-errno or a short count) when it did not
        complete whole. The ring must be this thread's alone, with nothing else in flight."""
        self._check()
        if not self._buffers:
            raise DeviceError(None, "Ring.reader needs a registered buffer to read into", errno.EINVAL,
                              "call register_buffers(1, size) first")
        return functools.partial(read_one, int(ffi.cast("uintptr_t", self._r)), fd, self.buffer_addr(0))

    def rw_one(self, write: bool, fd: int, addr: int, length: int, offset: int, buf_index: int = -1) -> int:
        """One read or write, submitted and waited for: bytes done or -errno."""
        if self._closed:
            self._check()
        op = _rw_op(write, buf_index >= 0)
        return lib.fc_rw_one(self._r, op, fd, ffi.cast("void *", addr), length, offset, buf_index)

    def rw_strided(self, write: bool, fd: int, base: int, stride: int, lens: Sequence[int],
                   offsets: Sequence[int], buf_index: int = -1) -> list[int]:
        """n reads or writes where request i uses the buffer at base + i * stride (n at
        most ``entries``); results in request order, bytes done or -errno."""
        self._check()
        n = len(lens)
        if n > self.entries:
            raise ValueError(f"rw_strided takes at most {self.entries} requests, got {n}")
        self._owned_by_batch("rw_strided")
        op = _rw_op(write, buf_index >= 0)
        self._b_lens[0:n] = lens
        self._b_offs[0:n] = offsets
        ret = lib.fc_rw_batch_strided(self._r, op, fd, n, ffi.cast("char *", base), stride,
                                      self._b_lens, self._b_offs, buf_index, self._b_res)
        if ret < 0:
            raise DeviceError(None, "io_uring batch submission failed", -ret)
        return self._b_res[0:n]

    def nvme_rw(self, write: bool, fd: int, nsid: int, base: int, stride: int, slbas: Sequence[int],
                nbytes: Sequence[int], pids: Sequence[int], lba_shift: int, buf_index: int = -1) -> list[int]:
        """n NVMe Reads or Writes built in C (request i's data at base + i * stride), with
        at most ``entries`` in flight and the ring refilled as each completes; returns each
        completion's res: 0, an NVMe status (> 0) or -errno."""
        self._check()
        n = len(slbas)
        if not (self.sqe128 and self.cqe32):
            raise ValueError("NVMe passthrough needs Ring(sqe128=True, cqe32=True)")
        if self._nv_cap < n:                     # grown once, reused by later batches
            self._nv_cap = max(n, self.entries)
            self._nv_cmds = ffi.new("unsigned char[]", 72 * self._nv_cap)
            self._nv_slbas = ffi.new("unsigned long long[]", self._nv_cap)
            self._nv_pids = ffi.new("int[]", self._nv_cap)
            self._nv_lens = ffi.new("unsigned[]", self._nv_cap)
            self._nv_res = ffi.new("int[]", self._nv_cap)
        self._nv_slbas[0:n] = slbas
        self._nv_lens[0:n] = nbytes
        self._nv_pids[0:n] = pids
        ret = lib.fc_nvme_rw_batch(self._r, fd, nsid, int(write), n, ffi.cast("char *", base), stride,
                                   self._nv_slbas, self._nv_lens, self._nv_pids, lba_shift, buf_index,
                                   self._nv_cmds, self._nv_res)
        if ret < 0:
            raise DeviceError(None, "io_uring passthrough batch submission failed", -ret)
        return self._nv_res[0:n]

    def uring_cmd_batch(self, fd: int, cmd_op: int, cmds: bytes, n: int,
                        buf_index: int = -1) -> tuple[list[int], list[int]]:
        """Run n 72-byte NVMe passthrough commands (``cmds`` back to back; with
        ``buf_index`` >= 0 their data lies in that registered buffer); returns
        (res list, big_cqe[0] list) in request order."""
        self._check()
        if not (self.sqe128 and self.cqe32):
            raise ValueError("NVMe passthrough needs Ring(sqe128=True, cqe32=True)")
        if len(cmds) != 72 * n:
            raise ValueError(f"uring_cmd_batch: {len(cmds)} bytes is not {n} commands of 72 bytes")
        self._owned_by_batch("uring_cmd_batch")
        res = ffi.new("int[]", n)
        dw0 = ffi.new("unsigned long long[]", n)
        ret = lib.fc_uring_cmd_batch(self._r, fd, cmd_op, n, ffi.from_buffer(cmds), buf_index, res, dw0)
        if ret < 0:
            raise DeviceError(None, "io_uring passthrough batch submission failed", -ret)
        return list(res), list(dw0)

    # -- registered buffers and eventfd ----------------------------------------------------
    def register_buffers(self, count: int, size: int) -> list[memoryview]:
        """Allocate ``count`` page-aligned buffers of ``size`` bytes and register them as
        fixed buffers 0..count-1. Returns writable memoryviews over them."""
        self._check()
        if self._buffers:
            raise DeviceError(None, "fixed buffers are already registered on this ring", errno.EBUSY)
        bufs = [mmap.mmap(-1, size) for _ in range(count)]
        addrs = [ffi.cast("uintptr_t", ffi.from_buffer(b)) for b in bufs]
        c_addrs = ffi.new("void *[]", [ffi.cast("void *", a) for a in addrs])
        c_lens = ffi.new("size_t[]", [size] * count)
        ret = lib.fc_register_buffers(self._r, c_addrs, c_lens, count)
        if ret < 0:
            for b in bufs:
                b.close()
            raise DeviceError(None, f"registering {count} fixed buffers of {size} bytes failed", -ret,
                              "raise the locked-memory limit (ulimit -l) or use fewer/smaller buffers"
                              if ret == -errno.ENOMEM else "")
        self._buffers = bufs
        self._buffer_addrs = [int(a) for a in addrs]
        self._views = [memoryview(b) for b in bufs]
        return list(self._views)

    def buffer_mmap(self, index: int) -> mmap.mmap:
        """The mmap behind registered buffer ``index`` (slicing it gives bytes directly)."""
        return self._buffers[index]

    def buffer_addr(self, index: int) -> int:
        return self._buffer_addrs[index]

    @property
    def buffers(self) -> list[memoryview]:
        return list(self._views)

    def register_eventfd(self) -> int:
        """Create an eventfd the kernel signals on every completion; returns its fd (for
        ``loop.add_reader``). Read it (8 bytes) to clear it, then ``reap()``."""
        self._check()
        if self.eventfd is None:
            efd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
            ret = lib.fc_register_eventfd(self._r, efd)
            if ret < 0:
                os.close(efd)
                raise DeviceError(None, "registering the eventfd failed", -ret)
            self.eventfd = efd
        return self.eventfd

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        lib.fc_ring_exit(self._r)
        for v in self._views:
            v.release()
        for b in self._buffers:
            b.close()
        self._views, self._buffers = [], []
        if self.eventfd is not None:
            os.close(self.eventfd)
            self.eventfd = None

    def __enter__(self) -> "Ring":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass


def address_of(buf: Any) -> int:
    """The address of a writable buffer (bytearray, mmap, writable memoryview)."""
    return int(ffi.cast("uintptr_t", ffi.from_buffer(buf, require_writable=True)))
