"""The passthrough transport: NVMe commands to a real drive through the Linux driver.

Owns the file descriptors of /dev/ngXnY (I/O) and /dev/nvmeX (admin), the synchronous
passthrough ioctls, and the SQE128/CQE32 io_uring ring that carries batched reads and
writes as IORING_OP_URING_CMD. It does not interpret commands (flashcache.nvme builds
and parses them; devices.nvme decides what to send). The surprise: the kernel decides
what an unprivileged caller may send (nvme_cmd_allowed): reads and writes need only
write access to the node, but Get Log Page and Get Features need CAP_SYS_ADMIN. A cache's
transport (``exclusive``) locks the namespace node (devices/owner.py); a forked child's
copy refuses every command.
"""
from __future__ import annotations

import ctypes
import errno
import fcntl
import logging
import mmap
import os
import threading
from typing import Any, Sequence

from .. import forksafe, nvme
from ..errors import DeviceError, ForkedError
from ..uring import address_of
from . import owner
from .nvme_paths import NvmeNodes, resolve

log = logging.getLogger("flashcache.devices.nvme")

SLOT_BYTES = 128 << 10


def _addr(buf: Any) -> tuple[int, Any]:
    """(address, keep-alive) of a writable buffer; read-only data is copied first."""
    if buf is None:
        return 0, None
    mv = memoryview(buf)
    if mv.readonly:
        mv = memoryview(bytearray(mv))
    n = mv.nbytes
    if n == 0:
        return 0, None
    c = (ctypes.c_char * n).from_buffer(mv)
    return ctypes.addressof(c), (c, mv)


def _hint(err: int, path: str, admin: bool) -> str:
    if err in (errno.EACCES, errno.EPERM):
        if admin:
            return "this admin command needs CAP_SYS_ADMIN (run as root)"
        return f"give the user read/write access to {path} (udev rule or group) or run as root"
    if err == errno.ENOTTY:
        return "the node does not take NVMe passthrough ioctls: is it an NVMe device?"
    return ""


class PassthroughTransport:
    """NVMe commands on a real device: admin through /dev/nvmeX, I/O through /dev/ngXnY.

    ``exclusive`` (a cache's device): lock the namespace so one process owns it, the
    generic node /dev/ngXnY exclusively, or for a partition the partition's block node
    exclusively and the generic node shared (caches on two partitions of a namespace can
    run together, not one on the whole namespace beside them). The lock is on the nodes
    opened: a psync or uring cache on the block node /dev/nvmeXnY is not kept out by it.
    Without ``exclusive`` (the nvme CLI reading logs of a drive a cache may be using) no
    lock is taken.
    """

    def __init__(self, path: str, *, queue_depth: int = 64, sysfs: str = "/sys", use_ring: bool = True,
                 need_namespace: bool = True, exclusive: bool = False):
        self.nodes: NvmeNodes = resolve(path, sysfs)
        self._sysfs = sysfs
        self.fd: int | None = None
        self.admin_fd: int | None = None
        self._part_fd: int | None = None
        self.ring = None
        self.nsid = 0
        self._lock = threading.Lock()
        self._forked = False
        self._pid = forksafe.track(self)
        if self.nodes.ns is None:
            if need_namespace:
                raise DeviceError(path, "is a controller; the cache needs a namespace", None,
                                  "give /dev/ngXnY or /dev/nvmeXnY")
            self.path = self.admin_path = self.nodes.controller
            try:
                self.admin_fd = os.open(self.nodes.controller, os.O_RDONLY | os.O_CLOEXEC)
            except OSError as e:
                raise DeviceError(self.path, "open failed", e.errno, _hint(e.errno, self.path, True)) from None
            return
        self.path = self.nodes.ns
        try:
            self.fd = os.open(self.nodes.ns, os.O_RDWR | os.O_CLOEXEC)
        except OSError as e:
            raise DeviceError(self.nodes.ns, "open for read/write failed", e.errno,
                              _hint(e.errno, self.nodes.ns, False)) from None
        if exclusive:
            try:
                self._lock_namespace()
            except BaseException:
                self.close()
                raise
        self.admin_path = self.nodes.controller
        try:
            self.admin_fd = os.open(self.nodes.controller, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as e:
            # The namespace node routes admin ioctls to its controller too; only who may
            # send what differs, and that the kernel decides per command either way.
            log.info("%s: cannot open %s (%s); sending admin commands through %s",
                     self.path, self.nodes.controller, os.strerror(e.errno), self.nodes.ns)
            self.admin_fd, self.admin_path = self.fd, self.nodes.ns
        try:
            self.nsid = fcntl.ioctl(self.fd, nvme.NVME_IOCTL_ID)
        except OSError as e:
            self.close()
            raise DeviceError(self.path, "NVME_IOCTL_ID failed", e.errno, _hint(e.errno, self.path, False)) from None
        if use_ring:
            try:
                self._open_ring(queue_depth)
            except BaseException:
                self.close()
                raise

    def _lock_namespace(self) -> None:
        n = self.nodes
        if n.partition_size_bytes is None:
            owner.lock(self.fd, self.path)
            return
        try:
            self._part_fd = os.open(n.given, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as e:
            raise DeviceError(n.given, "opening the partition to lock it failed", e.errno,
                              _hint(e.errno, n.given, False)) from None
        owner.lock(self._part_fd, n.given)
        owner.lock(self.fd, self.path, shared=True)

    def _inherited(self) -> None:
        """In a forked child: refuse every command; let go of the parent's descriptors
        without unlocking (owner.let_go); close() then does nothing."""
        self._forked = True
        for fd in {self.fd, self.admin_fd, self._part_fd}:
            owner.let_go(fd)

    def _refuse_forked(self, what: str) -> None:
        raise ForkedError(self.path, what, "NVMe device", self._pid)

    def _open_ring(self, depth: int) -> None:
        try:
            from ..uring import Ring
        except ImportError:  # the cffi module was not built
            raise DeviceError(self.path, "cannot load flashcache's io_uring module", None,
                              "reinstall flashcache (make setup) so the cffi module is built") from None
        self.ring = Ring(depth, sqe128=True, cqe32=True, coop_taskrun=True)
        self.slots = self.ring.entries
        self.slot_bytes = SLOT_BYTES
        try:
            (self._stage,) = self.ring.register_buffers(1, self.slots * self.slot_bytes)
            self._stage_mm = self.ring.buffer_mmap(0)
            self._base = self.ring.buffer_addr(0)
            self.fixed = "on"
        except DeviceError as e:
            self.ring.close()
            self.ring = None
            raise DeviceError(self.path, f"registering {self.slots} x {self.slot_bytes // 1024} KiB io_uring "
                              f"buffers failed: {e.msg}", e.errno,
                              "raise the locked-memory limit (ulimit -l) or lower device.queue_depth") from None

    # -- synchronous ioctls ----------------------------------------------------------------
    def _ioctl(self, fd: int, req: int, cmd: "nvme.NvmeCommand", buf: Any, path: str, admin: bool) -> int:
        if self._forked:
            self._refuse_forked(nvme.describe(cmd))
        addr, keep = _addr(buf)
        n = memoryview(buf).nbytes if buf is not None else 0
        raw = bytearray(cmd.with_buffer(addr, n).pack_passthru())
        try:
            status = fcntl.ioctl(fd, req, raw, True)
        except OSError as e:
            raise DeviceError(path, f"{nvme.describe(cmd)} failed", e.errno, _hint(e.errno, path, admin)) from None
        del keep  # writable buffers were passed in place; read-only ones were copies of data-out
        if status:
            nvme.check_status(status, path, nvme.describe(cmd))
        return nvme.NvmeCommand.parse_passthru(bytes(raw)).result

    def admin(self, cmd: "nvme.NvmeCommand", buf: Any = None) -> int:
        return self._ioctl(self.admin_fd, nvme.NVME_IOCTL_ADMIN_CMD, cmd, buf, self.admin_path, True)

    def io(self, cmd: "nvme.NvmeCommand", buf: Any = None) -> int:
        if self.fd is None:
            raise DeviceError(self.path, f"{nvme.describe(cmd)} needs a namespace", None,
                              "give /dev/nvmeXnY or /dev/ngXnY")
        if self.ring is not None:
            return self.io_many([(cmd, buf)])[0]
        return self._ioctl(self.fd, nvme.NVME_IOCTL_IO_CMD, cmd, buf, self.path, False)

    def io_many(self, items: Sequence[tuple["nvme.NvmeCommand", Any]]) -> list[int]:
        if self._forked:
            self._refuse_forked(nvme.describe(items[0][0]) if items else "I/O")
        if self.ring is None:
            return [self._ioctl(self.fd, nvme.NVME_IOCTL_IO_CMD, c, b, self.path, False) for c, b in items]
        # Bounce through one page-aligned mapping: a user buffer that is not page aligned
        # spans one page more than its length, which can push a full MDTS-sized transfer
        # past the queue's segment limit (the kernel answers EINVAL).
        offs, total = [], 0
        for _, buf in items:
            offs.append(total)
            total += -(-(memoryview(buf).nbytes if buf is not None else 0) // 4096) * 4096
        bounce = mmap.mmap(-1, max(total, 4096))
        base = address_of(bounce)
        cmds = bytearray()
        for (cmd, buf), off in zip(items, offs):
            n = memoryview(buf).nbytes if buf is not None else 0
            if n:
                bounce[off:off + n] = memoryview(buf).cast("B")
            cmds += cmd.with_buffer(base + off if n else 0, n).pack_uring()
        with self._lock:
            res, dw0 = self.ring.uring_cmd_batch(self.fd, nvme.NVME_URING_CMD_IO, bytes(cmds), len(items))
        for (cmd, buf), off, r in zip(items, offs, res):
            if r < 0:
                bounce.close()
                raise DeviceError(self.path, f"{nvme.describe(cmd)} failed", -r, _hint(-r, self.path, False))
            if r > 0:
                bounce.close()
                nvme.check_status(r, self.path, nvme.describe(cmd))
            n = memoryview(buf).nbytes if buf is not None else 0
            if n and cmd.opcode & 0x2:           # opcode bits 1:0 = 10b: controller-to-host data
                memoryview(buf).cast("B")[:] = bounce[off:off + n]
        bounce.close()
        return [d & 0xFFFFFFFF for d in dw0]

    def fits(self, nbytes: Sequence[int]) -> bool:
        """Whether ``rw`` can stage these pieces: each at most ``slot_bytes``, all of them
        at the largest one's stride within the registered buffer."""
        return self.ring is not None and bool(nbytes) \
            and max(nbytes) * len(nbytes) <= self.slots * self.slot_bytes and max(nbytes) <= self.slot_bytes

    def rw(self, write: bool, slbas: Sequence[int], nbytes: Sequence[int], pids: Sequence[int],
           lba_shift: int, datas=None) -> list[bytes] | None:
        """Reads or writes staged through the registered buffer at the largest piece's
        stride (URING_CMD with IORING_URING_CMD_FIXED; commands built in C, the ring kept
        full). A write with pids[i] >= 0 goes to that placement identifier. Returns the data
        read, or None for writes. Callers check ``fits`` first."""
        if self._forked:
            self._refuse_forked("write" if write else "read")
        sb = max(nbytes)
        with self._lock:
            if write:
                stage = self._stage
                for k, d in enumerate(datas):
                    stage[k * sb:k * sb + len(d)] = d
            res = self.ring.nvme_rw(write, self.fd, self.nsid, self._base, sb, slbas, nbytes, pids, lba_shift, 0)
            if any(res):
                for k, r in enumerate(res):
                    if r:
                        what = (f"{'Write' if write else 'Read'} of {nbytes[k] >> lba_shift} blocks at LBA "
                                f"{slbas[k]}" + (f" (placement identifier {pids[k]})" if pids[k] >= 0 else ""))
                        if r < 0:
                            raise DeviceError(self.path, f"{what} failed", -r, _hint(-r, self.path, False))
                        nvme.check_status(r, self.path, what)
            if write:
                return None
            mm = self._stage_mm
            return [mm[k * sb:k * sb + n] for k, n in enumerate(nbytes)]

    def max_transfer_bytes(self, id_ctrl: Any) -> int:
        blk = os.path.basename(self.nodes.block or "")
        try:
            with open(os.path.join(self._sysfs, "block", blk, "queue", "max_hw_sectors_kb")) as f:
                return int(f.read()) * 1024
        except (OSError, ValueError):
            return id_ctrl.max_transfer_bytes() or (1 << 20)

    def close(self) -> None:
        if self._forked:
            return                               # the parent's: see _inherited
        if self._part_fd is not None:
            os.close(self._part_fd)
            self._part_fd = None
        if self.ring is not None:
            self.ring.close()
            self.ring = None
        if self.admin_fd is not None and self.admin_fd != self.fd:
            os.close(self.admin_fd)
        self.admin_fd = None
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def open_nvme_device(path: str, *, size: int | None = None, queue_depth: int = 64,
                     placement: bool = True, exclusive: bool = True, utilization: float = 1.0):
    """Open a real NVMe namespace (or a partition of one) as a cache device, locked so one
    process owns it; ``exclusive=False`` only to inspect one a cache may be using. The cache
    uses ``size`` (None: all of it) times ``utilization``."""
    from .nvme import NvmeDevice

    t = PassthroughTransport(path, queue_depth=queue_depth, exclusive=exclusive)
    psize = t.nodes.partition_size_bytes
    if psize is not None and (size is None or size > psize):
        size = psize
    return NvmeDevice(t, size=size, start_bytes=t.nodes.partition_start_bytes, placement=placement,
                      utilization=utilization, extent=psize)
