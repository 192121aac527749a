"""flashcache.nvme.commands: golden bytes, round trips, encoders against nvme-cli 2.3's own commands."""
import struct

import pytest
from hypothesis import given, strategies as st

from flashcache.errors import FormatError
from flashcache import nvme
from flashcache.nvme import NvmeCommand, constants as C

U32 = st.integers(0, 2**32 - 1)
U64 = st.integers(0, 2**64 - 1)


def test_ioctl_and_uring_cmd_numbers():
    assert nvme.NVME_URING_CMD_IO == 0xC0484E80
    assert nvme.NVME_URING_CMD_IO_VEC == 0xC0484E81
    assert nvme.NVME_URING_CMD_ADMIN == 0xC0484E82
    assert nvme.NVME_URING_CMD_ADMIN_VEC == 0xC0484E83
    assert nvme.NVME_IOCTL_ID == 0x4E40
    assert nvme.NVME_IOCTL_ADMIN_CMD == 0xC0484E41
    assert nvme.NVME_IOCTL_IO_CMD == 0xC0484E43
    assert nvme.NVME_IOCTL_ADMIN64_CMD == 0xC0504E47
    assert nvme.NVME_IOCTL_IO64_CMD == 0xC0504E48
    assert nvme.NVME_IOCTL_IO64_CMD_VEC == 0xC0504E49
    assert (nvme.NVME_IOCTL_RESET, nvme.NVME_IOCTL_SUBSYS_RESET, nvme.NVME_IOCTL_RESCAN) == (0x4E44, 0x4E45, 0x4E46)


def test_fdp_write_golden_bytes_at_sqe128_offsets():
    cmd = nvme.write_cmd(1, slba=0x1_0000_0010, nlb=8, dtype=C.DTYPE_DATA_PLACEMENT, dspec=5)
    sqe = bytearray(128)
    sqe[48:48 + 72] = cmd.with_buffer(0x7F00_1234_5000, 8 * 4096).pack_uring()
    assert sqe[48] == 0x01                                                # opcode Write
    assert struct.unpack_from("<I", sqe, 52)[0] == 1                     # nsid
    assert struct.unpack_from("<Q", sqe, 72)[0] == 0x7F00_1234_5000      # addr
    assert struct.unpack_from("<I", sqe, 84)[0] == 8 * 4096              # data_len
    assert struct.unpack_from("<II", sqe, 88) == (0x10, 0x1)             # SLBA low/high
    assert struct.unpack_from("<I", sqe, 96)[0] == (2 << 20) | (8 - 1)   # cdw12: DTYPE 2, NLB 0's based
    assert struct.unpack_from("<I", sqe, 100)[0] == 5 << 16              # cdw13: DSPEC = PID
    assert sqe[49] == 0 and sqe[120:] == bytes(8)                        # flags 0, tail unused


def test_read_and_fua_bits():
    c = nvme.read_cmd(7, 100, 1, fua=True)
    assert (c.opcode, c.nsid, c.cdw10, c.cdw11, c.cdw12, c.cdw13) == (0x02, 7, 100, 0, 1 << 30, 0)
    assert c.fua and c.nlb == 1 and c.slba == 100 and c.dtype == 0


def test_rw_limits():
    nvme.write_cmd(1, 0, 65536)
    with pytest.raises(ValueError, match="nlb"):
        nvme.write_cmd(1, 0, 0)
    with pytest.raises(ValueError, match="nlb"):
        nvme.write_cmd(1, 0, 65537)
    with pytest.raises(ValueError, match="dspec = 65536"):
        nvme.write_cmd(1, 0, 1, dtype=2, dspec=65536)
    with pytest.raises(ValueError, match="slba"):
        nvme.read_cmd(1, -1, 1)


def test_passthru_result_and_64bit_layouts():
    c = NvmeCommand(0x06, nsid=0, cdw10=1, admin=True, timeout_ms=1000, result=0xDEADBEEF)
    raw = c.pack_passthru()
    assert len(raw) == 72 and struct.unpack_from("<II", raw, 64) == (1000, 0xDEADBEEF)
    assert c.pack_uring()[68:72] == bytes(4)                 # rsvd2 in the uring struct
    raw64 = NvmeCommand(0x06, result=0x1_0000_0002).pack_passthru64()
    assert len(raw64) == 80 and struct.unpack_from("<Q", raw64, 72)[0] == 0x1_0000_0002
    assert NvmeCommand.parse_passthru(raw, admin=True) == c


@given(op=st.integers(0, 255), flags=st.integers(0, 255), nsid=U32, cdw=st.lists(U32, min_size=10, max_size=10),
       md=U64, addr=U64, mdl=U32, dl=U32, tmo=U32, res=U32, admin=st.booleans())
def test_round_trips(op, flags, nsid, cdw, md, addr, mdl, dl, tmo, res, admin):
    c2, c3, c10, c11, c12, c13, c14, c15 = cdw[:8]
    c = NvmeCommand(op, nsid, c10, c11, c12, c13, c14, c15, flags, c2, c3, md, addr, mdl, dl, tmo, res, admin)
    assert NvmeCommand.parse_passthru(c.pack_passthru(), admin=admin) == c
    assert NvmeCommand.parse_passthru64(c.pack_passthru64(), admin=admin) == c
    no_result = NvmeCommand(op, nsid, c10, c11, c12, c13, c14, c15, flags, c2, c3, md, addr, mdl, dl, tmo, 0, admin)
    assert NvmeCommand.parse_uring(c.pack_uring(), admin=admin) == no_result


@given(nsid=st.integers(1, 2**32 - 1), slba=U64, nlb=st.integers(1, 65536), pid=st.integers(0, 0xFFFF),
       fua=st.booleans())
def test_write_fields_decode_back(nsid, slba, nlb, pid, fua):
    c = NvmeCommand.parse_uring(nvme.write_cmd(nsid, slba, nlb, dtype=2, dspec=pid, fua=fua).pack_uring())
    assert (c.nsid, c.slba, c.nlb, c.dtype, c.dspec, c.fua) == (nsid, slba, nlb, 2, pid, fua)


def test_short_buffers_and_bad_fields():
    with pytest.raises(FormatError, match="nvme_uring_cmd: need 72 bytes, got 71"):
        NvmeCommand.parse_uring(bytes(71))
    with pytest.raises(FormatError, match="nvme_passthru_cmd64: need 80 bytes, got 72"):
        NvmeCommand.parse_passthru64(bytes(72))
    with pytest.raises(ValueError, match="does not fit"):
        NvmeCommand(0x100).pack_uring()


def test_with_buffer_copies():
    c = nvme.identify_controller()
    d = c.with_buffer(0x1000, 4096)
    assert (c.addr, d.addr, d.data_len, d.cdw10) == (0, 0x1000, 4096, 1)


def test_dsm_ranges_and_command():
    raw = nvme.pack_dsm_ranges([(10, 4), nvme.DsmRange(100, 6, cattr=1)])
    assert raw == struct.pack("<IIQIIQ", 0, 4, 10, 1, 6, 100)   # cattr, nlb (a count), slba
    assert nvme.parse_dsm_ranges(raw) == [nvme.DsmRange(10, 4), nvme.DsmRange(100, 6, 1)]
    c = nvme.dsm_deallocate(3, 2)
    assert (c.opcode, c.nsid, c.cdw10, c.cdw11, c.data_len) == (0x09, 3, 1, 4, 32)
    with pytest.raises(FormatError, match="DSM range list: need 48 bytes for 3 ranges, got 32"):
        nvme.parse_dsm_ranges(raw, 3)
    with pytest.raises(ValueError, match="257 ranges"):
        nvme.pack_dsm_ranges([(i, 1) for i in range(257)])


@given(st.lists(st.tuples(U64, U32, U32), min_size=1, max_size=20))
def test_dsm_round_trip(rs):
    ranges = [nvme.DsmRange(s, n, a) for s, n, a in rs]
    assert nvme.parse_dsm_ranges(nvme.pack_dsm_ranges(ranges)) == ranges


def test_get_log_page_dwords():
    c = nvme.get_log_page(0x20, 0x40000 * 4 + 4, lsi=3, lsp=1, rae=True, lpo=(5 << 32) | 8, csi=2, uuid_index=1)
    numd = 0x40000
    assert c.cdw10 == 0x20 | (1 << 8) | (1 << 15) | ((numd & 0xFFFF) << 16)
    assert c.cdw11 == (numd >> 16) | (3 << 16)
    assert (c.cdw12, c.cdw13, c.cdw14) == (8, 5, 1 | (2 << 24))
    assert c.admin and c.opcode == 0x02 and c.data_len == numd * 4 + 4
    with pytest.raises(ValueError, match="multiple of 4"):
        nvme.get_log_page(0x22, 62)
    with pytest.raises(ValueError, match="the u32 data_len"):
        nvme.get_log_page(0x22, 2**32)


def test_identify_dwords():
    assert (nvme.identify_namespace(5).cdw10, nvme.identify_namespace(5).nsid) == (0, 5)
    assert nvme.identify_controller().cdw10 == 1
    c = nvme.identify_cmd(0x05, nsid=1, csi=2, cntid=3)
    assert (c.cdw10, c.cdw11, c.data_len) == (5 | (3 << 16), 2 << 24, 4096)
    assert nvme.identify_independent_namespace(1).cdw10 == 0x08


def test_features_dwords():
    g = nvme.get_features_fdp(1, sel=3)
    assert (g.opcode, g.cdw10, g.cdw11) == (0x0A, 0x1D | (3 << 8), 1)
    s = nvme.set_features_fdp(2, True, 0x81, save=True)
    assert (s.opcode, s.nsid, s.cdw10, s.cdw11, s.cdw12) == (0x09, 0xFFFFFFFF, 0x1D | (1 << 31), 2, 1 | (0x81 << 8))
    e = nvme.get_features_fdp_events(1, 2, 6)
    assert (e.cdw10, e.cdw11, e.data_len) == (0x1E, 2 | (6 << 16), 12)
    assert nvme.pack_fdp_event_types([0, 0x80]) == b"\x00\x80"


def test_io_management_dwords():
    r = nvme.io_mgmt_recv_ruh_status(1, 16 + 32 * 4)
    assert (r.opcode, r.cdw10, r.cdw11, r.data_len, r.admin) == (0x12, 1, (16 + 128) // 4 - 1, 144, False)
    u = nvme.io_mgmt_send_ruh_update(1, 3)
    assert (u.opcode, u.cdw10, u.data_len) == (0x1D, 1 | (2 << 16), 6)
    assert nvme.pack_ruh_update_pids([1, 0x4002, 3]) == bytes.fromhex("010002400300")
    assert nvme.parse_ruh_update_pids(bytes.fromhex("010002400300")) == [1, 0x4002, 3]
    with pytest.raises(ValueError, match="does not match 3 PIDs"):
        nvme.io_mgmt_send_ruh_update(1, 3, 8)
    with pytest.raises(ValueError, match="at least one"):
        nvme.pack_ruh_update_pids([])


# Passthrough structs nvme-cli 2.3 (Debian 12) sent, captured with tests/nvme/fake_nvme_ioctl.c
# (addr zeroed). Each is (ioctl, hex of the 72-byte struct, our encoder).
NVME_CLI_23 = [
    ("nvme fdp status", nvme.NVME_IOCTL_IO_CMD,
     "120000000100000000000000000000000000000000000000000000000000000000000000"
     "100000000100000003000000000000000000000000000000000000000000000000000000",
     lambda: nvme.io_mgmt_recv_ruh_status(1, 16)),
    ("nvme fdp configs -e 1 (header)", nvme.NVME_IOCTL_ADMIN_CMD,
     "020000000000000000000000000000000000000000000000000000000000000000000000"
     "100000002000030000000100000000000000000000000000000000000000000000000000",
     lambda: nvme.get_log_page(0x20, 16, lsi=1)),
    ("nvme fdp usage -e 2", nvme.NVME_IOCTL_ADMIN_CMD,
     "020000000000000000000000000000000000000000000000000000000000000000000000"
     "200000002100070000000200000000000000000000000000000000000000000000000000",
     lambda: nvme.get_log_page(0x21, 32, lsi=2)),
    ("nvme fdp stats -e 1", nvme.NVME_IOCTL_ADMIN_CMD,
     "020000000000000000000000000000000000000000000000000000000000000000000000"
     "4000000022000f0000000100000000000000000000000000000000000000000000000000",
     lambda: nvme.get_log_page(0x22, 64, lsi=1)),
    ("nvme fdp events -e 1 -E", nvme.NVME_IOCTL_ADMIN_CMD,
     "020000000000000000000000000000000000000000000000000000000000000000000000"
     "001000002301ff0300000100000000000000000000000000000000000000000000000000",
     lambda: nvme.get_log_page(0x23, nvme.FDP_EVENTS_LOG_BYTES, lsi=1, lsp=1)),
    ("nvme fdp update -p 1,0x4002,3", nvme.NVME_IOCTL_IO_CMD,
     "1d0000000100000000000000000000000000000000000000000000000000000000000000"
     "060000000100020000000000000000000000000000000000000000000000000000000000",
     lambda: nvme.io_mgmt_send_ruh_update(1, 3)),
]


@pytest.mark.parametrize("what,ioctl,hexcmd,build", NVME_CLI_23, ids=[x[0] for x in NVME_CLI_23])
def test_encoders_match_nvme_cli_2_3(what, ioctl, hexcmd, build):
    cmd = build()
    assert cmd.admin == (ioctl == nvme.NVME_IOCTL_ADMIN_CMD)
    assert cmd.pack_passthru().hex() == hexcmd


def test_set_events_matches_nvme_cli_2_3_except_its_buffer_length():
    # nvme-cli 2.3 `fdp set-events -n 1 -p 3 -e -t 0,1,128` sends a 255-byte buffer whatever NOET is.
    theirs = NvmeCommand.parse_passthru(bytes.fromhex(
        "090000000100000000000000000000000000000000000000000000000000000000000000"
        "ff0000001e00000003000300010000000000000000000000000000000000000000000000"), admin=True)
    ours = nvme.set_features_fdp_events(1, 3, 3, True)
    assert ours.with_buffer(0, 255) == theirs
    assert ours.data_len == 3


def test_describe():
    assert nvme.describe(nvme.write_cmd(1, 8, 2, dtype=2, dspec=3)) == \
        "Write (0x01) nsid 1 slba 8 nlb 2 dtype 2 dspec 3"
    assert nvme.describe(nvme.get_log_page(0x22, 64, lsi=1)) == "Get Log Page (0x02) LID 0x22 LSI 1"
    assert nvme.describe(nvme.identify_namespace(2)) == "Identify (0x06) CNS 0x00 nsid 2"
    assert nvme.describe(nvme.dsm_deallocate(1, 4)) == "Dataset Management (0x09) nsid 1 4 range(s)"


@given(lid=st.integers(0, 255), dwords=st.integers(1, 2**30 - 1), lsp=st.integers(0, 127), rae=st.booleans(),
       lsi=st.integers(0, 0xFFFF), lpo=st.integers(0, 2**62 - 1).map(lambda x: x * 4), csi=st.integers(0, 255),
       uuid=st.integers(0, 127), ot=st.booleans(), nsid=U32)
def test_decode_get_log_page_inverts_the_encoder(lid, dwords, lsp, rae, lsi, lpo, csi, uuid, ot, nsid):
    cmd = nvme.get_log_page(lid, dwords * 4, nsid=nsid, lsp=lsp, rae=rae, lsi=lsi, lpo=lpo, csi=csi,
                            uuid_index=uuid, ot=ot)
    assert nvme.decode_get_log_page(NvmeCommand.parse_passthru(cmd.pack_passthru(), admin=True)) == \
        nvme.LogPageRequest(lid, dwords * 4, nsid, lsp, rae, lsi, lpo, csi, uuid, ot)


def test_decode_features_and_io_mgmt():
    assert nvme.decode_features(nvme.get_features_fdp(1, sel=2)) == nvme.FeatureRequest(False, 0x1D, 0, 2, False, 1)
    assert nvme.decode_features(nvme.set_features_fdp(1, True, 2, save=True)) == \
        nvme.FeatureRequest(True, 0x1D, 0xFFFFFFFF, 0, True, 1, 0x201)
    assert nvme.decode_features(nvme.set_features_fdp_events(1, 4, 2, False)) == \
        nvme.FeatureRequest(True, 0x1E, 1, 0, False, 4 | (2 << 16), 0)
    r = nvme.decode_io_mgmt(nvme.io_mgmt_recv_ruh_status(1, 144))
    assert (r.send, r.mo, r.mos, r.length) == (False, 1, 0, 144)
    u = nvme.decode_io_mgmt(nvme.io_mgmt_send_ruh_update(1, 5))
    assert (u.send, u.mo, u.npids) == (True, 1, 5)
    with pytest.raises(ValueError, match="Write \\(0x01\\) nsid 1 slba 0 nlb 1 is not Get Log Page"):
        nvme.decode_get_log_page(nvme.write_cmd(1, 0, 1))
    with pytest.raises(ValueError, match="is not I/O Management"):
        nvme.decode_io_mgmt(nvme.read_cmd(1, 0, 1))
