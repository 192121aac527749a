"""FDP structures (TP4146): the four log pages, RUH Status, and the FDP feature values.

Owns parse/pack of LIDs 0x20-0x23, the I/O Management Receive RUH Status buffer and the
0x1D/0x1E feature values; pure data (the emulator packs, the real device path parses).
Surprise: config descriptors are variable-size (advance by DSZE, N is 0's based), and the
Media Reallocated LBA sits at +4 of the type-specific area (a C struct would put it at +8).
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

from ..errors import FormatError
from . import constants as C
from . import jsonfmt

_U16, _U32 = struct.Struct("<H"), struct.Struct("<I")
_RUH_DESC = struct.Struct("<B3x")     # RUH descriptor in a configuration (RUHT)
_RUHU_DESC = struct.Struct("<B7x")    # RUH Usage descriptor (RUHA)


def _need(name: str, buf, n: int) -> bytes:
    b = bytes(buf)
    if len(b) < n:
        raise FormatError(f"{name}: need {n} bytes, got {len(b)}")
    return b


def _u128(b: bytes, off: int) -> int:
    return int.from_bytes(b[off:off + 16], "little")


def _put_u128(p: bytearray, off: int, v: int, name: str) -> None:
    if not 0 <= v < 1 << 128:
        raise ValueError(f"FDP Statistics log: {name} = {v} does not fit 128 bits")
    p[off:off + 16] = v.to_bytes(16, "little")


def _pack(st: struct.Struct, what: str, *vals) -> bytes:
    try:
        return st.pack(*vals)
    except struct.error as e:
        raise ValueError(f"{what}: a field does not fit its width ({e})") from None


# -- FDP Configurations, LID 0x20 -----------------------------------------------------------

@dataclass(frozen=True, slots=True)
class FdpRuhDescriptor:
    """RUH descriptor in a configuration (4 B): RUHT u8 @0 (1 initially, 2 persistently isolated)."""

    ruht: int = C.RUHT_INITIALLY_ISOLATED

    @property
    def name(self) -> str:
        return {1: "Initially Isolated", 2: "Persistently Isolated"}.get(self.ruht, f"Reserved ({self.ruht})")


_CFG = struct.Struct("<HBBIHHIQI36x")   # 64-byte fixed part of a configuration descriptor
_CFG_HDR = struct.Struct("<HBxI8x")     # 16-byte log header: N (0's based), version, SIZE
assert _CFG.size == 64 and _CFG_HDR.size == 16


def encode_fdpa(rgif: int, fdpvwc: bool = False, fdpcv: bool = True) -> int:
    """FDPA byte: RGIF bits 3:0, FDPVWC bit 4, FDPCV (configuration valid) bit 7."""
    if not 0 <= rgif <= 15:
        raise ValueError(f"FDP configuration: rgif = {rgif} is out of range 0..15")
    return rgif | (int(bool(fdpvwc)) << 4) | (int(bool(fdpcv)) << 7)


@dataclass(frozen=True, slots=True)
class FdpConfigDescriptor:
    """One FDP configuration: 64 fixed bytes, NRUH RUH descriptors, VSS vendor bytes.

    ``dsze`` 0 means "the minimal size, rounded up to 8 bytes" when packing; parse keeps the
    drive's value. ``nruh`` is ``len(ruhs)`` and ``vss`` is ``len(vendor)``.
    """

    fdpa: int = encode_fdpa(0)
    nrg: int = 1                  # number of reclaim groups
    maxpids: int = 0              # max PIDs per namespace, 0's based
    nnss: int = 0                 # namespaces supported
    runs: int = 0                 # reclaim unit nominal size, bytes
    erutl: int = 0                # estimated RU time limit (seconds per spec; unverified)
    ruhs: tuple[FdpRuhDescriptor, ...] = ()
    vendor: bytes = b""
    dsze: int = 0

    @property
    def rgif(self) -> int:
        """Reclaim group identifier format: number of high PID bits naming the reclaim group."""
        return self.fdpa & 0xF

    @property
    def fdpvwc(self) -> bool:
        return bool(self.fdpa & 0x10)

    @property
    def fdpcv(self) -> bool:
        """The configuration is valid."""
        return bool(self.fdpa & 0x80)

    @property
    def nruh(self) -> int:
        return len(self.ruhs)

    @property
    def vss(self) -> int:
        return len(self.vendor)

    @property
    def min_size(self) -> int:
        return 64 + 4 * len(self.ruhs) + len(self.vendor)

    @property
    def size(self) -> int:
        """DSZE as packed."""
        return self.dsze or (self.min_size + 7) // 8 * 8

    def make_pid(self, rgid: int, phndl: int) -> int:
        """Encode a placement identifier: RG id in the top RGIF bits, placement handle below."""
        n = self.rgif
        if not 0 <= phndl < (1 << (16 - n)) or not 0 <= rgid < (1 << n if n else 1):
            raise ValueError(f"PID for RG {rgid}, PH {phndl} does not fit RGIF {n}")
        return (rgid << (16 - n)) | phndl if n else phndl

    def split_pid(self, pid: int) -> tuple[int, int]:
        """(rgid, phndl) of an encoded placement identifier."""
        n = self.rgif
        return (pid >> (16 - n), pid & ((1 << (16 - n)) - 1)) if n else (0, pid)

    @classmethod
    def parse(cls, buf, offset: int = 0) -> "FdpConfigDescriptor":
        b = bytes(buf)
        what = "FDP configuration descriptor"
        if len(b) - offset < 64:
            raise FormatError(f"{what} at byte {offset}: need 64 bytes, got {max(0, len(b) - offset)}")
        dsze, fdpa, vss, nrg, nruh, maxpids, nnss, runs, erutl = _CFG.unpack_from(b, offset)
        need = 64 + 4 * nruh + vss
        if dsze < need:
            raise FormatError(f"{what} at byte {offset}: DSZE {dsze} is smaller than 64 + 4*NRUH ({nruh}) "
                              f"+ VSS ({vss}) = {need}")
        if offset + dsze > len(b):
            raise FormatError(f"{what} at byte {offset}: DSZE {dsze} runs past the end of the "
                              f"{len(b)}-byte log")
        ruhs = tuple(FdpRuhDescriptor(b[offset + 64 + 4 * i]) for i in range(nruh))
        v0 = offset + 64 + 4 * nruh
        return cls(fdpa, nrg, maxpids, nnss, runs, erutl, ruhs, b[v0:v0 + vss], dsze)

    def pack(self) -> bytes:
        size = self.size
        if size < self.min_size:
            raise ValueError(f"FDP configuration: dsze {size} is smaller than the {self.min_size} bytes it holds")
        if len(self.vendor) > 255:
            raise ValueError(f"FDP configuration: vendor area of {len(self.vendor)} bytes; VSS is one byte")
        head = _pack(_CFG, "FDP configuration descriptor", size, self.fdpa, len(self.vendor), self.nrg,
                     len(self.ruhs), self.maxpids, self.nnss, self.runs, self.erutl)
        ruhs = b"".join(_pack(_RUH_DESC, "RUH descriptor", r.ruht) for r in self.ruhs)
        return (head + ruhs + self.vendor).ljust(size, b"\0")


@dataclass(frozen=True, slots=True)
class FdpConfigsLog:
    """FDP Configurations log (LID 0x20). ``n`` is the 0's based count as on the wire."""

    configs: tuple[FdpConfigDescriptor, ...] = ()
    version: int = 0
    size: int = 0          # SIZE field; 0 = computed when packing

    HEADER_BYTES = 16

    @property
    def n(self) -> int:
        return len(self.configs) - 1

    @staticmethod
    def size_from_header(buf) -> int:
        """Total log size from the 16-byte header (read the header, then reread this many bytes)."""
        b = _need("FDP Configurations log header", buf, 16)
        _n, _v, size = _CFG_HDR.unpack_from(b)
        if size < 16:
            raise FormatError(f"FDP Configurations log: SIZE {size} is smaller than the 16-byte header")
        return size

    @classmethod
    def parse(cls, buf) -> "FdpConfigsLog":
        b = _need("FDP Configurations log", buf, 16)
        n, version, size = _CFG_HDR.unpack_from(b)
        if size < 16:
            raise FormatError(f"FDP Configurations log: SIZE {size} is smaller than the 16-byte header")
        if len(b) < size:
            raise FormatError(f"FDP Configurations log: need {size} bytes (SIZE), got {len(b)}; "
                              "read the header first, then the whole log")
        b = b[:size]
        configs, off = [], 16
        for _ in range(n + 1):
            c = FdpConfigDescriptor.parse(b, off)
            configs.append(c)
            off += c.dsze
        return cls(tuple(configs), version, size)

    def pack(self) -> bytes:
        if not self.configs:
            raise ValueError("FDP Configurations log: needs at least one configuration (N is 0's based)")
        body = b"".join(c.pack() for c in self.configs)
        size = self.size or 16 + len(body)
        if size < 16 + len(body):
            raise ValueError(f"FDP Configurations log: size {size} is smaller than its {16 + len(body)} bytes")
        head = _pack(_CFG_HDR, "FDP Configurations log", len(self.configs) - 1, self.version, size)
        return (head + body).ljust(size, b"\0")

    def to_nvme_cli_json(self, flavor: str = jsonfmt.DEFAULT_FLAVOR) -> dict:
        return jsonfmt.configs_json(self, flavor)

    def to_text(self) -> str:
        return jsonfmt.configs_text(self)


# -- Reclaim Unit Handle Usage, LID 0x21 ----------------------------------------------------

@dataclass(frozen=True, slots=True)
class RuhUsageDescriptor:
    """RUH Usage descriptor (8 B): RUHA u8 @0 (0 unused, 1 host-specified, 2 controller-specified)."""

    ruha: int = C.RUHA_UNUSED

    @property
    def name(self) -> str:
        return {0: "Unused", 1: "Host Specified", 2: "Controller Specified"}.get(self.ruha, f"Reserved ({self.ruha})")


@dataclass(frozen=True, slots=True)
class RuhUsageLog:
    """Reclaim Unit Handle Usage log (LID 0x21): NRUH u16 @0, then NRUH 8-byte descriptors @8."""

    ruhus: tuple[RuhUsageDescriptor, ...] = ()

    HEADER_BYTES = 8

    @property
    def nruh(self) -> int:
        return len(self.ruhus)

    @staticmethod
    def size_from_header(buf) -> int:
        b = _need("RUH Usage log header", buf, 8)
        return 8 + 8 * _U16.unpack_from(b)[0]

    @classmethod
    def parse(cls, buf) -> "RuhUsageLog":
        b = _need("RUH Usage log", buf, 8)
        nruh = _U16.unpack_from(b)[0]
        if len(b) < 8 + 8 * nruh:
            raise FormatError(f"RUH Usage log: need {8 + 8 * nruh} bytes for NRUH {nruh}, got {len(b)}")
        return cls(tuple(RuhUsageDescriptor(b[8 + 8 * i]) for i in range(nruh)))

    def pack(self) -> bytes:
        if len(self.ruhus) > 0xFFFF:
            raise ValueError(f"RUH Usage log: {len(self.ruhus)} descriptors; NRUH is 16 bits")
        return _U16.pack(len(self.ruhus)) + bytes(6) + b"".join(
            _pack(_RUHU_DESC, "RUH Usage descriptor", d.ruha) for d in self.ruhus)

    def to_nvme_cli_json(self, flavor: str = jsonfmt.DEFAULT_FLAVOR) -> dict:
        return jsonfmt.usage_json(self, flavor)

    def to_text(self) -> str:
        return jsonfmt.usage_text(self)


# -- FDP Statistics, LID 0x22 -----------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class FdpStatsLog:
    """FDP Statistics log (LID 0x22, 64 B): u128 HBMW @0, MBMW @16, MBE @32 — all in bytes."""

    hbmw: int = 0     # host bytes with metadata written
    mbmw: int = 0     # media bytes with metadata written
    mbe: int = 0      # media bytes erased

    SIZE = C.FDP_STATS_LOG_BYTES

    @classmethod
    def parse(cls, buf) -> "FdpStatsLog":
        b = _need("FDP Statistics log", buf, 64)
        return cls(_u128(b, 0), _u128(b, 16), _u128(b, 32))

    def pack(self) -> bytes:
        p = bytearray(64)
        _put_u128(p, 0, self.hbmw, "hbmw")
        _put_u128(p, 16, self.mbmw, "mbmw")
        _put_u128(p, 32, self.mbe, "mbe")
        return bytes(p)

    def waf(self, since: "FdpStatsLog | None" = None) -> float | None:
        """MBMW/HBMW (over the interval from ``since``), None when no host bytes were written."""
        dh = self.hbmw - (since.hbmw if since else 0)
        dm = self.mbmw - (since.mbmw if since else 0)
        return dm / dh if dh > 0 else None

    def to_nvme_cli_json(self, flavor: str = jsonfmt.DEFAULT_FLAVOR) -> dict:
        return jsonfmt.stats_json(self, flavor)

    def to_text(self) -> str:
        return jsonfmt.stats_text(self)


# -- FDP Events, LID 0x23 ------------------------------------------------------------------------

_EVT = struct.Struct("<BBHQI16sHB5x24s")
assert _EVT.size == 64
_REALLOC = struct.Struct("<BxHQ4x")   # Media Reallocated type-specific: flags, rsvd, NLBAM @2, LBA @4
assert _REALLOC.size == 16


def pack_media_reallocated(nlbam: int, lba: int | None = None) -> bytes:
    """Type-specific area of a Media Reallocated event (LBAV set when ``lba`` is given)."""
    return _pack(_REALLOC, "Media Reallocated event", 1 if lba is not None else 0, nlbam, lba or 0)


@dataclass(frozen=True, slots=True)
class FdpEvent:
    """One FDP event (64 B). ``timestamp_ms`` is the 48-bit Timestamp, ``timestamp_attr`` its byte 6."""

    type: int = C.FDP_EVENT_RU_NOT_FULLY_WRITTEN
    flags: int = 0            # FDPEF: bit 0 PIV, bit 1 NSIDV, bit 2 LV
    pid: int = 0
    timestamp_ms: int = 0
    timestamp_attr: int = 0
    nsid: int = 0
    type_specific: bytes = bytes(16)
    rgid: int = 0
    ruhid: int = 0
    vendor: bytes = bytes(24)

    PIV, NSIDV, LV = 0x1, 0x2, 0x4

    @property
    def piv(self) -> bool:
        return bool(self.flags & 0x1)

    @property
    def nsidv(self) -> bool:
        return bool(self.flags & 0x2)

    @property
    def lv(self) -> bool:
        return bool(self.flags & 0x4)

    @property
    def timestamp(self) -> int:
        """The raw 8 timestamp bytes as a little-endian u64 (what nvme-cli prints)."""
        return self.timestamp_ms | (self.timestamp_attr << 48)

    @property
    def type_name(self) -> str:
        return C.FDP_EVENT_NAMES.get(self.type, f"Unknown ({self.type:#04x})")

    def _realloc(self) -> tuple[int, int, int]:
        if self.type != C.FDP_EVENT_MEDIA_REALLOCATED:
            raise ValueError(f"FDP event type {self.type:#04x} is not Media Reallocated (0x80)")
        return _REALLOC.unpack(self.type_specific)

    @property
    def lbav(self) -> bool:
        """Media Reallocated: the LBA field is valid."""
        return bool(self._realloc()[0] & 1)

    @property
    def nlbam(self) -> int:
        """Media Reallocated: number of LBAs moved."""
        return self._realloc()[1]

    @property
    def lba(self) -> int | None:
        """Media Reallocated: the LBA (at +4 of the type-specific area), None unless LBAV."""
        f, _n, lba = self._realloc()
        return lba if f & 1 else None

    @classmethod
    def parse(cls, buf, offset: int = 0) -> "FdpEvent":
        b = bytes(buf)
        if len(b) - offset < 64:
            raise FormatError(f"FDP event at byte {offset}: need 64 bytes, got {max(0, len(b) - offset)}")
        typ, flags, pid, ts, nsid, ts_area, rgid, ruhid, vendor = _EVT.unpack_from(b, offset)
        return cls(typ, flags, pid, ts & ((1 << 48) - 1), (ts >> 48) & 0xFF, nsid, ts_area, rgid, ruhid, vendor)

    def pack(self) -> bytes:
        if len(self.type_specific) != 16 or len(self.vendor) != 24:
            raise ValueError("FDP event: type_specific must be 16 bytes and vendor 24 bytes")
        if not 0 <= self.timestamp_ms < 1 << 48:
            raise ValueError(f"FDP event: timestamp_ms {self.timestamp_ms} does not fit 48 bits")
        return _pack(_EVT, "FDP event", self.type, self.flags, self.pid, self.timestamp, self.nsid,
                     self.type_specific, self.rgid, self.ruhid, self.vendor)


@dataclass(frozen=True, slots=True)
class FdpEventsLog:
    """FDP Events log (LID 0x23): NEVENTS u32 @0 of a 64-byte header, then 64-byte events."""

    events: tuple[FdpEvent, ...] = ()

    HEADER_BYTES = 64

    @property
    def nevents(self) -> int:
        return len(self.events)

    @classmethod
    def parse(cls, buf) -> "FdpEventsLog":
        b = _need("FDP Events log", buf, 64)
        n = _U32.unpack_from(b)[0]
        if len(b) < 64 + 64 * n:
            raise FormatError(f"FDP Events log: need {64 + 64 * n} bytes for NEVENTS {n}, got {len(b)}")
        return cls(tuple(FdpEvent.parse(b, 64 + 64 * i) for i in range(n)))

    def pack(self, length: int | None = None) -> bytes:
        """The log, zero-padded to ``length`` bytes if given (a drive answers the length asked for)."""
        raw = _U32.pack(len(self.events)) + bytes(60) + b"".join(e.pack() for e in self.events)
        if length is not None:
            if length < len(raw):
                raise ValueError(f"FDP Events log: {len(self.events)} events need {len(raw)} bytes, "
                                 f"asked to fit {length}")
            raw = raw.ljust(length, b"\0")
        return raw

    def to_nvme_cli_json(self, flavor: str = jsonfmt.DEFAULT_FLAVOR) -> dict:
        return jsonfmt.events_json(self, flavor)

    def to_text(self) -> str:
        return jsonfmt.events_text(self)


# -- RUH Status, I/O Management Receive MO 1 -------------------------------------------------------

_RUHS = struct.Struct("<HHIQ16x")
assert _RUHS.size == 32


@dataclass(frozen=True, slots=True)
class RuhStatusDescriptor:
    """RUH Status descriptor (32 B): PID u16, RUHID u16, EARUTR u32, RUAMW u64 (logical blocks)."""

    pid: int = 0
    ruhid: int = 0
    earutr: int = 0
    ruamw: int = 0


@dataclass(frozen=True, slots=True)
class RuhStatus:
    """Reclaim Unit Handle Status: NRUHSD u16 @14 of a 16-byte header, then 32-byte descriptors."""

    descriptors: tuple[RuhStatusDescriptor, ...] = ()

    HEADER_BYTES = 16

    @property
    def nruhsd(self) -> int:
        return len(self.descriptors)

    @property
    def pids(self) -> list[int]:
        return [d.pid for d in self.descriptors]

    @staticmethod
    def count_from_header(buf) -> int:
        """NRUHSD from the first 16 bytes (ask again with 16 + 32 * NRUHSD bytes)."""
        return _U16.unpack_from(_need("RUH Status header", buf, 16), 14)[0]

    @staticmethod
    def size_from_header(buf) -> int:
        return 16 + 32 * RuhStatus.count_from_header(buf)

    @classmethod
    def parse(cls, buf) -> "RuhStatus":
        b = _need("RUH Status", buf, 16)
        n = _U16.unpack_from(b, 14)[0]
        if len(b) < 16 + 32 * n:
            raise FormatError(f"RUH Status: need {16 + 32 * n} bytes for NRUHSD {n}, got {len(b)}")
        return cls(tuple(RuhStatusDescriptor(*_RUHS.unpack_from(b, 16 + 32 * i)) for i in range(n)))

    def pack(self, length: int | None = None) -> bytes:
        """The buffer; with ``length``, truncated or zero-padded to it (the host may ask for less)."""
        if len(self.descriptors) > 0xFFFF:
            raise ValueError(f"RUH Status: {len(self.descriptors)} descriptors; NRUHSD is 16 bits")
        raw = bytes(14) + _U16.pack(len(self.descriptors)) + b"".join(
            _pack(_RUHS, "RUH Status descriptor", d.pid, d.ruhid, d.earutr, d.ruamw) for d in self.descriptors)
        if length is not None:
            raw = raw[:length].ljust(length, b"\0")
        return raw

    def to_nvme_cli_json(self, flavor: str = jsonfmt.DEFAULT_FLAVOR) -> dict:
        return jsonfmt.status_json(self, flavor)

    def to_text(self) -> str:
        return jsonfmt.status_text(self)


# -- Features 0x1D / 0x1E --------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class FdpFeature:
    """FDP feature (FID 0x1D) value: FDPE bit 0, FDPCIDX bits 15:8 (Get DW0 = Set CDW12)."""

    fdpe: bool = False
    fdpcidx: int = 0

    @classmethod
    def from_dw0(cls, dw0: int) -> "FdpFeature":
        return cls(bool(dw0 & 1), (dw0 >> 8) & 0xFF)

    def to_dw0(self) -> int:
        if not 0 <= self.fdpcidx <= 0xFF:
            raise ValueError(f"FDP feature: fdpcidx {self.fdpcidx} is out of range 0..255")
        return int(self.fdpe) | (self.fdpcidx << 8)


@dataclass(frozen=True, slots=True)
class FdpEventDescriptor:
    """Get Features 0x1E data entry (2 B): event type u8, attributes u8 (bit 0 enabled)."""

    type: int
    enabled: bool = False

    @staticmethod
    def parse_list(buf, n: int | None = None) -> list["FdpEventDescriptor"]:
        b = bytes(buf)
        if n is None:
            n = len(b) // 2
        if len(b) < 2 * n:
            raise FormatError(f"FDP event descriptors: need {2 * n} bytes for {n}, got {len(b)}")
        return [FdpEventDescriptor(b[2 * i], bool(b[2 * i + 1] & 1)) for i in range(n)]

    @staticmethod
    def pack_list(descs) -> bytes:
        out = bytearray()
        for d in descs:
            if not 0 <= d.type <= 0xFF:
                raise ValueError(f"FDP event descriptor: type {d.type} is out of range 0..255")
            out += bytes((d.type, int(d.enabled)))
        return bytes(out)
