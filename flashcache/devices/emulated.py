"""The emulated FDP SSD as a device: an NVMe controller model over the emulator's FTL, with
the data in a sparse backing file.

STATUS: not wired and never run. It waits for the FTL of issue 4 (flashcache.emulator),
which does not exist yet; nothing imports this module and no test covers it. It is kept
as the design of the controller side, written against the ``Ftl`` protocol below.

Owns the controller side of the NVMe command set (Identify, Get Log Page 0x20-0x23, Get/Set
Features 0x1D/0x1E, Read, Write with DTYPE/DSPEC, Dataset Management, Flush, I/O Management
Receive/Send) built from flashcache.nvme's parsers and packers, so the cache reaches it
through the same NvmeDevice code as a real drive and cannot tell the two apart except by
name. The FTL (flashcache.emulator) only accounts where bytes would sit in NAND; the bytes
themselves live in the backing file. The surprise: an invalid placement identifier is not
an error: as the spec describes, the write lands on handle 0 and an "Invalid Placement
Identifier" event is logged.
"""
from __future__ import annotations

import os
import threading
import time
from typing import Any, Protocol, Sequence

from .. import nvme
from ..errors import DeviceError
from ..nvme.status import SCT_COMMAND_SPECIFIC, SCT_GENERIC
from .file import open_target


class Ftl(Protocol):
    """What the controller needs from the emulator's FTL (pages of ``page_bytes``)."""

    page_bytes: int
    exported_pages: int
    ru_pages: int
    nruh: int
    nrg: int

    def write(self, lpn: int, npages: int, ruh: int) -> None: ...
    def trim(self, lpn: int, npages: int) -> None: ...
    def ruh_update(self, ruh: int) -> int: ...            # pages left unwritten in the closed RU
    def ru_remaining(self, ruh: int) -> int: ...          # pages left in the handle's open RU
    def counters(self) -> tuple[int, int, int]: ...       # hbmw, mbmw, mbe in bytes
    def handle_types(self) -> list[int]: ...              # 1 initially, 2 persistently isolated
    def take_relocations(self) -> list[tuple[int, int]]: ...  # (lpn, npages) moved by GC since last call
    def save(self, path: str) -> None: ...


class _Status(Exception):
    def __init__(self, sct: int, sc: int):
        self.status = nvme.encode_status(sct, sc, dnr=True)


def _bad(sc: int, sct: int = SCT_GENERIC) -> _Status:
    return _Status(sct, sc)


INVALID_OPCODE, INVALID_FIELD, LBA_OUT_OF_RANGE, CMD_SEQ_ERROR = 0x01, 0x02, 0x80, 0x0C
INVALID_LOG_PAGE = 0x09


class EmulatedController:
    """An NVMe controller with one namespace (NSID 1) in endurance group 1 (a Transport)."""

    def __init__(self, data_path: str, ftl: Ftl, *, lba_size: int = 4096, fdp: bool = True,
                 format: bool = False, state_path: str | None = None, model: str = "flashcache emulated FDP SSD",
                 mdts: int = 8, clock=time.time):
        if lba_size not in (512, 4096):
            raise ValueError(f"emulated SSD LBA size {lba_size} must be 512 or 4096")
        if ftl.page_bytes % lba_size:
            raise ValueError(f"FTL page of {ftl.page_bytes} bytes is not a multiple of the LBA size {lba_size}")
        self.path = f"emulated:{data_path}"
        self.nsid = 1
        self.ftl = ftl
        self.lba_size = lba_size
        self.lba_shift = lba_size.bit_length() - 1
        self.lbas_per_page = ftl.page_bytes // lba_size
        self.nsze = ftl.exported_pages * self.lbas_per_page
        self.fdp = fdp
        self.state_path = state_path
        self._clock = clock
        self._lock = threading.Lock()
        self.fd, _, _ = open_target(data_path, self.nsze * lba_size, direct=False, fmt=format, block_size=lba_size)
        self.id_ctrl = nvme.IdentifyController(
            vid=0x1b36, ssvid=0x1af4, sn="FCEMU0001", mn=model, fr="1.0", mdts=mdts, ver=0x20000,
            ctratt=nvme.IdentifyController.CTRATT_FDPS if fdp else 0, oacs=0, lpa=0x20, endgidmax=1, nn=1, oncs=0x4)
        self.id_ns = nvme.IdentifyNamespace(
            nsze=self.nsze, ncap=self.nsze, nuse=self.nsze, nlbaf=0, flbas=0, dlfeat=1, endgid=1,
            lbafs=(nvme.LbaFormat(0, self.lba_shift, 0),))
        self.pids = list(range(ftl.nruh)) if fdp else []
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

    def close(self) -> None:
        if self.fd is not None:
            if self.state_path:
                self.ftl.save(self.state_path)
            os.close(self.fd)
            self.fd = None

    def _run(self, fn, cmd, buf) -> int:
        if self.fd is None:
            raise DeviceError(self.path, "emulated SSD used after close()")
        with self._lock:
            try:
                return fn(cmd, memoryview(buf).cast("B") if buf is not None else None)
            except _Status as st:
                nvme.check_status(st.status, self.path, nvme.describe(cmd))
                raise AssertionError("unreachable")  # pragma: no cover

    # -- admin ----------------------------------------------------------------------------------
    def _admin(self, cmd, buf) -> int:
        op = cmd.opcode
        if op == nvme.NVME_ADMIN_IDENTIFY:
            cns = cmd.cdw10 & 0xFF
            if cns == nvme.CNS_CONTROLLER:
                return self._out(buf, self.id_ctrl.pack())
            if cns == nvme.CNS_NAMESPACE:
                if cmd.nsid != self.nsid:
                    raise _bad(0x0B)   # Invalid Namespace or Format
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
                    raise _bad(0x29)         # FDP Disabled
                ph = f.cdw11 & 0xFFFF
                noet = (f.cdw11 >> 16) & 0xFF
                if ph >= len(self.pids):
                    raise _bad(0x2A)         # Invalid Placement Handle List
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
                raise _bad(0x29)             # FDP Disabled
            if req.lsi != 1:
                raise _bad(INVALID_FIELD)
        if req.lid == nvme.LID_FDP_CONFIGS:
            ruhs = tuple(nvme.FdpRuhDescriptor(t) for t in self.ftl.handle_types())
            cfg = nvme.FdpConfigDescriptor(fdpa=nvme.encode_fdpa(rgif=max(0, (self.ftl.nrg - 1).bit_length())),
                                           nrg=self.ftl.nrg, maxpids=len(self.pids) - 1, nnss=1,
                                           runs=self.ftl.ru_pages * self.ftl.page_bytes, erutl=0, ruhs=ruhs,
                                           vendor=b"")
            return nvme.FdpConfigsLog((cfg,)).pack()
        if req.lid == nvme.LID_RUH_USAGE:
            return nvme.RuhUsageLog(tuple(nvme.RuhUsageDescriptor(1) for _ in self.pids)).pack()
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
            raise _bad(0x0B)
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
            ruh = self._handle_for(cmd)
            os.pwrite(self.fd, buf, off)
            first = slba // self.lbas_per_page
            last = (slba + nlb - 1) // self.lbas_per_page
            self.ftl.write(first, last - first + 1, ruh)
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
                raise _bad(0x29)
            per_page = self.lbas_per_page
            st = nvme.RuhStatus(tuple(nvme.RuhStatusDescriptor(pid, pid, 0, self.ftl.ru_remaining(pid) * per_page)
                                      for pid in self.pids))
            return self._out(buf, st.pack(buf.nbytes))
        if op == nvme.NVME_CMD_IO_MGMT_SEND:
            req = nvme.decode_io_mgmt(cmd)
            if req.mo != nvme.IO_MGMT_SEND_MO_RUH_UPDATE:
                raise _bad(INVALID_FIELD)
            if not self.fdp:
                raise _bad(0x29)
            pids = nvme.parse_ruh_update_pids(bytes(buf), req.npids)
            if any(p >= len(self.pids) for p in pids):
                raise _bad(0x2A)
            for p in pids:
                left = self.ftl.ruh_update(p)
                if left and nvme.FDP_EVENT_RU_NOT_FULLY_WRITTEN in self._events_enabled.get(p, ()):
                    self._event(True, nvme.FDP_EVENT_RU_NOT_FULLY_WRITTEN, p)
            return 0
        raise _bad(INVALID_OPCODE)

    def _handle_for(self, cmd) -> int:
        if not self.fdp or cmd.dtype != nvme.DTYPE_DATA_PLACEMENT:
            return 0
        pid = cmd.dspec
        if pid < len(self.pids):
            return pid
        # spec: an invalid placement identifier falls back to the default handle, with an event
        if nvme.FDP_EVENT_INVALID_PID in self._events_enabled.get(0, ()):
            self._event(True, nvme.FDP_EVENT_INVALID_PID, pid)
        return 0

    def _event(self, host: bool, typ: int, pid: int, type_specific: bytes = bytes(16)) -> None:
        ev = nvme.FdpEvent(type=typ, flags=0b011, pid=pid, timestamp_ms=int(self._clock() * 1000),
                           timestamp_attr=0, nsid=self.nsid, type_specific=type_specific, rgid=0, ruhid=0,
                           vendor=bytes(24))
        (self._host_events if host else self._ctrl_events).append(ev)
        del (self._host_events if host else self._ctrl_events)[:-nvme.FDP_EVENTS_MAX]

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
