"""flashcache.nvme.identify: offsets, properties, round trips and short buffers."""
import struct

import pytest
from hypothesis import given, strategies as st

from flashcache.errors import FormatError
from flashcache.nvme import IdentifyController, IdentifyIndependentNamespace, IdentifyNamespace, LbaFormat


def test_controller_fields_at_spec_offsets():
    p = bytearray(4096)
    struct.pack_into("<HH", p, 0, 0x1B36, 0x1AF4)
    p[4:24] = b"SN-123".ljust(20, b" ")
    p[24:64] = b"QEMU NVMe Ctrl".ljust(40, b" ")
    p[64:72] = b"8.2.0   "
    p[77] = 7
    struct.pack_into("<H", p, 78, 0x42)
    struct.pack_into("<I", p, 96, (1 << 19) | (1 << 4))
    struct.pack_into("<H", p, 256, 0x12A)
    p[261] = 0x7F
    struct.pack_into("<H", p, 340, 1)
    p[512], p[513] = 0x66, 0x44
    struct.pack_into("<I", p, 516, 256)
    struct.pack_into("<H", p, 520, 0x1FF)
    p[525] = 7
    c = IdentifyController.parse(bytes(p))
    assert (c.vid, c.ssvid, c.sn, c.mn, c.fr) == (0x1B36, 0x1AF4, "SN-123", "QEMU NVMe Ctrl", "8.2.0")
    assert (c.mdts, c.cntlid, c.oacs, c.lpa, c.endgidmax, c.sqes, c.cqes, c.nn, c.oncs, c.vwc) == \
        (7, 0x42, 0x12A, 0x7F, 1, 0x66, 0x44, 256, 0x1FF, 7)
    assert c.fdps and c.endgrps and c.dsm_supported and c.vwc_present
    assert c.max_transfer_bytes() == 128 * 4096 and c.max_transfer_bytes(mpsmin_bytes=8192) == 128 * 8192
    assert IdentifyController(mdts=0).max_transfer_bytes() == 0
    assert not IdentifyController(ctratt=(1 << 18) | (1 << 20)).fdps


@given(vid=st.integers(0, 0xFFFF), sn=st.text("ABCxyz0129-", max_size=20), mn=st.text("ABC xyz", max_size=40).map(str.strip),
       mdts=st.integers(0, 255), ctratt=st.integers(0, 2**32 - 1), nn=st.integers(0, 2**32 - 1))
def test_controller_round_trip(vid, sn, mn, mdts, ctratt, nn):
    c = IdentifyController(vid=vid, sn=sn, mn=mn, fr="1.0", mdts=mdts, ctratt=ctratt, nn=nn)
    assert IdentifyController.parse(c.pack()) == c


def test_namespace_fields_and_lba_size():
    p = bytearray(4096)
    struct.pack_into("<QQQ", p, 0, 1000, 900, 800)
    p[24], p[25], p[26], p[33] = 0x14, 2, 0x11, 0x09
    p[48:64] = (2**70).to_bytes(16, "little")
    struct.pack_into("<HH", p, 100, 3, 7)     # NVMSETID, ENDGID @102
    p[104:120] = bytes(range(16))
    p[120:128] = bytes(range(8, 16))
    for i, (ms, lbads) in enumerate([(0, 9), (8, 9), (0, 12)]):
        struct.pack_into("<HBB", p, 128 + 4 * i, ms, lbads, i)
    ns = IdentifyNamespace.parse(bytes(p))
    assert (ns.nsze, ns.ncap, ns.nuse, ns.nsfeat, ns.nlbaf, ns.flbas, ns.dlfeat) == (1000, 900, 800, 0x14, 2, 0x11, 9)
    assert (ns.nvmcap, ns.nvmsetid, ns.endgid) == (2**70, 3, 7)
    assert ns.nguid == bytes(range(16)) and ns.eui64 == bytes(range(8, 16))
    assert ns.lbafs == (LbaFormat(0, 9, 0), LbaFormat(8, 9, 1), LbaFormat(0, 12, 2))
    assert ns.flbas_index == 1 and ns.lba_size == 512 and ns.metadata_size == 8 and ns.extended_lba


def test_flbas_high_index_bits_for_more_than_16_formats():
    lbafs = tuple(LbaFormat(0, 9) for _ in range(20)) + (LbaFormat(0, 12),)
    # index 20 = 0b01_0100: low nibble 4 in bits 3:0, high part 1 in bits 6:5
    ns = IdentifyNamespace(nlbaf=20, flbas=0x04 | (1 << 5), lbafs=lbafs)
    assert ns.flbas_index == 20 and ns.lba_size == 4096
    # with 16 or fewer formats bits 6:5 are reserved and ignored
    assert IdentifyNamespace(nlbaf=1, flbas=0x21, lbafs=(LbaFormat(0, 9), LbaFormat(0, 12))).lba_size == 4096


def test_flbas_pointing_past_the_list_is_a_format_error():
    ns = IdentifyNamespace(nlbaf=0, flbas=3, lbafs=(LbaFormat(),))
    with pytest.raises(FormatError, match="FLBAS selects LBA format 3 but only 1 are listed"):
        ns.lba_size  # noqa: B018 - reading the property is what raises


@given(nsze=st.integers(0, 2**64 - 1), endgid=st.integers(0, 0xFFFF), nvmcap=st.integers(0, 2**128 - 1),
       lbafs=st.lists(st.tuples(st.integers(0, 0xFFFF), st.integers(9, 16), st.integers(0, 3)), min_size=1, max_size=64),
       nguid=st.binary(min_size=16, max_size=16), flbas=st.integers(0, 255))
def test_namespace_round_trip(nsze, endgid, nvmcap, lbafs, nguid, flbas):
    ns = IdentifyNamespace(nsze=nsze, ncap=nsze, nlbaf=len(lbafs) - 1, flbas=flbas, nvmcap=nvmcap, endgid=endgid,
                           nguid=nguid, lbafs=tuple(LbaFormat(*f) for f in lbafs))
    assert IdentifyNamespace.parse(ns.pack()) == ns


def test_independent_namespace_endgid_at_12():
    p = bytearray(4096)
    struct.pack_into("<H", p, 12, 9)
    assert IdentifyIndependentNamespace.parse(bytes(p)).endgid == 9
    i = IdentifyIndependentNamespace(nsfeat=1, anagrpid=5, nvmsetid=2, endgid=3, nstat=1)
    assert IdentifyIndependentNamespace.parse(i.pack()) == i


@pytest.mark.parametrize("cls,name", [(IdentifyController, "Identify Controller"),
                                      (IdentifyNamespace, "Identify Namespace"),
                                      (IdentifyIndependentNamespace, "Identify Independent Namespace")])
def test_short_buffers(cls, name):
    with pytest.raises(FormatError, match=f"^{name}: need 4096 bytes, got 512$"):
        cls.parse(bytes(512))


def test_bad_values():
    with pytest.raises(FormatError, match="NLBAF 64"):
        IdentifyNamespace.parse(bytes(25) + b"\x40" + bytes(4070))
    with pytest.raises(ValueError, match="NLBAF is 0's based"):
        IdentifyNamespace(nlbaf=1, lbafs=(LbaFormat(),)).pack()
    with pytest.raises(ValueError, match="longer than 20 bytes"):
        IdentifyController(sn="x" * 21).pack()
