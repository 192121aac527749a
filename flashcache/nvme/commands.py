"""NVMe commands as values: NvmeCommand and the encoders that build one per spec command.

Owns the submission dwords as the Linux passthrough structs carry them (nvme_uring_cmd,
nvme_passthru_cmd, nvme_passthru_cmd64) and never does I/O: ``addr`` stays 0 until the
device layer calls ``with_buffer(addr, length)``. Surprise: counts are 0's based on the wire
(NLB, NUMD, NR, MOS) but the encoders take natural counts (blocks, bytes, ranges, PIDs).
"""
from __future__ import annotations

import dataclasses
import struct
from dataclasses import dataclass
from typing import Iterable, Sequence

from ..errors import FormatError
from . import constants as C

# struct nvme_uring_cmd / nvme_passthru_cmd: the same 72 bytes, except @68 (rsvd2 / result u32)
_CMD72 = struct.Struct("<BBHIIIQQII6III")
# struct nvme_passthru_cmd64: data_len/vec_cnt @36, timeout_ms @64, rsvd2 @68, result u64 @72
_CMD80 = struct.Struct("<BBHIIIQQII6IIIQ")
assert _CMD72.size == 72 and _CMD80.size == 80


@dataclass(frozen=True, slots=True)
class NvmeCommand:
    """One NVMe command (CDW0 opcode/flags, NSID, CDW2-3, pointers, CDW10-15).

    ``admin`` says which queue the opcode belongs to (0x02 is Read on an I/O queue and
    Get Log Page on the admin queue); it is not on the wire. ``result`` is completion DW0
    (DW0|DW1<<32 for the 64-bit struct), filled by ``parse_passthru*`` after an ioctl.
    """

    opcode: int
    nsid: int = 0
    cdw10: int = 0
    cdw11: int = 0
    cdw12: int = 0
    cdw13: int = 0
    cdw14: int = 0
    cdw15: int = 0
    flags: int = 0
    cdw2: int = 0
    cdw3: int = 0
    metadata: int = 0
    addr: int = 0
    metadata_len: int = 0
    data_len: int = 0
    timeout_ms: int = 0
    result: int = 0
    admin: bool = False

    def with_buffer(self, addr: int, length: int) -> "NvmeCommand":
        """A copy pointing at a data buffer (user virtual address, byte length)."""
        return dataclasses.replace(self, addr=addr, data_len=length)

    def _fields72(self, last: int) -> tuple:
        return (self.opcode, self.flags, 0, self.nsid, self.cdw2, self.cdw3, self.metadata, self.addr,
                self.metadata_len, self.data_len, self.cdw10, self.cdw11, self.cdw12, self.cdw13,
                self.cdw14, self.cdw15, self.timeout_ms, last)

    def _pack(self, st: struct.Struct, fields: tuple, what: str) -> bytes:
        try:
            return st.pack(*fields)
        except struct.error as e:
            raise ValueError(f"{what}: a field of {self!r} does not fit its width ({e})") from None

    def pack_uring(self) -> bytes:
        """72-byte ``struct nvme_uring_cmd`` for the SQE128 command area (sqe bytes 48..119)."""
        return self._pack(_CMD72, self._fields72(0), "nvme_uring_cmd")

    def pack_passthru(self) -> bytes:
        """72-byte ``struct nvme_passthru_cmd`` for NVME_IOCTL_ADMIN_CMD / NVME_IOCTL_IO_CMD."""
        return self._pack(_CMD72, self._fields72(self.result), "nvme_passthru_cmd")

    def pack_passthru64(self) -> bytes:
        """80-byte ``struct nvme_passthru_cmd64`` for the *64_CMD ioctls."""
        f = self._fields72(0) + (self.result,)
        return self._pack(_CMD80, f, "nvme_passthru_cmd64")

    @classmethod
    def _from72(cls, name: str, buf, admin: bool, has_result: bool) -> "NvmeCommand":
        b = bytes(buf)
        if len(b) < 72:
            raise FormatError(f"{name}: need 72 bytes, got {len(b)}")
        (op, fl, _r1, nsid, c2, c3, md, addr, mdl, dl, c10, c11, c12, c13, c14, c15, tmo,
         last) = _CMD72.unpack_from(b)
        return cls(op, nsid, c10, c11, c12, c13, c14, c15, fl, c2, c3, md, addr, mdl, dl, tmo,
                   last if has_result else 0, admin)

    @classmethod
    def parse_uring(cls, buf, *, admin: bool = False) -> "NvmeCommand":
        return cls._from72("nvme_uring_cmd", buf, admin, False)

    @classmethod
    def parse_passthru(cls, buf, *, admin: bool = False) -> "NvmeCommand":
        return cls._from72("nvme_passthru_cmd", buf, admin, True)

    @classmethod
    def parse_passthru64(cls, buf, *, admin: bool = False) -> "NvmeCommand":
        b = bytes(buf)
        if len(b) < 80:
            raise FormatError(f"nvme_passthru_cmd64: need 80 bytes, got {len(b)}")
        (op, fl, _r1, nsid, c2, c3, md, addr, mdl, dl, c10, c11, c12, c13, c14, c15, tmo, _r2,
         res) = _CMD80.unpack_from(b)
        return cls(op, nsid, c10, c11, c12, c13, c14, c15, fl, c2, c3, md, addr, mdl, dl, tmo, res, admin)

    # -- decoded views of common fields -------------------------------------------------
    @property
    def slba(self) -> int:
        """Starting LBA of Read/Write (CDW11:CDW10)."""
        return self.cdw10 | (self.cdw11 << 32)

    @property
    def nlb(self) -> int:
        """Number of logical blocks of Read/Write as a count (CDW12 bits 15:0 plus one)."""
        return (self.cdw12 & 0xFFFF) + 1

    @property
    def dtype(self) -> int:
        return (self.cdw12 >> 20) & 0xF

    @property
    def dspec(self) -> int:
        return (self.cdw13 >> 16) & 0xFFFF

    @property
    def fua(self) -> bool:
        return bool(self.cdw12 & (1 << 30))


def _check(name: str, value: int, lo: int, hi: int, what: str) -> None:
    if not (lo <= value <= hi):
        raise ValueError(f"{what}: {name} = {value} is out of range {lo}..{hi}")


def _nsid(nsid: int, what: str) -> None:
    _check("nsid", nsid, 0, 0xFFFFFFFF, what)


_MAX_DATA_LEN = 0xFFFFFFFC   # data_len is a u32 in the passthrough structs


def _length_dwords(length: int, what: str) -> int:
    """0's based dword count (NUMD) of a byte length."""
    if length < 4 or length % 4 or length > _MAX_DATA_LEN:
        raise ValueError(f"{what}: length {length} bytes must be a positive multiple of 4 "
                         f"(at most {_MAX_DATA_LEN}, the u32 data_len)")
    return length // 4 - 1


# -- NVM I/O commands -------------------------------------------------------------------

def _rw(opcode: int, what: str, nsid: int, slba: int, nlb: int, dtype: int, dspec: int, fua: bool,
        prinfo: int) -> NvmeCommand:
    _nsid(nsid, what)
    _check("slba", slba, 0, (1 << 64) - 1, what)
    _check("nlb (blocks)", nlb, 1, 1 << 16, what)
    _check("dtype", dtype, 0, 0xF, what)
    _check("dspec", dspec, 0, 0xFFFF, what)
    _check("prinfo", prinfo, 0, 0xF, what)
    cdw12 = (nlb - 1) | (dtype << 20) | (prinfo << 26) | (int(bool(fua)) << 30)
    return NvmeCommand(opcode, nsid, slba & 0xFFFFFFFF, slba >> 32, cdw12, dspec << 16)


def write_cmd(nsid: int, slba: int, nlb: int, *, dtype: int = 0, dspec: int = 0, fua: bool = False,
              prinfo: int = 0) -> NvmeCommand:
    """Write (0x01) of ``nlb`` blocks at ``slba``. FDP: dtype=2, dspec=PID (CDW13 bits 31:16)."""
    return _rw(C.NVME_CMD_WRITE, "Write", nsid, slba, nlb, dtype, dspec, fua, prinfo)


def read_cmd(nsid: int, slba: int, nlb: int, *, fua: bool = False, prinfo: int = 0,
             dtype: int = 0, dspec: int = 0) -> NvmeCommand:
    """Read (0x02) of ``nlb`` blocks at ``slba``."""
    return _rw(C.NVME_CMD_READ, "Read", nsid, slba, nlb, dtype, dspec, fua, prinfo)


def flush_cmd(nsid: int) -> NvmeCommand:
    """Flush (0x00): commit the volatile write cache of ``nsid``."""
    _nsid(nsid, "Flush")
    return NvmeCommand(C.NVME_CMD_FLUSH, nsid)


@dataclass(frozen=True, slots=True)
class DsmRange:
    """One Dataset Management range (16 B): cattr u32 @0, nlb u32 @4 (a count, NOT 0's based), slba u64 @8."""

    slba: int
    nlb: int
    cattr: int = 0

    _S = struct.Struct("<IIQ")

    def pack(self) -> bytes:
        if not (0 <= self.nlb <= 0xFFFFFFFF and 0 <= self.slba < 1 << 64 and 0 <= self.cattr <= 0xFFFFFFFF):
            raise ValueError(f"DSM range {self}: a field does not fit (nlb u32, slba u64, cattr u32)")
        return self._S.pack(self.cattr, self.nlb, self.slba)

    @classmethod
    def parse(cls, buf) -> "DsmRange":
        b = bytes(buf)
        if len(b) < 16:
            raise FormatError(f"DSM range: need 16 bytes, got {len(b)}")
        cattr, nlb, slba = cls._S.unpack_from(b)
        return cls(slba, nlb, cattr)



def pack_dsm_ranges(ranges: Iterable) -> bytes:
    """Range list for Dataset Management: items are DsmRange or (slba, nlb) tuples."""
    out = []
    for r in ranges:
        if not isinstance(r, DsmRange):
            slba, nlb = r
            r = DsmRange(slba, nlb)
        out.append(r.pack())
    if not 1 <= len(out) <= C.DSM_MAX_RANGES:
        raise ValueError(f"Dataset Management: {len(out)} ranges; give 1..{C.DSM_MAX_RANGES}")
    return b"".join(out)


def parse_dsm_ranges(buf, nr: int | None = None) -> list[DsmRange]:
    """Parse ``nr`` ranges (default: as many whole ranges as ``buf`` holds)."""
    b = bytes(buf)
    if nr is None:
        if len(b) % 16:
            raise FormatError(f"DSM range list: length {len(b)} is not a multiple of 16")
        nr = len(b) // 16
    if len(b) < 16 * nr:
        raise FormatError(f"DSM range list: need {16 * nr} bytes for {nr} ranges, got {len(b)}")
    return [DsmRange.parse(b[i * 16:i * 16 + 16]) for i in range(nr)]


def dsm_deallocate(nsid: int, nr_ranges: int) -> NvmeCommand:
    """Dataset Management (0x09) with AD (deallocate, CDW11 bit 2) over ``nr_ranges`` ranges."""
    _nsid(nsid, "Dataset Management")
    _check("nr_ranges", nr_ranges, 1, C.DSM_MAX_RANGES, "Dataset Management")
    return NvmeCommand(C.NVME_CMD_DSM, nsid, nr_ranges - 1, 1 << 2, data_len=16 * nr_ranges)


def io_mgmt_recv_ruh_status(nsid: int, length: int) -> NvmeCommand:
    """I/O Management Receive (0x12), MO 1 Reclaim Unit Handle Status, into ``length`` bytes."""
    what = "I/O Management Receive"
    _nsid(nsid, what)
    numd = _length_dwords(length, what)
    return NvmeCommand(C.NVME_CMD_IO_MGMT_RECV, nsid, C.IO_MGMT_RECV_MO_RUH_STATUS, numd, data_len=length)


def io_mgmt_send_ruh_update(nsid: int, npids: int, length: int | None = None) -> NvmeCommand:
    """I/O Management Send (0x1D), MO 1 RUH Update of ``npids`` PIDs (MOS = npids-1; data = u16 PIDs)."""
    what = "I/O Management Send (RUH Update)"
    _nsid(nsid, what)
    _check("npids", npids, 1, 1 << 16, what)
    if length is not None and length != 2 * npids:
        raise ValueError(f"{what}: data length {length} bytes does not match {npids} PIDs ({2 * npids} bytes)")
    return NvmeCommand(C.NVME_CMD_IO_MGMT_SEND, nsid, C.IO_MGMT_SEND_MO_RUH_UPDATE | ((npids - 1) << 16),
                       data_len=2 * npids)


def pack_ruh_update_pids(pids: Sequence[int]) -> bytes:
    """Data of RUH Update: the PIDs as little-endian u16."""
    if not pids:
        raise ValueError("RUH Update: give at least one placement identifier")
    for p in pids:
        _check("pid", p, 0, 0xFFFF, "RUH Update")
    return struct.pack(f"<{len(pids)}H", *pids)


def parse_ruh_update_pids(buf, npids: int | None = None) -> list[int]:
    b = bytes(buf)
    if npids is None:
        if len(b) % 2:
            raise FormatError(f"RUH Update PID list: odd length {len(b)}")
        npids = len(b) // 2
    if len(b) < 2 * npids:
        raise FormatError(f"RUH Update PID list: need {2 * npids} bytes for {npids} PIDs, got {len(b)}")
    return list(struct.unpack_from(f"<{npids}H", b))


# -- admin commands -----------------------------------------------------------------------

def identify_cmd(cns: int, *, nsid: int = 0, cntid: int = 0, cns_id: int = 0, csi: int = 0) -> NvmeCommand:
    """Identify (admin 0x06): CDW10 CNS 7:0, CNTID 31:16; CDW11 CNS-specific id 15:0, CSI 31:24."""
    what = "Identify"
    _nsid(nsid, what)
    _check("cns", cns, 0, 0xFF, what)
    _check("cntid", cntid, 0, 0xFFFF, what)
    _check("cns_id", cns_id, 0, 0xFFFF, what)
    _check("csi", csi, 0, 0xFF, what)
    return NvmeCommand(C.NVME_ADMIN_IDENTIFY, nsid, cns | (cntid << 16), cns_id | (csi << 24),
                       data_len=C.IDENTIFY_BYTES, admin=True)


def identify_namespace(nsid: int) -> NvmeCommand:
    """Identify Namespace (CNS 0x00)."""
    return identify_cmd(C.CNS_NAMESPACE, nsid=nsid)


def identify_controller() -> NvmeCommand:
    """Identify Controller (CNS 0x01)."""
    return identify_cmd(C.CNS_CONTROLLER)


def identify_independent_namespace(nsid: int) -> NvmeCommand:
    """I/O command set independent Identify Namespace (CNS 0x08)."""
    return identify_cmd(C.CNS_CSI_INDEPENDENT_NAMESPACE, nsid=nsid)


def get_log_page(lid: int, length: int, *, nsid: int = 0, lsp: int = 0, rae: bool = False, lsi: int = 0,
                 lpo: int = 0, csi: int = 0, uuid_index: int = 0, ot: bool = False) -> NvmeCommand:
    """Get Log Page (admin 0x02) of ``length`` bytes; FDP logs: lsi = ENDGID, nsid 0."""
    what = f"Get Log Page (LID {lid:#04x})" if isinstance(lid, int) else "Get Log Page"
    _nsid(nsid, what)
    _check("lid", lid, 0, 0xFF, what)
    _check("lsp", lsp, 0, 0x7F, what)
    _check("lsi", lsi, 0, 0xFFFF, what)
    _check("csi", csi, 0, 0xFF, what)
    _check("uuid_index", uuid_index, 0, 0x7F, what)
    _check("lpo", lpo, 0, (1 << 64) - 1, what)
    if lpo % 4:
        raise ValueError(f"{what}: log page offset {lpo} must be a multiple of 4")
    numd = _length_dwords(length, what)
    cdw10 = lid | (lsp << 8) | (int(bool(rae)) << 15) | ((numd & 0xFFFF) << 16)
    cdw11 = (numd >> 16) | (lsi << 16)
    cdw14 = uuid_index | (int(bool(ot)) << 23) | (csi << 24)
    return NvmeCommand(C.NVME_ADMIN_GET_LOG_PAGE, nsid, cdw10, cdw11, lpo & 0xFFFFFFFF, lpo >> 32, cdw14,
                       data_len=length, admin=True)


def get_features(fid: int, *, nsid: int = 0, sel: int = C.SEL_CURRENT, cdw11: int = 0, uuid_index: int = 0,
                 data_len: int = 0) -> NvmeCommand:
    """Get Features (admin 0x0A): CDW10 FID 7:0, SEL 10:8. The value comes back in DW0."""
    what = f"Get Features (FID {fid:#04x})"
    _nsid(nsid, what)
    _check("fid", fid, 0, 0xFF, what)
    _check("sel", sel, 0, 7, what)
    _check("cdw11", cdw11, 0, 0xFFFFFFFF, what)
    _check("uuid_index", uuid_index, 0, 0x7F, what)
    return NvmeCommand(C.NVME_ADMIN_GET_FEATURES, nsid, fid | (sel << 8), cdw11, cdw14=uuid_index,
                       data_len=data_len, admin=True)


def set_features(fid: int, *, nsid: int = 0, cdw11: int = 0, cdw12: int = 0, cdw13: int = 0,
                 save: bool = False, uuid_index: int = 0, data_len: int = 0) -> NvmeCommand:
    """Set Features (admin 0x09): CDW10 FID 7:0, SV bit 31."""
    what = f"Set Features (FID {fid:#04x})"
    _nsid(nsid, what)
    _check("fid", fid, 0, 0xFF, what)
    for n, v in (("cdw11", cdw11), ("cdw12", cdw12), ("cdw13", cdw13)):
        _check(n, v, 0, 0xFFFFFFFF, what)
    _check("uuid_index", uuid_index, 0, 0x7F, what)
    return NvmeCommand(C.NVME_ADMIN_SET_FEATURES, nsid, fid | (int(bool(save)) << 31), cdw11, cdw12, cdw13,
                       uuid_index, data_len=data_len, admin=True)


def get_features_fdp(endgid: int, *, sel: int = C.SEL_CURRENT, nsid: int = 0) -> NvmeCommand:
    """Get Features FDP (FID 0x1D) of endurance group ``endgid``; DW0 -> FdpFeature.from_dw0."""
    _check("endgid", endgid, 0, 0xFFFF, "Get Features FDP")
    return get_features(C.FID_FDP, nsid=nsid, sel=sel, cdw11=endgid)


def set_features_fdp(endgid: int, enable: bool, fdpcidx: int = 0, *, save: bool = False,
                     nsid: int = C.NSID_ALL) -> NvmeCommand:
    """Set Features FDP (FID 0x1D): CDW11 ENDGID, CDW12 bit 0 FDPE, bits 15:8 FDPCIDX."""
    _check("endgid", endgid, 0, 0xFFFF, "Set Features FDP")
    _check("fdpcidx", fdpcidx, 0, 0xFF, "Set Features FDP")
    return set_features(C.FID_FDP, nsid=nsid, cdw11=endgid, cdw12=int(bool(enable)) | (fdpcidx << 8), save=save)


def get_features_fdp_events(nsid: int, phndl: int, noet: int, *, sel: int = C.SEL_CURRENT) -> NvmeCommand:
    """Get Features FDP Events (FID 0x1E): CDW11 PHNDL 15:0, NOET 23:16; data = NOET 2-byte descriptors."""
    what = "Get Features FDP Events"
    _check("phndl", phndl, 0, 0xFFFF, what)
    _check("noet", noet, 0, 0xFF, what)
    return get_features(C.FID_FDP_EVENTS, nsid=nsid, sel=sel, cdw11=phndl | (noet << 16), data_len=2 * noet)


def set_features_fdp_events(nsid: int, phndl: int, noet: int, enable: bool = True, *,
                            save: bool = False) -> NvmeCommand:
    """Set Features FDP Events (FID 0x1E): CDW12 bit 0 enable; data = NOET one-byte event types."""
    what = "Set Features FDP Events"
    _check("phndl", phndl, 0, 0xFFFF, what)
    _check("noet", noet, 1, 0xFF, what)
    return set_features(C.FID_FDP_EVENTS, nsid=nsid, cdw11=phndl | (noet << 16), cdw12=int(bool(enable)),
                        save=save, data_len=noet)


def pack_fdp_event_types(types: Sequence[int]) -> bytes:
    """Data of Set Features 0x1E: one byte per event type."""
    for t in types:
        _check("event type", t, 0, 0xFF, "Set Features FDP Events")
    return bytes(types)


# -- names for messages ---------------------------------------------------------------------

_IO_NAMES = {
    C.NVME_CMD_FLUSH: "Flush", C.NVME_CMD_WRITE: "Write", C.NVME_CMD_READ: "Read",
    C.NVME_CMD_WRITE_UNCOR: "Write Uncorrectable", C.NVME_CMD_COMPARE: "Compare",
    C.NVME_CMD_WRITE_ZEROES: "Write Zeroes", C.NVME_CMD_DSM: "Dataset Management",
    C.NVME_CMD_VERIFY: "Verify", C.NVME_CMD_IO_MGMT_RECV: "I/O Management Receive",
    C.NVME_CMD_COPY: "Copy", C.NVME_CMD_IO_MGMT_SEND: "I/O Management Send",
}
_ADMIN_NAMES = {
    C.NVME_ADMIN_DELETE_SQ: "Delete I/O Submission Queue", C.NVME_ADMIN_CREATE_SQ: "Create I/O Submission Queue",
    C.NVME_ADMIN_GET_LOG_PAGE: "Get Log Page", C.NVME_ADMIN_DELETE_CQ: "Delete I/O Completion Queue",
    C.NVME_ADMIN_CREATE_CQ: "Create I/O Completion Queue", C.NVME_ADMIN_IDENTIFY: "Identify",
    C.NVME_ADMIN_ABORT: "Abort", C.NVME_ADMIN_SET_FEATURES: "Set Features",
    C.NVME_ADMIN_GET_FEATURES: "Get Features", C.NVME_ADMIN_ASYNC_EVENT: "Asynchronous Event Request",
    C.NVME_ADMIN_NS_MGMT: "Namespace Management", C.NVME_ADMIN_FW_COMMIT: "Firmware Commit",
    C.NVME_ADMIN_FW_DOWNLOAD: "Firmware Image Download", C.NVME_ADMIN_NS_ATTACH: "Namespace Attachment",
    C.NVME_ADMIN_DIRECTIVE_SEND: "Directive Send", C.NVME_ADMIN_DIRECTIVE_RECV: "Directive Receive",
    C.NVME_ADMIN_FORMAT_NVM: "Format NVM", C.NVME_ADMIN_SANITIZE: "Sanitize",
}


def describe(cmd: NvmeCommand) -> str:
    """A short human name for error messages: "Write (0x01) nsid 1 slba 8 nlb 2 pid 3"."""
    names = _ADMIN_NAMES if cmd.admin else _IO_NAMES
    s = f"{names.get(cmd.opcode, 'Admin command' if cmd.admin else 'I/O command')} ({cmd.opcode:#04x})"
    op = cmd.opcode
    if cmd.admin:
        if op == C.NVME_ADMIN_GET_LOG_PAGE:
            s += f" LID {cmd.cdw10 & 0xFF:#04x}"
            lsi = cmd.cdw11 >> 16
            if lsi:
                s += f" LSI {lsi}"
        elif op == C.NVME_ADMIN_IDENTIFY:
            s += f" CNS {cmd.cdw10 & 0xFF:#04x}"
        elif op in (C.NVME_ADMIN_GET_FEATURES, C.NVME_ADMIN_SET_FEATURES):
            s += f" FID {cmd.cdw10 & 0xFF:#04x}"
        if cmd.nsid:
            s += f" nsid {cmd.nsid:#x}" if cmd.nsid == C.NSID_ALL else f" nsid {cmd.nsid}"
        return s
    s += f" nsid {cmd.nsid}"
    if op in (C.NVME_CMD_READ, C.NVME_CMD_WRITE):
        s += f" slba {cmd.slba} nlb {cmd.nlb}"
        if cmd.dtype:
            s += f" dtype {cmd.dtype} dspec {cmd.dspec}"
    elif op in (C.NVME_CMD_IO_MGMT_RECV, C.NVME_CMD_IO_MGMT_SEND):
        s += f" MO {cmd.cdw10 & 0xFF:#x}"
    elif op == C.NVME_CMD_DSM:
        s += f" {(cmd.cdw10 & 0xFF) + 1} range(s)"
    return s


# -- decoding received commands (what an emulated controller needs) -------------------------

@dataclass(frozen=True, slots=True)
class LogPageRequest:
    """The fields of a Get Log Page command; ``length`` is in bytes (NUMD + 1 dwords)."""

    lid: int
    length: int
    nsid: int = 0
    lsp: int = 0
    rae: bool = False
    lsi: int = 0
    lpo: int = 0
    csi: int = 0
    uuid_index: int = 0
    ot: bool = False


def decode_get_log_page(cmd: NvmeCommand) -> LogPageRequest:
    """Inverse of ``get_log_page``."""
    if not cmd.admin or cmd.opcode != C.NVME_ADMIN_GET_LOG_PAGE:
        raise ValueError(f"{describe(cmd)} is not Get Log Page")
    numd = (cmd.cdw10 >> 16) | ((cmd.cdw11 & 0xFFFF) << 16)
    return LogPageRequest(cmd.cdw10 & 0xFF, (numd + 1) * 4, cmd.nsid, (cmd.cdw10 >> 8) & 0x7F,
                          bool(cmd.cdw10 & (1 << 15)), cmd.cdw11 >> 16, cmd.cdw12 | (cmd.cdw13 << 32),
                          cmd.cdw14 >> 24, cmd.cdw14 & 0x7F, bool(cmd.cdw14 & (1 << 23)))


@dataclass(frozen=True, slots=True)
class FeatureRequest:
    """The fields of a Get or Set Features command (``sel`` for Get, ``save`` for Set)."""

    set: bool
    fid: int
    nsid: int = 0
    sel: int = 0
    save: bool = False
    cdw11: int = 0
    cdw12: int = 0
    cdw13: int = 0


def decode_features(cmd: NvmeCommand) -> FeatureRequest:
    """Inverse of ``get_features``/``set_features`` (and their FDP forms)."""
    if not cmd.admin or cmd.opcode not in (C.NVME_ADMIN_GET_FEATURES, C.NVME_ADMIN_SET_FEATURES):
        raise ValueError(f"{describe(cmd)} is not Get or Set Features")
    is_set = cmd.opcode == C.NVME_ADMIN_SET_FEATURES
    return FeatureRequest(is_set, cmd.cdw10 & 0xFF, cmd.nsid, 0 if is_set else (cmd.cdw10 >> 8) & 0x7,
                          bool(cmd.cdw10 >> 31) if is_set else False, cmd.cdw11, cmd.cdw12, cmd.cdw13)


@dataclass(frozen=True, slots=True)
class IoMgmtRequest:
    """The fields of I/O Management Send/Receive: MO, MOS and (Receive only) the length in bytes."""

    send: bool
    nsid: int
    mo: int
    mos: int
    length: int = 0

    @property
    def npids(self) -> int:
        """RUH Update: the number of PIDs in the data (MOS + 1)."""
        return self.mos + 1


def decode_io_mgmt(cmd: NvmeCommand) -> IoMgmtRequest:
    """Inverse of ``io_mgmt_recv_ruh_status``/``io_mgmt_send_ruh_update``."""
    if cmd.admin or cmd.opcode not in (C.NVME_CMD_IO_MGMT_RECV, C.NVME_CMD_IO_MGMT_SEND):
        raise ValueError(f"{describe(cmd)} is not I/O Management Send or Receive")
    send = cmd.opcode == C.NVME_CMD_IO_MGMT_SEND
    return IoMgmtRequest(send, cmd.nsid, cmd.cdw10 & 0xFF, cmd.cdw10 >> 16, 0 if send else (cmd.cdw11 + 1) * 4)
