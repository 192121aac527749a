"""The NVMe device: the Device protocol in NVMe commands, with FDP placement and WAF.

Owns geometry from Identify, FDP discovery (CTRATT, ENDGID, the FDP feature, the
configuration log, RUH Status), streams -> placement identifiers, MDTS splitting, trim as
Dataset Management, and WAF from the FDP Statistics log. It talks to a *transport* that
carries NVMe commands: ``PassthroughTransport`` (ioctl + io_uring URING_CMD on a real
/dev/ngXnY) or the emulated SSD's controller, so both run this same code. The surprise:
placement can be off on a perfectly good FDP drive (FDP disabled in the endurance group,
too few handles, no permission to read the configuration); every such case is named in
``stream.placement``, the log and stats, and writes then carry no directive at all.
"""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import Any, Protocol, Sequence

from .. import nvme
from ..errors import DeviceError, NvmeError
from .base import BaseDevice, PlacementStream, WafSnapshot, WafUnavailableError

log = logging.getLogger("flashcache.devices.nvme")

RUHT_NAMES = {1: "initially isolated", 2: "persistently isolated"}


class Transport(Protocol):
    """Carries NVMe commands to a controller and namespace.

    ``admin``/``io`` run one command synchronously on ``buf`` (data in or out) and return
    completion DW0, raising NvmeError for a non-zero status and DeviceError for an OS
    error. ``io_many`` runs a batch of I/O commands in one submission where it can.
    """

    path: str
    nsid: int

    def admin(self, cmd: "nvme.NvmeCommand", buf: Any = None) -> int: ...
    def io(self, cmd: "nvme.NvmeCommand", buf: Any = None) -> int: ...
    def io_many(self, items: Sequence[tuple["nvme.NvmeCommand", Any]]) -> list[int]: ...
    def max_transfer_bytes(self, id_ctrl: Any) -> int: ...
    def close(self) -> None: ...


@dataclass
class FdpInfo:
    """What FDP discovery found. ``placement_off`` is None when placement works."""

    supported: bool = False
    enabled: bool | None = None
    endgid: int = 0
    config_index: int | None = None
    rgif: int | None = None
    nrg: int | None = None
    nruh: int | None = None
    runs_bytes: int | None = None
    ruh_types: list[str] = field(default_factory=list)
    pids: list[int] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    placement_off: str | None = "not probed"


# -- commands as functions of a transport (the CLI uses these without a whole device) ----

def admin_buf(t: Transport, cmd: "nvme.NvmeCommand", length: int) -> bytes:
    buf = bytearray(length)
    t.admin(cmd, buf)
    return bytes(buf)


def get_log(t: Transport, lid: int, length: int, *, lsi: int = 0, lsp: int = 0, nsid: int = 0,
            offset: int = 0) -> bytes:
    """Get Log Page (admin 0x02) of ``length`` bytes."""
    return admin_buf(t, nvme.get_log_page(lid, length, nsid=nsid, lsp=lsp, lsi=lsi, lpo=offset), length)


def get_log_sized(t: Transport, lid: int, header_len: int, size_of, *, lsi: int, lsp: int = 0) -> bytes:
    """Read a log's header, then the whole log at the size the header gives."""
    head = get_log(t, lid, header_len, lsi=lsi, lsp=lsp)
    total = size_of(head)
    return get_log(t, lid, total, lsi=lsi, lsp=lsp) if total > header_len else head


def read_configs(t: Transport, endgid: int) -> "nvme.FdpConfigsLog":
    return nvme.FdpConfigsLog.parse(get_log_sized(t, nvme.LID_FDP_CONFIGS, 16,
                                                  nvme.FdpConfigsLog.size_from_header, lsi=endgid))


def read_usage(t: Transport, endgid: int) -> "nvme.RuhUsageLog":
    return nvme.RuhUsageLog.parse(get_log_sized(t, nvme.LID_RUH_USAGE, 8,
                                                nvme.RuhUsageLog.size_from_header, lsi=endgid))


def read_stats(t: Transport, endgid: int) -> "nvme.FdpStatsLog":
    return nvme.FdpStatsLog.parse(get_log(t, nvme.LID_FDP_STATS, 64, lsi=endgid))


def read_events(t: Transport, endgid: int, host: bool = True) -> "nvme.FdpEventsLog":
    return nvme.FdpEventsLog.parse(get_log(t, nvme.LID_FDP_EVENTS, nvme.FDP_EVENTS_LOG_BYTES,
                                           lsi=endgid, lsp=1 if host else 0))


def read_fdp_feature(t: Transport, endgid: int) -> "nvme.FdpFeature":
    return nvme.FdpFeature.from_dw0(t.admin(nvme.get_features_fdp(endgid)))


def read_ruh_status(t: Transport) -> "nvme.RuhStatus":
    """I/O Management Receive, RUH Status: the header for NRUHSD, then every descriptor."""
    head = bytearray(16)
    t.io(nvme.io_mgmt_recv_ruh_status(t.nsid, 16), head)
    n = nvme.RuhStatus.count_from_header(bytes(head))
    buf = bytearray(16 + 32 * n)
    t.io(nvme.io_mgmt_recv_ruh_status(t.nsid, len(buf)), buf)
    return nvme.RuhStatus.parse(bytes(buf))


def ruh_update(t: Transport, pids: Sequence[int]) -> None:
    """I/O Management Send, RUH Update: move each handle to a fresh reclaim unit."""
    data = bytearray(nvme.pack_ruh_update_pids(pids))
    t.io(nvme.io_mgmt_send_ruh_update(t.nsid, len(pids), len(data)), data)


def set_fdp_events(t: Transport, pid: int, event_types: Sequence[int], enable: bool = True) -> None:
    """Set Features 0x1E (FDP Events) for one placement handle."""
    t.admin(nvme.set_features_fdp_events(t.nsid, pid, len(event_types), enable),
            bytearray(nvme.pack_fdp_event_types(event_types)))


class NvmeDevice(BaseDevice):
    """A Device over NVMe commands (see the module docstring)."""

    kind = "nvme"

    def __init__(self, transport: Transport, *, size: int | None = None, start_bytes: int = 0,
                 placement: bool = True, kind: str | None = None, utilization: float = 1.0,
                 extent: int | None = None):
        self.transport = transport
        if kind:
            self.kind = kind
        self._lock = threading.Lock()
        try:
            self.id_ctrl = nvme.IdentifyController.parse(admin_buf(transport, nvme.identify_controller(), 4096))
            self.id_ns = nvme.IdentifyNamespace.parse(
                admin_buf(transport, nvme.identify_namespace(transport.nsid), 4096))
        except BaseException:
            transport.close()
            raise
        self.lba_size = self.id_ns.lba_size
        self._lba_shift = self.lba_size.bit_length() - 1
        ns_bytes = self.id_ns.nsze * self.lba_size
        if start_bytes % self.lba_size:
            transport.close()
            raise DeviceError(transport.path, f"partition start {start_bytes} is not a multiple of the LBA size {self.lba_size}")
        avail = ns_bytes - start_bytes
        if extent is not None:            # a partition: never past its end
            avail = min(avail, extent)
        if size is not None and size > avail:
            transport.close()
            raise DeviceError(transport.path, f"device.size {size} is larger than the namespace ({avail} bytes)",
                              None, "lower device.size or leave it out to use the whole namespace")
        use = size if size is not None else avail
        if 0 < utilization < 1:           # a share: whole 4 KiB pages, the FTL's mapping unit
            use = int(use * utilization) // 4096 * 4096
        use -= use % self.lba_size
        self.start_bytes = start_bytes
        max_io = transport.max_transfer_bytes(self.id_ctrl)
        super().__init__(transport.path, use, self.lba_size, max_io, capacity=avail - avail % self.lba_size)
        self.fdp = self._discover_fdp() if placement else FdpInfo(
            placement_off="placement disabled by configuration (device.placement = false)")
        if self.fdp.placement_off:
            log.warning("%s: FDP placement is off: %s", self.path, self.fdp.placement_off)
        else:
            log.info("%s: FDP placement on: %d placement identifiers %s (endurance group %d)",
                     self.path, len(self.fdp.pids), self.fdp.pids, self.fdp.endgid)
        self._next_handle = 1  # handle 0 stays the default
        self._waf_reason = self._probe_waf()

    # -- FDP discovery --------------------------------------------------------------------
    def _discover_fdp(self) -> FdpInfo:
        info = FdpInfo(endgid=self.id_ns.endgid)
        if not self.id_ctrl.fdps:
            info.placement_off = "the controller does not support FDP (Identify Controller CTRATT bit 19 is 0)"
            return info
        info.supported = True
        if not info.endgid:
            info.placement_off = "the namespace is in no endurance group (Identify Namespace ENDGID = 0)"
            return info
        try:
            feat = read_fdp_feature(self.transport, info.endgid)
            info.enabled, info.config_index = feat.fdpe, feat.fdpcidx
            if not feat.fdpe:
                info.placement_off = (f"FDP is disabled in endurance group {info.endgid} "
                                      "(Get Features 0x1D: FDPE = 0); enable it with nvme-cli before creating namespaces")
                return info
        except (DeviceError, NvmeError) as e:
            info.notes.append(f"FDP feature not read: {_short(e)}")
        try:
            cfgs = read_configs(self.transport, info.endgid)
            idx = info.config_index or 0
            if idx < len(cfgs.configs):
                c = cfgs.configs[idx]
                info.rgif, info.nrg, info.nruh, info.runs_bytes = c.rgif, c.nrg, c.nruh, c.runs
                info.ruh_types = [RUHT_NAMES.get(r.ruht, f"type {r.ruht}") for r in c.ruhs]
        except (DeviceError, NvmeError) as e:
            info.notes.append(f"FDP configurations log not read: {_short(e)}")
        try:
            st = self.ruh_status()
        except NvmeError as e:
            info.placement_off = f"RUH Status (I/O Management Receive) failed: {e.status_name}"
            return info
        except DeviceError as e:
            info.placement_off = f"RUH Status (I/O Management Receive) failed: {_short(e)}"
            return info
        info.pids = [d.pid for d in st.descriptors]
        if len(info.pids) < 2:
            info.placement_off = (f"the namespace has {len(info.pids)} placement handle(s); flashcache needs at "
                                  "least 2 (handle 0 stays the default)")
            return info
        info.placement_off = None
        return info

    def ruh_status(self) -> "nvme.RuhStatus":
        return read_ruh_status(self.transport)

    def ruh_update(self, pids: Sequence[int]) -> None:
        ruh_update(self.transport, pids)

    def set_events(self, pid: int, event_types: Sequence[int], enable: bool = True) -> None:
        set_fdp_events(self.transport, pid, event_types, enable)

    def events(self, host: bool = True) -> "nvme.FdpEventsLog":
        return read_events(self.transport, self.fdp.endgid, host)

    def configs(self) -> "nvme.FdpConfigsLog":
        return read_configs(self.transport, self.fdp.endgid)

    def usage(self) -> "nvme.RuhUsageLog":
        return read_usage(self.transport, self.fdp.endgid)

    def fdp_stats(self) -> "nvme.FdpStatsLog":
        return read_stats(self.transport, self.fdp.endgid)

    # -- placement ------------------------------------------------------------------------
    def placement_off_reason(self) -> str:
        return self.fdp.placement_off or "on"

    def open_stream(self, name: str) -> PlacementStream:
        """Give stream ``name`` its own placement identifier (handle 1, 2, ...), or say why not."""
        self._check_open("open_stream")
        with self._lock:
            if name in self._streams:
                return self._streams[name]
            if self.fdp.placement_off:
                s = PlacementStream(name, placement=f"off: {self.fdp.placement_off}")
            elif self._next_handle >= len(self.fdp.pids):
                s = PlacementStream(name, placement=(
                    f"off: out of placement handles (the namespace has {len(self.fdp.pids)}, handle 0 is the "
                    f"default, {self._next_handle - 1} already given to {sorted(self._streams)})"))
            else:
                h = self._next_handle
                self._next_handle += 1
                s = PlacementStream(name, pid=self.fdp.pids[h], handle=h, placement="on")
            self._streams[name] = s
        if s.pid is None:
            log.warning("%s: placement for stream %r is %s", self.path, name, s.placement)
        else:
            log.info("%s: stream %r writes with placement identifier %d (handle %d)", self.path, name, s.pid, s.handle)
        return s

    # -- WAF ----------------------------------------------------------------------------
    def _probe_waf(self) -> str | None:
        if not self.fdp.supported:
            return "the device has no FDP, so no FDP Statistics log to read media writes from"
        if not self.fdp.endgid:
            return "the namespace is in no endurance group"
        try:
            self.fdp_stats()
        except DeviceError as e:
            if e.errno in (1, 13):  # EPERM, EACCES
                return "needs CAP_SYS_ADMIN (Get Log Page is an admin command the kernel reserves to it)"
            return f"reading the FDP Statistics log failed: {_short(e)}"
        return None

    def waf_unavailable_reason(self) -> str | None:
        return self._waf_reason

    def async_unavailable_reason(self) -> str | None:
        if getattr(self.transport, "ring", None) is None or getattr(self.transport, "fd", None) is None:
            return (f"{self.kind} device has no io_uring passthrough ring (the transport answers "
                    "synchronously): reads complete on the caller's thread")
        return None

    def async_reader(self, depth: int = 128):
        """NVMe Reads completed through a ring's eventfd (an NvmeRingReader), or None."""
        if self.async_unavailable_reason() is not None:
            return None
        from .async_io import NvmeRingReader
        self._check_open("async_reader")
        t = self.transport
        return NvmeRingReader(t.fd, path=self.path, nsid=t.nsid, lba_shift=self._lba_shift,
                              base=self.start_bytes, max_io=self.max_io, depth=depth,
                              check=lambda offs, lens: self._check_many("read", offs, lens),
                              count=lambda lens: self._count_many("r", lens))

    def waf_snapshot(self) -> WafSnapshot:
        if self._waf_reason:
            raise WafUnavailableError(self.path, self._waf_reason)
        self._check_open("waf_snapshot")
        st = self.fdp_stats()
        return WafSnapshot(hbmw=st.hbmw, mbmw=st.mbmw, mbe=st.mbe)

    # -- I/O ------------------------------------------------------------------------------
    def _chunks(self, offset: int, length: int):
        step = self.max_io - self.max_io % self.lba_size
        pos = 0
        while pos < length:
            n = min(step, length - pos)
            yield offset + pos, pos, n
            pos += n

    def _rw_cmds(self, offset: int, view: memoryview, write: bool, stream: PlacementStream | None):
        pid = stream.pid if (write and stream is not None) else None
        out = []
        for off, pos, n in self._chunks(offset, view.nbytes):
            slba = (self.start_bytes + off) // self.lba_size
            nlb = n // self.lba_size
            if write:
                cmd = nvme.write_cmd(self.transport.nsid, slba, nlb,
                                     dtype=nvme.DTYPE_DATA_PLACEMENT if pid is not None else 0,
                                     dspec=pid or 0)
            else:
                cmd = nvme.read_cmd(self.transport.nsid, slba, nlb)
            out.append((cmd, view[pos:pos + n]))
        return out

    # The fast path: a transport with ``rw`` takes pieces as plain numbers (no command
    # objects per I/O) when ``fits`` says so (the passthrough transport: up to ``slots``
    # pieces of up to ``slot_bytes``); anything else goes through the NvmeCommand encoders
    # one command at a time.
    def _fast(self, lens) -> bool:
        t = self.transport
        return getattr(t, "rw", None) is not None and max(lens, default=0) <= self.max_io and t.fits(lens)

    def _slbas(self, offs):
        start, shift = self.start_bytes, self._lba_shift
        return [(start + o) >> shift for o in offs]

    def _read(self, offset: int, length: int) -> bytes:
        if self._fast((length,)):
            return self.transport.rw(False, self._slbas((offset,)), (length,), (-1,), self._lba_shift)[0]
        buf = bytearray(length)
        self._run(self._rw_cmds(offset, memoryview(buf), False, None), "read", offset)
        return bytes(buf)

    def _write(self, offset: int, data, stream: PlacementStream | None) -> None:
        v = memoryview(data).cast("B")
        if self._fast((v.nbytes,)):
            pid = stream.pid if stream is not None and stream.pid is not None else -1
            self.transport.rw(True, self._slbas((offset,)), (v.nbytes,), (pid,), self._lba_shift, (v,))
            return
        self._run(self._rw_cmds(offset, v, True, stream), "write", offset)

    def read_many(self, reqs: Sequence[tuple[int, int]]) -> list[bytes]:
        offs = [o for o, _ in reqs]
        lens = [n for _, n in reqs]
        self._check_many("read", offs, lens)
        if self._fast(lens):
            out = self.transport.rw(False, self._slbas(offs), lens, [-1] * len(lens), self._lba_shift)
        else:
            bufs = [bytearray(ln) for ln in lens]
            items = []
            for off, b in zip(offs, bufs):
                items += self._rw_cmds(off, memoryview(b), False, None)
            self._run(items, "read", offs[0] if offs else 0)
            out = [bytes(b) for b in bufs]
        self._count_many("r", lens)
        return out

    def write_many(self, reqs) -> None:
        views = [memoryview(d).cast("B") for _, d, _ in reqs]
        offs = [o for o, _, _ in reqs]
        lens = [v.nbytes for v in views]
        streams = [s for _, _, s in reqs]
        self._check_many("write", offs, lens)
        self._check_streams(streams)
        if self._fast(lens):
            pids = [s.pid if s is not None and s.pid is not None else -1 for _, _, s in reqs]
            self.transport.rw(True, self._slbas(offs), lens, pids, self._lba_shift, views)
        else:
            items = []
            for (off, _, stream), v in zip(reqs, views):
                items += self._rw_cmds(off, v, True, stream)
            self._run(items, "write", offs[0] if offs else 0)
        self._count_writes(lens, streams)

    def _run(self, items, what: str, offset: int) -> None:
        if not items:
            return
        try:
            if len(items) == 1:
                self.transport.io(*items[0])
            else:
                self.transport.io_many(items)
        except DeviceError:
            self.counters.errors += 1
            raise

    def _trim(self, offset: int, length: int) -> None:
        lba = self.lba_size
        slba = (self.start_bytes + offset) // lba
        nlb = length // lba
        ranges = []
        while nlb:
            n = min(nlb, 0xFFFFFFFF)
            ranges.append((slba, n))
            slba += n
            nlb -= n
        for i in range(0, len(ranges), 256):
            part = ranges[i:i + 256]
            data = bytearray(nvme.pack_dsm_ranges(part))
            self.transport.io(nvme.dsm_deallocate(self.transport.nsid, len(part)), data)

    def flush(self) -> None:
        self._check_open("flush")
        self.transport.io(nvme.flush_cmd(self.transport.nsid))

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.transport.close()

    def info(self) -> dict[str, Any]:
        """A human-oriented summary: what `flashcache nvme id` prints."""
        f = self.fdp
        return {
            "path": self.path, "model": self.id_ctrl.mn, "serial": self.id_ctrl.sn,
            "firmware": self.id_ctrl.fr, "capacity_bytes": self.id_ns.nsze * self.lba_size,
            "lba_size": self.lba_size, "max_transfer_bytes": self.max_io, "nsid": self.transport.nsid,
            "fdp_supported": f.supported, "fdp_enabled": f.enabled, "endurance_group": f.endgid,
            "fdp_config_index": f.config_index, "reclaim_groups": f.nrg, "reclaim_unit_bytes": f.runs_bytes,
            "handles": len(f.pids), "placement_identifiers": f.pids, "handle_types": f.ruh_types,
            "placement": "on" if not f.placement_off else f"off: {f.placement_off}",
            "waf": "available" if self._waf_reason is None else f"unavailable: {self._waf_reason}",
            "notes": f.notes,
        }

    def stats(self) -> dict[str, Any]:
        st = super().stats()
        st["placement_identifiers"] = {n: s.pid for n, s in self._streams.items()}
        st["fdp"] = {"supported": self.fdp.supported, "enabled": self.fdp.enabled,
                     "endurance_group": self.fdp.endgid, "handles": len(self.fdp.pids),
                     "placement": "on" if not self.fdp.placement_off else f"off: {self.fdp.placement_off}"}
        return st


def _short(e: Exception) -> str:
    if isinstance(e, NvmeError):
        return e.status_name
    if isinstance(e, DeviceError) and e.errno:
        import os
        return os.strerror(e.errno)
    return str(e)
