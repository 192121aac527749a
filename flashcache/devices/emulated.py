"""The emulated FDP SSD as a device: an NVMe controller model over the emulator's FTL, with
the data in a sparse backing file.

Owns the controller side of the NVMe command set (Identify, Get Log Page 0x20-0x23, Get/Set
Features 0x1D/0x1E, Read, Write with DTYPE/DSPEC, Dataset Management, Flush, I/O Management
Receive/Send) built from flashcache.nvme's parsers and packers, so the cache reaches it
through the same NvmeDevice code as a real drive and cannot tell the two apart except by
name. The FTL (flashcache.emulator) only accounts where bytes would sit in NAND; the bytes
themselves live in the backing file, and the FTL's state in ``<file>.ftl`` beside it; the
lock on the backing file (devices/owner.py) covers both, so the state is read or dropped
only by the file's owner. The surprise: an invalid placement identifier is not an error:
as the spec describes, the write lands on handle 0 and an "Invalid Placement Identifier"
event is logged.
"""
from __future__ import annotations

import json
import logging
import os
import threading
import time
import types
from typing import Any, Sequence

import numpy as np

from .. import forksafe, nvme
from ..emulator import Ftl, FtlError, Geometry
from ..errors import DeviceError, ForkedError, FormatError
from ..nvme.status import SCT_COMMAND_SPECIFIC, SCT_GENERIC
from .base import WafSnapshot
from . import owner
from .file import Reader, open_target
from .nvme import NvmeDevice

log = logging.getLogger("flashcache.devices.emulated")
RELOCATION_LOG = 1 << 14      # GC relocations kept for "media reallocated" events


class _Status(Exception):
    def __init__(self, sct: int, sc: int):
        self.status = nvme.encode_status(sct, sc, dnr=True)


def _bad(sc: int, sct: int = SCT_GENERIC) -> _Status:
    return _Status(sct, sc)


INVALID_OPCODE, INVALID_FIELD, LBA_OUT_OF_RANGE, CMD_SEQ_ERROR = 0x01, 0x02, 0x80, 0x0C
INVALID_LOG_PAGE, CAPACITY_EXCEEDED, INVALID_NS = 0x09, 0x81, 0x0B
FDP_DISABLED, INVALID_PH_LIST = 0x29, 0x2A


class EmulatedController:
    """An NVMe controller with one namespace (NSID 1) in endurance group 1 (a Transport),
    over ``fd``, the backing file open_emulated opened and locked (closed by close())."""

    def __init__(self, data_path: str, ftl: Ftl, *, fd: int, state_path: str | None = None,
                 model: str = "flashcache emulated FDP SSD", mdts: int = 8, clock=time.time):
        g = ftl.geometry
        self.path = f"emulated:{data_path}"
        self.data_path = data_path
        self.nsid = 1
        self.ftl = ftl
        self.lba_size = g.lba_size
        self.lba_shift = g.lba_size.bit_length() - 1
        self.lbas_per_page = ftl.page_bytes // g.lba_size
        self.nsze = ftl.exported_pages * self.lbas_per_page
        self.fdp = g.fdp
        self.state_path = state_path
        self._clock = clock
        self._lock = threading.Lock()
        self.fd: int | None = fd
        self._forked = False
        self._pid = forksafe.track(self)
        # CTRATT says FDP is supported either way; a conventional drive is one whose
        # endurance group has FDP disabled (Get Features 0x1D: FDPE = 0).
        self.id_ctrl = nvme.IdentifyController(
            vid=0x1b36, ssvid=0x1af4, sn="FCEMU0001", mn=model, fr="1.0", mdts=mdts, ver=0x20000,
            ctratt=nvme.IdentifyController.CTRATT_FDPS, oacs=0, lpa=0x20, endgidmax=1, nn=1, oncs=0x4)
        self.id_ns = nvme.IdentifyNamespace(
            nsze=self.nsze, ncap=self.nsze, nuse=self.nsze, nlbaf=0, flbas=0, dlfeat=1, endgid=1,
            lbafs=(nvme.LbaFormat(0, self.lba_shift, 0),))
        # Placement identifiers, PH-major as QEMU lists them: pid = rg << (16 - rgif) | ph
        self.rgif = max(0, (ftl.nrg - 1).bit_length())
        self.pids: list[int] = []
        self._pid_to: dict[int, tuple[int, int]] = {}
        if self.fdp:
            for ph in range(ftl.nruh):
                for rg in range(ftl.nrg):
                    pid = (rg << (16 - self.rgif)) | ph if self.rgif else ph
                    self.pids.append(pid)
                    self._pid_to[pid] = (rg, ph)
        self._ring = None          # made on the first batched read (False: io_uring unavailable)
        self._events_enabled: dict[int, set[int]] = {}
        self._host_events: list[nvme.FdpEvent] = []
        self._ctrl_events: list[nvme.FdpEvent] = []

    # -- transport API ----------------------------------------------------------------------
    def max_transfer_bytes(self, id_ctrl: Any) -> int:
        return id_ctrl.max_transfer_bytes() or (1 << 20)

    def admin(self, cmd: "nvme.NvmeCommand", buf: Any = None) -> int:
        return self._run(self._admin, cmd, buf)

    def io(self, cmd: "nvme.NvmeCommand", buf: Any = None) -> int:
        return self._run(self._io, cmd, buf)

    def io_many(self, items: Sequence[tuple["nvme.NvmeCommand", Any]]) -> list[int]:
        return [self.io(c, b) for c, b in items]

    # -- the fast path (NvmeDevice uses it for plain reads and writes) -----------------------
    def fits(self, nbytes: Sequence[int]) -> bool:
        return self.fd is not None and bool(nbytes)

    def rw(self, write: bool, slbas: Sequence[int], nbytes: Sequence[int], pids: Sequence[int],
           lba_shift: int, datas=None) -> list[bytes] | None:
        """Reads or writes as numbers instead of command objects: the same checks, FTL
        accounting, statuses and events as Read/Write commands (DTYPE 2 with DSPEC = pid
        when pid >= 0), without building an NvmeCommand per I/O."""
        out: list[bytes] | None = None if write else []
        if self._forked:
            self._refuse_forked("write" if write else "read")
        with self._lock:
            if self.fd is None:
                raise DeviceError(self.path, "emulated SSD used after close()")
            if not write and len(slbas) > 1 and self._ring is not False:
                return self._read_batch(slbas, nbytes)
            for k, (slba, n) in enumerate(zip(slbas, nbytes)):
                nlb = n >> self.lba_shift
                what = f"{'Write' if write else 'Read'} of {nlb} blocks at LBA {slba}"
                self._check_range(slba, n, what)
                off = slba << self.lba_shift
                if not write:
                    out.append(self._pread(off, n))
                    continue
                pid = pids[k]
                rg, ph = self._resolve_pid(pid) if pid >= 0 and self.fdp else (0, 0)
                try:
                    self._program(slba, nlb, rg, ph)
                except _Status as st:
                    nvme.check_status(st.status, self.path, what)
                os.pwrite(self.fd, datas[k], off)
        return out

    @property
    def lock(self) -> threading.Lock:
        """The lock held over each command (a C write path holds it over its accounting
        and write too: results.c's ``Reader.set_program``)."""
        return self._lock

    def placement_table(self) -> dict[int, tuple[int, int]]:
        """{placement identifier: (reclaim group, placement handle)} (a copy)."""
        return dict(self._pid_to)

    def _check_range(self, slba: int, n: int, what: str) -> None:
        nlb = n >> self.lba_shift
        if n & (self.lba_size - 1) or not nlb or slba + nlb > self.nsze:
            st = _bad(INVALID_FIELD if (n & (self.lba_size - 1) or not nlb) else LBA_OUT_OF_RANGE)
            nvme.check_status(st.status, self.path, what)

    def _read_batch(self, slbas: Sequence[int], nbytes: Sequence[int]) -> list[bytes]:
        """Several reads of the backing file in one io_uring submission (the caller holds
        the lock). Without a ring (io_uring unavailable here) ``_ring`` becomes False and
        reads go one pread at a time, as said once in the log."""
        for slba, n in zip(slbas, nbytes):
            self._check_range(slba, n, f"Read of {n >> self.lba_shift} blocks at LBA {slba}")
        if self._ring is None:
            from ..errors import UringUnavailableError
            from ..uring import Ring
            try:
                self._ring = Ring(64, coop_taskrun=True)
            except UringUnavailableError as e:
                log.warning("%s: batched reads without io_uring (%s): one pread each", self.path, e)
                self._ring = False
                return [self._pread(slba << self.lba_shift, n) for slba, n in zip(slbas, nbytes)]
        from ..uring import address_of
        bufs = [bytearray(n) for n in nbytes]
        res = self._ring.rw_batch(False, self.fd, [address_of(b) for b in bufs], list(nbytes),
                                  [slba << self.lba_shift for slba in slbas])
        out = []
        for b, r, slba, n in zip(bufs, res, slbas, nbytes):
            if r < 0:
                raise DeviceError(self.path, f"reading the backing file at {slba << self.lba_shift} failed", -r)
            out.append(bytes(b) if r == n else bytes(b[:r]) + self._pread((slba << self.lba_shift) + r, n - r))
        return out

    def _pread(self, off: int, n: int) -> bytes:
        data = os.pread(self.fd, n, off)
        return data if len(data) == n else data + bytes(n - len(data))   # sparse tail: zeros

    def _inherited(self) -> None:
        """In a forked child: refuse every command, and close() does nothing (the FTL
        state is the parent's to save); let go of the parent's file without unlocking."""
        self._forked = True
        owner.let_go(self.fd)

    def _refuse_forked(self, what: str) -> None:
        raise ForkedError(self.path, what, "emulated SSD", self._pid)

    def close(self) -> None:
        if self._forked:
            return
        if self._ring:
            self._ring.close()
        self._ring = None
        if self.fd is not None:
            if self.state_path:
                save_ftl(self.ftl, self.state_path)
            os.close(self.fd)
            self.fd = None

    def _run(self, fn, cmd, buf) -> int:
        if self._forked:                          # before the lock: a parent thread may have held it
            self._refuse_forked(nvme.describe(cmd))
        if self.fd is None:
            raise DeviceError(self.path, "emulated SSD used after close()")
        with self._lock:
            try:
                return fn(cmd, memoryview(buf).cast("B") if buf is not None else None)
            except _Status as st:
                nvme.check_status(st.status, self.path, nvme.describe(cmd))
                raise AssertionError("unreachable") from st  # pragma: no cover

    # -- admin ----------------------------------------------------------------------------------
    def _admin(self, cmd, buf) -> int:
        op = cmd.opcode
        if op == nvme.NVME_ADMIN_IDENTIFY:
            cns = cmd.cdw10 & 0xFF
            if cns == nvme.CNS_CONTROLLER:
                return self._out(buf, self.id_ctrl.pack())
            if cns == nvme.CNS_NAMESPACE:
                if cmd.nsid != self.nsid:
                    raise _bad(INVALID_NS)
                return self._out(buf, self.id_ns.pack())
            raise _bad(INVALID_FIELD)
        if op == nvme.NVME_ADMIN_GET_LOG_PAGE:
            req = nvme.decode_get_log_page(cmd)
            page = self._log(req)
            self._out(buf, page[req.lpo:req.lpo + req.length].ljust(min(req.length, len(buf)), b"\0"))
            return 0
        if op == nvme.NVME_ADMIN_GET_FEATURES:
            f = nvme.decode_features(cmd)
            if f.fid == nvme.FID_FDP:
                if (f.cdw11 & 0xFFFF) != 1:
                    raise _bad(INVALID_FIELD)
                return nvme.FdpFeature(self.fdp, 0).to_dw0()
            if f.fid == nvme.FID_FDP_EVENTS:
                ph = f.cdw11 & 0xFFFF
                on = self._events_enabled.get(ph, set())
                types = sorted(nvme.FDP_EVENT_NAMES)
                descs = [nvme.FdpEventDescriptor(t, t in on) for t in types]
                self._out(buf, nvme.FdpEventDescriptor.pack_list(descs))
                return len(descs)
            raise _bad(INVALID_FIELD)
        if op == nvme.NVME_ADMIN_SET_FEATURES:
            f = nvme.decode_features(cmd)
            if f.fid == nvme.FID_FDP:
                raise _bad(CMD_SEQ_ERROR)   # FDP is fixed at format time, as on QEMU
            if f.fid == nvme.FID_FDP_EVENTS:
                if not self.fdp:
                    raise _bad(FDP_DISABLED)
                ph = f.cdw11 & 0xFFFF
                noet = (f.cdw11 >> 16) & 0xFF
                if ph >= self.ftl.nruh:
                    raise _bad(INVALID_PH_LIST)
                types = set(bytes(buf[:noet])) if buf is not None else set()
                cur = self._events_enabled.setdefault(ph, set())
                if f.cdw12 & 1:
                    cur |= types
                else:
                    cur -= types
                return 0
            raise _bad(INVALID_FIELD)
        raise _bad(INVALID_OPCODE)

    def _log(self, req) -> bytes:
        if req.lid in (nvme.LID_FDP_CONFIGS, nvme.LID_RUH_USAGE, nvme.LID_FDP_STATS, nvme.LID_FDP_EVENTS):
            if not self.fdp:
                raise _bad(FDP_DISABLED)
            if req.lsi != 1:
                raise _bad(INVALID_FIELD)
        if req.lid == nvme.LID_FDP_CONFIGS:
            ruhs = tuple(nvme.FdpRuhDescriptor(t) for t in self.ftl.handle_types())
            cfg = nvme.FdpConfigDescriptor(fdpa=nvme.encode_fdpa(rgif=self.rgif),
                                           nrg=self.ftl.nrg, maxpids=len(self.pids) - 1, nnss=1,
                                           runs=self.ftl.ru_pages * self.ftl.page_bytes, erutl=0, ruhs=ruhs,
                                           vendor=b"")
            return nvme.FdpConfigsLog((cfg,)).pack()
        if req.lid == nvme.LID_RUH_USAGE:
            # RUHA: 1 = the handle is used by a namespace (ours, through all its handles)
            return nvme.RuhUsageLog(tuple(nvme.RuhUsageDescriptor(1) for _ in range(self.ftl.nruh))).pack()
        if req.lid == nvme.LID_FDP_STATS:
            h, m, e = self.ftl.counters()
            return nvme.FdpStatsLog(h, m, e).pack()
        if req.lid == nvme.LID_FDP_EVENTS:
            self._collect_relocations()
            evs = self._host_events if req.lsp & 1 else self._ctrl_events
            return nvme.FdpEventsLog(tuple(evs[-nvme.FDP_EVENTS_MAX:])).pack(nvme.FDP_EVENTS_LOG_BYTES)
        raise _bad(INVALID_LOG_PAGE, SCT_COMMAND_SPECIFIC)

    # -- I/O --------------------------------------------------------------------------------------
    def _io(self, cmd, buf) -> int:
        op = cmd.opcode
        if cmd.nsid != self.nsid:
            raise _bad(INVALID_NS)
        if op in (nvme.NVME_CMD_READ, nvme.NVME_CMD_WRITE):
            slba, nlb = cmd.slba, cmd.nlb
            if slba + nlb > self.nsze:
                raise _bad(LBA_OUT_OF_RANGE)
            n = nlb << self.lba_shift
            if buf is None or buf.nbytes != n:
                raise _bad(INVALID_FIELD)
            off = slba << self.lba_shift
            if op == nvme.NVME_CMD_READ:
                got = os.preadv(self.fd, [buf], off)
                if got != n:
                    buf[got:] = bytes(n - got)
                return 0
            rg, ph = self._handle_for(cmd)
            self._program(slba, nlb, rg, ph)
            os.pwrite(self.fd, buf, off)
            return 0
        if op == nvme.NVME_CMD_DSM:
            nr = (cmd.cdw10 & 0xFF) + 1
            if not cmd.cdw11 & (1 << 2):
                return 0                      # only deallocate (AD) does anything
            for rng in nvme.parse_dsm_ranges(bytes(buf), nr):
                slba, nlb = rng.slba, rng.nlb
                if slba + nlb > self.nsze:
                    raise _bad(LBA_OUT_OF_RANGE)
                # whole pages only: a partly deallocated page keeps its other blocks' data
                p0 = -(-slba // self.lbas_per_page)
                p1 = (slba + nlb) // self.lbas_per_page
                if p1 > p0:
                    self.ftl.trim(p0, p1 - p0)
                    _punch(self.fd, p0 * self.ftl.page_bytes, (p1 - p0) * self.ftl.page_bytes)
            return 0
        if op == nvme.NVME_CMD_FLUSH:
            os.fdatasync(self.fd)
            return 0
        if op == nvme.NVME_CMD_IO_MGMT_RECV:
            req = nvme.decode_io_mgmt(cmd)
            if req.mo != nvme.IO_MGMT_RECV_MO_RUH_STATUS:
                raise _bad(INVALID_FIELD)
            if not self.fdp:
                raise _bad(FDP_DISABLED)
            per_page = self.lbas_per_page
            st = nvme.RuhStatus(tuple(
                nvme.RuhStatusDescriptor(pid, ph, 0, self.ftl.ru_remaining(ph, rg) * per_page)
                for pid, (rg, ph) in self._pid_to.items()))
            return self._out(buf, st.pack(buf.nbytes))
        if op == nvme.NVME_CMD_IO_MGMT_SEND:
            req = nvme.decode_io_mgmt(cmd)
            if req.mo != nvme.IO_MGMT_SEND_MO_RUH_UPDATE:
                raise _bad(INVALID_FIELD)
            if not self.fdp:
                raise _bad(FDP_DISABLED)
            pids = nvme.parse_ruh_update_pids(bytes(buf), req.npids)
            if any(p not in self._pid_to for p in pids):
                raise _bad(INVALID_PH_LIST)
            for p in pids:
                rg, ph = self._pid_to[p]
                left = self.ftl.ruh_update(ph, rg)
                if left and nvme.FDP_EVENT_RU_NOT_FULLY_WRITTEN in self._events_enabled.get(ph, ()):
                    self._event(True, nvme.FDP_EVENT_RU_NOT_FULLY_WRITTEN, p, rg=rg, ruhid=ph)
            return 0
        raise _bad(INVALID_OPCODE)

    def _handle_for(self, cmd) -> tuple[int, int]:
        """(reclaim group, placement handle) of a write."""
        if not self.fdp or cmd.dtype != nvme.DTYPE_DATA_PLACEMENT:
            return 0, 0
        return self._resolve_pid(cmd.dspec)

    def _resolve_pid(self, pid: int) -> tuple[int, int]:
        to = self._pid_to.get(pid)
        if to is not None:
            return to
        # spec: an invalid placement identifier falls back to the default handle, with an event
        if nvme.FDP_EVENT_INVALID_PID in self._events_enabled.get(0, ()):
            self._event(True, nvme.FDP_EVENT_INVALID_PID, pid)
        return 0, 0

    def _program(self, slba: int, nlb: int, rg: int, ph: int) -> None:
        """Account a write of ``nlb`` blocks at ``slba`` in the FTL (whole mapping units)."""
        first = slba // self.lbas_per_page
        last = (slba + nlb - 1) // self.lbas_per_page
        try:
            self.ftl.write(first, last - first + 1, ph, rg)
        except FtlError as e:
            log.error("%s: %s", self.path, e)
            raise _bad(CAPACITY_EXCEEDED) from None

    def _event(self, host: bool, typ: int, pid: int, type_specific: bytes = bytes(16), *,
               rg: int = 0, ruhid: int = 0) -> None:
        ev = nvme.FdpEvent(type=typ, flags=nvme.FdpEvent.PIV | nvme.FdpEvent.NSIDV, pid=pid,
                           timestamp_ms=int(self._clock() * 1000), timestamp_attr=0, nsid=self.nsid,
                           type_specific=type_specific, rgid=rg, ruhid=ruhid, vendor=bytes(24))
        evs = self._host_events if host else self._ctrl_events
        evs.append(ev)
        del evs[:-nvme.FDP_EVENTS_MAX]

    def _collect_relocations(self) -> None:
        moved = self.ftl.take_relocations()
        if not any(nvme.FDP_EVENT_MEDIA_REALLOCATED in s for s in self._events_enabled.values()):
            return
        for lpn, npages in moved:
            area = nvme.pack_media_reallocated(npages * self.lbas_per_page, lpn * self.lbas_per_page)
            self._event(False, nvme.FDP_EVENT_MEDIA_REALLOCATED, 0, area)

    @staticmethod
    def _out(buf, data: bytes) -> int:
        if buf is not None:
            n = min(buf.nbytes, len(data))
            buf[:n] = data[:n]
        return 0


def _punch(fd: int, offset: int, length: int) -> None:
    from .file import FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE, _libc
    _libc.fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, length)


class EmulatedDevice(NvmeDevice):
    """The emulated FDP SSD as a Device: NvmeDevice over an EmulatedController.

    Everything goes through NVMe commands, as on a real drive; two things are added for
    experiments: ``ftl`` (the emulator's FTL, for per-handle counters) and, when FDP is
    disabled (a conventional SSD), WAF read straight from the FTL, since a drive in that
    state has no FDP Statistics log to read it from.
    """

    kind = "emulated"

    def __init__(self, controller: EmulatedController, *, placement: bool = True, size: int | None = None,
                 utilization: float = 1.0):
        self.controller = controller
        self.ftl = controller.ftl
        super().__init__(controller, placement=placement, kind="emulated", size=size, utilization=utilization)
        self._c_reads = None
        if Reader is not None:
            # Reads need no FTL accounting: the checks, a pread of the backing file and the
            # counters in one C call (BigHash's core reads buckets through it into its own
            # buffer), with the NVMe Read path as the fallback that says what is wrong.
            # Experiments spend a third of their time in reads otherwise.
            self._c_reads = Reader(controller.fd, self.size, self._bs_mask, self.max_io,
                                   types.MethodType(NvmeDevice.read, self), 0)
            self.read = self._c_reads.read
            self._c_reads.map_reads()         # reads of up to a page: no system call each
            # Writes too: the same checks, FTL accounting (the C fc_ftl_write, with the
            # write's placement handle, under the controller's lock, as EmulatedController.rw
            # does), pwrite and counters in one C call, the class's write (the whole NVMe
            # Write path) being the fallback for anything unusual and the error it names.
            # A server demoting items from DRAM spent a tenth of its loop thread in the
            # five Python layers of that path (tools/bench_server.py).
            fn, state = controller.ftl.write_hook()
            self._c_reads.set_write(types.MethodType(type(self).write, self), self._streams)
            self._c_reads.set_program(fn, state, controller.ftl, controller.lba_shift, controller.lbas_per_page,
                                      controller.placement_table() if controller.fdp else None,
                                      controller.lock)
            self.write = self._c_reads.write

    def _probe_waf(self) -> str | None:
        if not self.controller.fdp:
            return None          # the FTL's own counters (see waf_snapshot)
        return super()._probe_waf()

    def spare_bytes(self) -> int:
        """Physical bytes the drive does not export to the cache: its over-provisioning plus
        the exported bytes past the cache's share (``utilization``, deallocated at format)."""
        g = self.ftl.geometry
        return g.physical_pages * g.page_bytes - self.size

    def waf_source(self) -> str:
        return ("FDP Statistics log (LID 0x22)" if self.controller.fdp
                else "emulator FTL counters (FDP disabled: a real drive would have no FDP log)")

    def waf_snapshot(self) -> WafSnapshot:
        if self.controller.fdp:
            return super().waf_snapshot()
        self._check_open("waf_snapshot")
        h, m, e = self.ftl.counters()
        return WafSnapshot(hbmw=h, mbmw=m, mbe=e)

    def async_reader(self, depth: int = 128):
        """Reads need no FTL accounting, so they go straight to the backing file through a
        ring of their own (the controller's checks: the device's bounds and alignment)."""
        return self._ring_reader(self.controller.fd, depth)

    def async_unavailable_reason(self) -> str | None:
        return None

    def inline_read_reason(self) -> str | None:
        # The emulated SSD models placement and WAF, not latency: its data is a buffered
        # (page-cache) backing file, so a read is a memory copy. Through io_uring the same
        # copy costs a submission, an eventfd wake-up and a loop round trip in Python
        # (~55 us per flash-hit AsyncCache get against ~8 us inline, 32 tasks, no sets).
        return "emulated SSD: a read is a copy from its backing file's page cache"

    def info(self) -> dict[str, Any]:
        d = super().info()
        d["emulator"] = self.ftl.geometry.describe()
        d["waf_source"] = self.waf_source()
        return d

    def _let_go(self) -> None:
        r = self._c_reads
        if r is not None:
            r.close()                         # in a forked child: every read to the fallback, which refuses

    def close(self) -> None:
        r = self._c_reads
        if r is not None and not self._closed:
            r.close()                         # later reads fall back, and are refused...
            while r.busy:
                time.sleep(0.0001)            # ...and those in the kernel finish before the fd closes
            r.unmap()                         # the mapping holds the file, and the lock
        super().close()

    def stats(self) -> dict[str, Any]:
        st = super().stats()
        st["emulator"] = self.ftl.stats()
        return st


def save_ftl(ftl: Ftl, path: str) -> None:
    """Write the FTL's state to ``path`` atomically (a temporary file, fsync, rename)."""
    meta, arrays = ftl.state()
    tmp = f"{path}.tmp"
    with open(tmp, "wb") as f:
        np.savez(f, meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8), **arrays)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load_ftl(path: str, geometry: Geometry, **kw: Any) -> Ftl:
    """The FTL saved at ``path`` (see ``save_ftl``); FormatError when it cannot continue."""
    try:
        with np.load(path) as z:
            meta = json.loads(bytes(z["meta"]).decode())
            arrays = {k: z[k] for k in z.files if k != "meta"}
    except (OSError, ValueError, KeyError, json.JSONDecodeError) as e:
        raise FormatError(f"{path}: not a readable emulated-SSD state file ({e}); "
                          "delete it to start the emulated SSD's history afresh") from None
    return Ftl.restore(meta, arrays, geometry, where=path, **kw)


def state_path_for(data_path: str) -> str:
    """Where the emulated SSD whose data is in ``data_path`` keeps its FTL state."""
    return data_path + ".ftl"


def open_emulated(path: str, geometry: Geometry, *, format: bool = False, placement: bool = True,
                  debug: bool = False, size: int | None = None, utilization: float = 1.0) -> EmulatedDevice:
    """Open (creating if needed) an emulated FDP SSD whose data lives in sparse file ``path``
    and whose FTL state persists in ``path + ".ftl"`` across close and open. The device's
    ``size`` (what the cache uses) is ``size`` (None: the whole exported capacity) times
    ``utilization``; the rest stays spare."""
    state = state_path_for(path)
    existed = os.path.exists(path)
    ftl: Ftl | None = None

    def claim() -> bool:
        """Under the backing file's lock: this SSD's FTL state, restored or started afresh;
        whether the file is known to be this SSD's own (then whatever it holds is the
        drive's content, not foreign data to protect)."""
        nonlocal ftl
        if existed and not format and os.path.exists(state):
            ftl = load_ftl(state, geometry, debug=debug, relocation_log=RELOCATION_LOG)
            log.info("%s: emulated SSD history restored from %s (%d bytes written by the host so far)",
                     path, state, ftl.counters()[0])
            return False
        if existed and not format:
            log.warning("%s: no emulated-SSD state at %s; the FTL starts empty (its write history is lost, "
                        "the data is kept)", path, state)
        ftl = Ftl(geometry, debug=debug, relocation_log=RELOCATION_LOG)
        if os.path.exists(state):
            os.unlink(state)
        return True

    fd, _, _ = open_target(path, geometry.exported_pages * geometry.page_bytes, direct=False, fmt=format,
                           block_size=geometry.lba_size, claim=claim)
    try:
        ctrl = EmulatedController(path, ftl, fd=fd, state_path=state)
    except BaseException:
        os.close(fd)
        raise
    try:
        return EmulatedDevice(ctrl, placement=placement, size=size, utilization=utilization)
    except BaseException:
        ctrl.close()
        raise
