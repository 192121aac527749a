"""Identify Controller (CNS 0x01) and Identify Namespace (CNS 0x00) as frozen dataclasses.

Owns only the fields flashcache uses, parsed at explicit offsets from the 4096-byte
structures; ``pack()`` writes those fields into an otherwise zero 4096-byte page (what the
emulated SSD answers), so pack -> parse round-trips but parse -> pack drops the rest.
Surprise: FLBAS carries the in-use format index in two places (bits 3:0 and, for more than
16 formats, bits 6:5 as the high part); ``lba_size`` looks at both.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field

from ..errors import FormatError
from .constants import IDENTIFY_BYTES

_U8, _U16, _U32, _U64 = struct.Struct("<B"), struct.Struct("<H"), struct.Struct("<I"), struct.Struct("<Q")
_LBAF = struct.Struct("<HBB")


def _need(name: str, buf, n: int) -> bytes:
    b = bytes(buf)
    if len(b) < n:
        raise FormatError(f"{name}: need {n} bytes, got {len(b)}")
    return b


def _ascii(b: bytes) -> str:
    return b.split(b"\0", 1)[0].decode("ascii", "replace").strip()


def _put_ascii(page: bytearray, off: int, size: int, s: str, name: str) -> None:
    raw = s.encode("ascii")
    if len(raw) > size:
        raise ValueError(f"Identify Controller: {name} {s!r} is longer than {size} bytes")
    page[off:off + size] = raw.ljust(size, b" ")  # the spec pads ASCII fields with spaces


@dataclass(frozen=True, slots=True)
class IdentifyController:
    """Identify Controller data (the fields used here). CTRATT bit 19 = FDPS."""

    vid: int = 0                 # @0 u16 PCI vendor id
    ssvid: int = 0               # @2 u16 subsystem vendor id
    sn: str = ""                 # @4 20 B serial number
    mn: str = ""                 # @24 40 B model number
    fr: str = ""                 # @64 8 B firmware revision
    mdts: int = 0                # @77 u8 max data transfer size, 2^MDTS min pages (0 = no limit)
    cntlid: int = 0              # @78 u16
    ver: int = 0                 # @80 u32
    ctratt: int = 0              # @96 u32 controller attributes
    oacs: int = 0                # @256 u16 optional admin command support
    lpa: int = 0                 # @261 u8 log page attributes
    endgidmax: int = 0           # @340 u16
    sqes: int = 0                # @512 u8
    cqes: int = 0                # @513 u8
    nn: int = 0                  # @516 u32 number of namespaces
    oncs: int = 0                # @520 u16 optional NVM command support
    vwc: int = 0                 # @525 u8 volatile write cache

    CTRATT_ENDGRPS = 1 << 4
    CTRATT_ELBAS = 1 << 15
    CTRATT_FDPS = 1 << 19
    ONCS_DSM = 1 << 2

    @property
    def fdps(self) -> bool:
        """Flexible Data Placement supported (CTRATT bit 19)."""
        return bool(self.ctratt & (1 << 19))

    @property
    def endgrps(self) -> bool:
        return bool(self.ctratt & (1 << 4))

    @property
    def dsm_supported(self) -> bool:
        """Dataset Management supported (ONCS bit 2)."""
        return bool(self.oncs & (1 << 2))

    @property
    def vwc_present(self) -> bool:
        return bool(self.vwc & 1)

    def max_transfer_bytes(self, mpsmin_bytes: int = 4096) -> int:
        """MDTS in bytes, or 0 when the controller states no limit."""
        return 0 if self.mdts == 0 else (1 << self.mdts) * mpsmin_bytes

    @classmethod
    def parse(cls, buf) -> "IdentifyController":
        b = _need("Identify Controller", buf, IDENTIFY_BYTES)
        return cls(
            vid=_U16.unpack_from(b, 0)[0], ssvid=_U16.unpack_from(b, 2)[0],
            sn=_ascii(b[4:24]), mn=_ascii(b[24:64]), fr=_ascii(b[64:72]),
            mdts=b[77], cntlid=_U16.unpack_from(b, 78)[0], ver=_U32.unpack_from(b, 80)[0],
            ctratt=_U32.unpack_from(b, 96)[0], oacs=_U16.unpack_from(b, 256)[0], lpa=b[261],
            endgidmax=_U16.unpack_from(b, 340)[0], sqes=b[512], cqes=b[513],
            nn=_U32.unpack_from(b, 516)[0], oncs=_U16.unpack_from(b, 520)[0], vwc=b[525])

    def pack(self) -> bytes:
        p = bytearray(IDENTIFY_BYTES)
        try:
            _U16.pack_into(p, 0, self.vid)
            _U16.pack_into(p, 2, self.ssvid)
            _put_ascii(p, 4, 20, self.sn, "sn")
            _put_ascii(p, 24, 40, self.mn, "mn")
            _put_ascii(p, 64, 8, self.fr, "fr")
            _U8.pack_into(p, 77, self.mdts)
            _U16.pack_into(p, 78, self.cntlid)
            _U32.pack_into(p, 80, self.ver)
            _U32.pack_into(p, 96, self.ctratt)
            _U16.pack_into(p, 256, self.oacs)
            _U8.pack_into(p, 261, self.lpa)
            _U16.pack_into(p, 340, self.endgidmax)
            _U8.pack_into(p, 512, self.sqes)
            _U8.pack_into(p, 513, self.cqes)
            _U32.pack_into(p, 516, self.nn)
            _U16.pack_into(p, 520, self.oncs)
            _U8.pack_into(p, 525, self.vwc)
        except struct.error as e:
            raise ValueError(f"Identify Controller: a field does not fit its width ({e})") from None
        return bytes(p)


@dataclass(frozen=True, slots=True)
class LbaFormat:
    """LBA Format descriptor (4 B): MS u16 @0, LBADS u8 @2 (size = 2^LBADS), RP u8 @3 bits 1:0."""

    ms: int = 0
    lbads: int = 9
    rp: int = 0

    @property
    def lba_size(self) -> int:
        return 1 << self.lbads


@dataclass(frozen=True, slots=True)
class IdentifyNamespace:
    """Identify Namespace data (NVM, the fields used here). ENDGID @102 is the LSI of FDP logs."""

    nsze: int = 0                # @0 u64 size in blocks
    ncap: int = 0                # @8 u64
    nuse: int = 0                # @16 u64
    nsfeat: int = 0              # @24 u8
    nlbaf: int = 0               # @25 u8, 0's based number of LBA formats
    flbas: int = 0               # @26 u8
    mc: int = 0                  # @27
    dpc: int = 0                 # @28
    dps: int = 0                 # @29
    nmic: int = 0                # @30
    dlfeat: int = 0              # @33 u8 deallocate logical block features
    nvmcap: int = 0              # @48 u128
    npwg: int = 0                # @64 u16
    nvmsetid: int = 0            # @100 u16
    endgid: int = 0              # @102 u16
    nguid: bytes = bytes(16)     # @104
    eui64: bytes = bytes(8)      # @120
    lbafs: tuple[LbaFormat, ...] = field(default_factory=lambda: (LbaFormat(),))  # @128, nlbaf+1 entries

    @property
    def flbas_index(self) -> int:
        """In-use LBA format index: FLBAS bits 3:0, plus bits 6:5 as bits 5:4 when nlbaf >= 16."""
        low = self.flbas & 0xF
        return low | (((self.flbas >> 5) & 0x3) << 4) if self.nlbaf >= 16 else low

    @property
    def extended_lba(self) -> bool:
        """Metadata transferred at the end of each LBA (FLBAS bit 4)."""
        return bool(self.flbas & 0x10)

    @property
    def lba_format(self) -> LbaFormat:
        i = self.flbas_index
        if i >= len(self.lbafs):
            raise FormatError(f"Identify Namespace: FLBAS selects LBA format {i} but only "
                              f"{len(self.lbafs)} are listed (NLBAF {self.nlbaf})")
        return self.lbafs[i]

    @property
    def lba_size(self) -> int:
        """Data bytes per logical block of the format in use."""
        return self.lba_format.lba_size

    @property
    def metadata_size(self) -> int:
        return self.lba_format.ms

    @classmethod
    def parse(cls, buf) -> "IdentifyNamespace":
        b = _need("Identify Namespace", buf, IDENTIFY_BYTES)
        nlbaf = b[25]
        if nlbaf > 63:
            raise FormatError(f"Identify Namespace: NLBAF {nlbaf} is more than the 64 formats the page holds")
        lbafs = tuple(LbaFormat(ms, lbads, rp & 3) for ms, lbads, rp in
                      (_LBAF.unpack_from(b, 128 + 4 * i) for i in range(nlbaf + 1)))
        ns = cls(
            nsze=_U64.unpack_from(b, 0)[0], ncap=_U64.unpack_from(b, 8)[0], nuse=_U64.unpack_from(b, 16)[0],
            nsfeat=b[24], nlbaf=nlbaf, flbas=b[26], mc=b[27], dpc=b[28], dps=b[29], nmic=b[30], dlfeat=b[33],
            nvmcap=int.from_bytes(b[48:64], "little"), npwg=_U16.unpack_from(b, 64)[0],
            nvmsetid=_U16.unpack_from(b, 100)[0], endgid=_U16.unpack_from(b, 102)[0],
            nguid=b[104:120], eui64=b[120:128], lbafs=lbafs)
        return ns

    def pack(self) -> bytes:
        p = bytearray(IDENTIFY_BYTES)
        if len(self.lbafs) != self.nlbaf + 1 or not 1 <= len(self.lbafs) <= 64:
            raise ValueError(f"Identify Namespace: {len(self.lbafs)} LBA formats but NLBAF {self.nlbaf} "
                             "(NLBAF is 0's based: give nlbaf = len(lbafs) - 1, at most 63)")
        if len(self.nguid) != 16 or len(self.eui64) != 8:
            raise ValueError("Identify Namespace: nguid must be 16 bytes and eui64 8 bytes")
        try:
            _U64.pack_into(p, 0, self.nsze)
            _U64.pack_into(p, 8, self.ncap)
            _U64.pack_into(p, 16, self.nuse)
            for off, v in ((24, self.nsfeat), (25, self.nlbaf), (26, self.flbas), (27, self.mc),
                           (28, self.dpc), (29, self.dps), (30, self.nmic), (33, self.dlfeat)):
                _U8.pack_into(p, off, v)
            p[48:64] = self.nvmcap.to_bytes(16, "little")
            _U16.pack_into(p, 64, self.npwg)
            _U16.pack_into(p, 100, self.nvmsetid)
            _U16.pack_into(p, 102, self.endgid)
            p[104:120] = self.nguid
            p[120:128] = self.eui64
            for i, f in enumerate(self.lbafs):
                _LBAF.pack_into(p, 128 + 4 * i, f.ms, f.lbads, f.rp & 3)
        except (struct.error, OverflowError) as e:
            raise ValueError(f"Identify Namespace: a field does not fit its width ({e})") from None
        return bytes(p)


@dataclass(frozen=True, slots=True)
class IdentifyIndependentNamespace:
    """I/O command set independent Identify Namespace (CNS 0x08), the fields used here."""

    nsfeat: int = 0      # @0
    nmic: int = 0        # @1
    rescap: int = 0      # @2
    fpi: int = 0         # @3
    anagrpid: int = 0    # @4 u32
    nsattr: int = 0      # @8
    nvmsetid: int = 0    # @10 u16
    endgid: int = 0      # @12 u16
    nstat: int = 0       # @14

    _S = struct.Struct("<BBBBIBxHHB")

    @classmethod
    def parse(cls, buf) -> "IdentifyIndependentNamespace":
        b = _need("Identify Independent Namespace", buf, IDENTIFY_BYTES)
        return cls(*cls._S.unpack_from(b, 0))

    def pack(self) -> bytes:
        p = bytearray(IDENTIFY_BYTES)
        try:
            self._S.pack_into(p, 0, self.nsfeat, self.nmic, self.rescap, self.fpi, self.anagrpid, self.nsattr,
                              self.nvmsetid, self.endgid, self.nstat)
        except struct.error as e:
            raise ValueError(f"Identify Independent Namespace: a field does not fit its width ({e})") from None
        return bytes(p)
