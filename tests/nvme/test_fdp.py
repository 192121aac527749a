"""flashcache.nvme.fdp: the FDP log pages, RUH Status and feature values — offsets, round trips, garbage."""
import struct

import pytest
from hypothesis import given, strategies as st

from flashcache.errors import FormatError
from flashcache.nvme import (FdpConfigDescriptor, FdpConfigsLog, FdpEvent, FdpEventDescriptor, FdpEventsLog,
                             FdpFeature, FdpRuhDescriptor, FdpStatsLog, RuhStatus, RuhStatusDescriptor,
                             RuhUsageDescriptor, RuhUsageLog, encode_fdpa, pack_media_reallocated)

U16, U32, U64 = st.integers(0, 0xFFFF), st.integers(0, 2**32 - 1), st.integers(0, 2**64 - 1)


# -- FDP Configurations (LID 0x20) ---------------------------------------------------------------

def qemu_like_config_log():
    """Bytes laid out by hand from the spec table: one config, NRG 2 (RGIF 1), 3 RUHs, VSS 4."""
    desc = struct.pack("<HBBIHHIQI", 64 + 12 + 4 + 0, 0x80 | 0x10 | 1, 4, 2, 3, 127, 256, 96 << 20, 0) + bytes(36)
    desc += b"\x01\x00\x00\x00\x02\x00\x00\x00\x01\x00\x00\x00" + b"VEND"
    return struct.pack("<HBBI8x", 0, 1, 0, 16 + len(desc)) + desc


def test_configs_parse_from_spec_offsets():
    log = FdpConfigsLog.parse(qemu_like_config_log())
    assert log.n == 0 and log.version == 1 and log.size == 96 and len(log.configs) == 1
    c = log.configs[0]
    assert (c.dsze, c.rgif, c.fdpvwc, c.fdpcv, c.vss, c.nrg, c.nruh, c.maxpids, c.nnss, c.runs, c.erutl) == \
        (80, 1, True, True, 4, 2, 3, 127, 256, 96 << 20, 0)
    assert [r.ruht for r in c.ruhs] == [1, 2, 1] and c.vendor == b"VEND"
    assert c.ruhs[1].name == "Persistently Isolated"
    assert FdpConfigsLog.size_from_header(qemu_like_config_log()[:16]) == 96
    assert log.pack() == qemu_like_config_log()


def test_configs_advance_by_dsze_not_by_size_of_contents():
    padded = FdpConfigDescriptor(nrg=1, ruhs=(FdpRuhDescriptor(1),), dsze=128, runs=1)
    second = FdpConfigDescriptor(nrg=3, ruhs=(FdpRuhDescriptor(2),) * 2, runs=2)
    log = FdpConfigsLog.parse(FdpConfigsLog((padded, second)).pack())
    assert [c.runs for c in log.configs] == [1, 2] and log.configs[0].dsze == 128 and log.n == 1


def test_pid_encoding_follows_rgif():
    c = FdpConfigDescriptor(fdpa=encode_fdpa(2))
    assert c.make_pid(rgid=3, phndl=5) == (3 << 14) | 5 and c.split_pid((3 << 14) | 5) == (3, 5)
    c0 = FdpConfigDescriptor(fdpa=encode_fdpa(0))
    assert c0.make_pid(0, 7) == 7 and c0.split_pid(7) == (0, 7)
    with pytest.raises(ValueError, match="does not fit RGIF 2"):
        c.make_pid(4, 0)


ruh_lists = st.lists(st.integers(0, 255).map(FdpRuhDescriptor), max_size=20).map(tuple)
configs = st.builds(FdpConfigDescriptor, fdpa=st.integers(0, 255), nrg=U32, maxpids=U16, nnss=U32, runs=U64,
                    erutl=U32, ruhs=ruh_lists, vendor=st.binary(max_size=40))


@given(st.lists(configs, min_size=1, max_size=4), st.integers(0, 255))
def test_configs_round_trip(cfgs, version):
    raw = FdpConfigsLog(tuple(cfgs), version).pack()
    log = FdpConfigsLog.parse(raw)
    assert log.pack() == raw and log.version == version
    for got, want in zip(log.configs, cfgs):
        assert got.dsze == want.size and got.dsze % 8 == 0
        assert (got.fdpa, got.nrg, got.maxpids, got.nnss, got.runs, got.erutl, got.ruhs, got.vendor) == \
            (want.fdpa, want.nrg, want.maxpids, want.nnss, want.runs, want.erutl, want.ruhs, want.vendor)


def test_configs_garbage():
    good = qemu_like_config_log()
    with pytest.raises(FormatError, match="^FDP Configurations log: need 16 bytes, got 8$"):
        FdpConfigsLog.parse(good[:8])
    with pytest.raises(FormatError, match="FDP Configurations log: need 96 bytes \\(SIZE\\), got 16"):
        FdpConfigsLog.parse(good[:16])
    bad = bytearray(good)
    struct.pack_into("<H", bad, 16, 64)    # DSZE too small for 3 RUHs + 4 vendor bytes
    with pytest.raises(FormatError, match="DSZE 64 is smaller than 64 \\+ 4\\*NRUH \\(3\\) \\+ VSS \\(4\\) = 80"):
        FdpConfigsLog.parse(bytes(bad))
    bad = bytearray(good)
    struct.pack_into("<H", bad, 0, 1)      # N = 1 (two configs) but only one is there
    with pytest.raises(FormatError, match="descriptor at byte 96: need 64 bytes, got 0"):
        FdpConfigsLog.parse(bytes(bad))
    bad = bytearray(good)
    struct.pack_into("<I", bad, 4, 8)
    with pytest.raises(FormatError, match="SIZE 8 is smaller than the 16-byte header"):
        FdpConfigsLog.parse(bytes(bad))
    bad = bytearray(good)
    struct.pack_into("<H", bad, 16, 200)
    with pytest.raises(FormatError, match="DSZE 200 runs past the end of the 96-byte log"):
        FdpConfigsLog.parse(bytes(bad))


# -- RUH Usage (LID 0x21) ----------------------------------------------------------------------------

def test_usage_offsets_and_round_trip():
    raw = struct.pack("<H6x", 3) + b"\x01" + bytes(7) + b"\x00" + bytes(7) + b"\x02" + bytes(7)
    log = RuhUsageLog.parse(raw)
    assert [d.ruha for d in log.ruhus] == [1, 0, 2] and log.nruh == 3 and log.pack() == raw
    assert [d.name for d in log.ruhus] == ["Host Specified", "Unused", "Controller Specified"]
    assert RuhUsageLog.size_from_header(raw[:8]) == 32
    with pytest.raises(FormatError, match="^RUH Usage log: need 32 bytes for NRUH 3, got 24$"):
        RuhUsageLog.parse(raw[:24])
    with pytest.raises(FormatError, match="^RUH Usage log: need 8 bytes, got 2$"):
        RuhUsageLog.parse(raw[:2])


@given(st.lists(st.integers(0, 255), max_size=100))
def test_usage_round_trip(ruhas):
    log = RuhUsageLog(tuple(RuhUsageDescriptor(a) for a in ruhas))
    assert RuhUsageLog.parse(log.pack()) == log


# -- FDP Statistics (LID 0x22) -----------------------------------------------------------------------

def test_stats_u128_offsets_and_waf():
    raw = (10).to_bytes(16, "little") + (2**100 + 3).to_bytes(16, "little") + (7).to_bytes(16, "little") + bytes(16)
    s = FdpStatsLog.parse(raw)
    assert (s.hbmw, s.mbmw, s.mbe) == (10, 2**100 + 3, 7) and s.pack() == raw
    a, b = FdpStatsLog(hbmw=1000, mbmw=1000), FdpStatsLog(hbmw=3000, mbmw=5000)
    assert b.waf(since=a) == 2.0 and b.waf() == 5000 / 3000 and a.waf(since=a) is None


def test_stats_short_buffer_message():
    with pytest.raises(FormatError, match="^FDP Statistics log: need 64 bytes, got 16$"):
        FdpStatsLog.parse(bytes(16))
    with pytest.raises(ValueError, match="mbe = -1"):
        FdpStatsLog(mbe=-1).pack()


@given(st.integers(0, 2**128 - 1), st.integers(0, 2**128 - 1), st.integers(0, 2**128 - 1))
def test_stats_round_trip(h, m, e):
    s = FdpStatsLog(h, m, e)
    assert FdpStatsLog.parse(s.pack()) == s


# -- FDP Events (LID 0x23) ---------------------------------------------------------------------------

def test_event_offsets():
    raw = bytearray(64)
    raw[0], raw[1] = 0x80, 0x7
    struct.pack_into("<H", raw, 2, 0x4001)
    raw[4:12] = (1_700_000_000_123).to_bytes(6, "little") + b"\x03\x00"
    struct.pack_into("<I", raw, 12, 9)
    raw[16] = 1                                        # LBAV
    struct.pack_into("<H", raw, 18, 8)                 # NLBAM @ +2
    struct.pack_into("<Q", raw, 20, 0x1_2345_6789)     # LBA @ +4 of the type-specific area
    struct.pack_into("<HB", raw, 32, 2, 5)
    raw[40:64] = b"v" * 24
    e = FdpEvent.parse(bytes(raw))
    assert (e.type, e.piv, e.nsidv, e.lv, e.pid, e.nsid, e.rgid, e.ruhid) == (0x80, True, True, True, 0x4001, 9, 2, 5)
    assert (e.timestamp_ms, e.timestamp_attr, e.timestamp) == (1_700_000_000_123, 3, 1_700_000_000_123 | 3 << 48)
    assert (e.lbav, e.nlbam, e.lba) == (True, 8, 0x1_2345_6789)
    assert e.type_name == "Media Reallocated" and e.vendor == b"v" * 24
    assert e.pack() == bytes(raw)


def test_media_reallocated_helpers():
    e = FdpEvent(type=0x80, type_specific=pack_media_reallocated(3))
    assert (e.lbav, e.nlbam, e.lba) == (False, 3, None)
    with pytest.raises(ValueError, match="not Media Reallocated"):
        FdpEvent(type=0).nlbam  # noqa: B018 - reading the property is what raises


events = st.builds(FdpEvent, type=st.integers(0, 255), flags=st.integers(0, 255), pid=U16,
                   timestamp_ms=st.integers(0, 2**48 - 1), timestamp_attr=st.integers(0, 255), nsid=U32,
                   type_specific=st.binary(min_size=16, max_size=16), rgid=U16, ruhid=st.integers(0, 255),
                   vendor=st.binary(min_size=24, max_size=24))


@given(st.lists(events, max_size=63))
def test_events_round_trip(evs):
    log = FdpEventsLog(tuple(evs))
    raw = log.pack(4096)
    assert len(raw) == 4096 and FdpEventsLog.parse(raw) == log


def test_events_garbage():
    with pytest.raises(FormatError, match="^FDP Events log: need 64 bytes, got 63$"):
        FdpEventsLog.parse(bytes(63))
    with pytest.raises(FormatError, match="^FDP Events log: need 4160 bytes for NEVENTS 64, got 4096$"):
        FdpEventsLog.parse(struct.pack("<I", 64) + bytes(4092))
    with pytest.raises(ValueError, match="asked to fit 100"):
        FdpEventsLog((FdpEvent(),) * 2).pack(100)
    with pytest.raises(ValueError, match="48 bits"):
        FdpEvent(timestamp_ms=2**48).pack()


# -- RUH Status (I/O Management Receive MO 1) ---------------------------------------------------------

def test_ruh_status_offsets():
    raw = bytes(14) + struct.pack("<H", 2) + struct.pack("<HHIQ16x", 0, 0, 0, 24576) + \
        struct.pack("<HHIQ16x", 0x8001, 1, 60, 2**40)
    st_ = RuhStatus.parse(raw)
    assert st_.descriptors == (RuhStatusDescriptor(0, 0, 0, 24576), RuhStatusDescriptor(0x8001, 1, 60, 2**40))
    assert st_.pids == [0, 0x8001] and st_.nruhsd == 2 and st_.pack() == raw
    assert RuhStatus.count_from_header(raw[:16]) == 2 and RuhStatus.size_from_header(raw[:16]) == 80
    assert st_.pack(16) == raw[:16] and len(st_.pack(128)) == 128


def test_ruh_status_garbage():
    with pytest.raises(FormatError, match="^RUH Status: need 16 bytes, got 15$"):
        RuhStatus.parse(bytes(15))
    with pytest.raises(FormatError, match="^RUH Status: need 80 bytes for NRUHSD 2, got 48$"):
        RuhStatus.parse(bytes(14) + struct.pack("<H", 2) + bytes(32))
    with pytest.raises(FormatError, match="RUH Status header: need 16 bytes, got 4"):
        RuhStatus.count_from_header(bytes(4))


@given(st.lists(st.tuples(U16, U16, U32, U64), max_size=128))
def test_ruh_status_round_trip(ds):
    s = RuhStatus(tuple(RuhStatusDescriptor(*d) for d in ds))
    assert RuhStatus.parse(s.pack()) == s


# -- Features -----------------------------------------------------------------------------------------

def test_fdp_feature_dw0():
    assert FdpFeature.from_dw0(0x0301) == FdpFeature(True, 3)
    assert FdpFeature.from_dw0(0xFF00) == FdpFeature(False, 0xFF)   # FDPCIDX is 8 bits, not 4
    assert FdpFeature(True, 0x81).to_dw0() == 0x8101


@given(st.booleans(), st.integers(0, 255))
def test_fdp_feature_round_trip(fdpe, idx):
    assert FdpFeature.from_dw0(FdpFeature(fdpe, idx).to_dw0()) == FdpFeature(fdpe, idx)


def test_fdp_event_descriptors():
    raw = bytes([0x00, 0x01, 0x80, 0x00, 0x03, 0x03])
    ds = FdpEventDescriptor.parse_list(raw)
    assert ds == [FdpEventDescriptor(0, True), FdpEventDescriptor(0x80, False), FdpEventDescriptor(3, True)]
    assert FdpEventDescriptor.pack_list(ds) == bytes([0, 1, 0x80, 0, 3, 1])
    with pytest.raises(FormatError, match="need 8 bytes for 4, got 6"):
        FdpEventDescriptor.parse_list(raw, 4)


@pytest.mark.parametrize("parse", [FdpConfigsLog.parse, RuhUsageLog.parse, FdpStatsLog.parse, FdpEventsLog.parse,
                                   RuhStatus.parse, FdpConfigsLog.size_from_header, RuhStatus.count_from_header])
@given(data=st.binary(max_size=600))
def test_random_bytes_parse_or_raise_format_error(parse, data):
    try:
        parse(data)
    except FormatError:
        pass


@given(data=st.binary(min_size=16, max_size=400))
def test_random_config_bodies_behind_a_consistent_header(data):
    raw = struct.pack("<HBxI8x", data[0] % 4, 0, 16 + len(data)) + data
    try:
        log = FdpConfigsLog.parse(raw)
    except FormatError:
        return
    assert sum(c.dsze for c in log.configs) <= len(data) and len(log.configs) == data[0] % 4 + 1
