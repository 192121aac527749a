"""flashcache.nvme.status: bit fields, names by (SCT, SC), NvmeError/DeviceError from check_status."""
import errno

import pytest
from hypothesis import given, strategies as st

from flashcache.errors import DeviceError, NvmeError
from flashcache.nvme import check_status, decode_status, encode_status, status_name


def test_bit_fields():
    s = decode_status((1 << 14) | (1 << 13) | (2 << 11) | (2 << 8) | 0x81)
    assert (s.sct, s.sc, s.crd, s.more, s.dnr) == (2, 0x81, 2, True, True)
    assert s.name == "Unrecovered Read Error"
    assert str(s) == "Unrecovered Read Error (SCT 0x2, SC 0x81, DNR, More, CRD 2)"
    assert decode_status(0).ok and decode_status(0).name == "Successful Completion"


@pytest.mark.parametrize("sct,sc,name", [
    (0, 0x02, "Invalid Field in Command"),
    (0, 0x0C, "Command Sequence Error"),
    (0, 0x29, "FDP Disabled"),
    (0, 0x2A, "Invalid Placement Handle List"),
    (0, 0x80, "LBA Out of Range"),
    (0, 0x81, "Capacity Exceeded"),
    (0, 0x82, "Namespace Not Ready"),
    (1, 0x00, "Completion Queue Invalid"),
    (1, 0x01, "Invalid Queue Identifier"),
    (1, 0x09, "Invalid Log Page"),
    (1, 0x0D, "Feature Identifier Not Saveable"),
    (1, 0x0E, "Feature Not Changeable"),
    (1, 0x0F, "Feature Not Namespace Specific"),
    (2, 0x80, "Write Fault"),
    (2, 0x87, "Deallocated or Unwritten Logical Block"),
    (3, 0x02, "Asymmetric Access Inaccessible"),
    (3, 0x71, "Command Aborted By Host"),
])
def test_names(sct, sc, name):
    assert decode_status(encode_status(sct, sc)).name == name


def test_unknown_codes():
    assert status_name(0, 0x7E) == "Unknown status (SCT 0x0, SC 0x7e)"
    assert status_name(5, 0x01) == "Unknown status (SCT 0x5, SC 0x01)"
    assert status_name(7, 0xC0) == "Vendor Specific status (SC 0xc0)"


def test_out_of_range_inputs():
    with pytest.raises(ValueError, match="-errno"):
        decode_status(-5)
    with pytest.raises(ValueError, match="phase bit"):
        decode_status(0x8000)


@given(sct=st.integers(0, 7), sc=st.integers(0, 255), crd=st.integers(0, 3), more=st.booleans(), dnr=st.booleans())
def test_encode_decode_round_trip(sct, sc, crd, more, dnr):
    s = decode_status(encode_status(sct, sc, crd=crd, more=more, dnr=dnr))
    assert (s.sct, s.sc, s.crd, s.more, s.dnr) == (sct, sc, crd, more, dnr)


def test_check_status():
    check_status(0, "/dev/ng0n1", "Write")
    with pytest.raises(NvmeError) as ei:
        check_status(encode_status(0, 0x2A, dnr=True), "/dev/ng0n1", "Write (0x01) nsid 1")
    e = ei.value
    assert (e.sct, e.sc, e.dnr, e.status_name, e.errno) == (0, 0x2A, True, "Invalid Placement Handle List", errno.EIO)
    assert str(e).startswith("/dev/ng0n1: Write (0x01) nsid 1: NVMe status Invalid Placement Handle List "
                             "(SCT 0x0, SC 0x2a)")
    assert "RUH Status" in str(e)   # the hint says where valid PIDs come from
    with pytest.raises(DeviceError) as ei:
        check_status(-errno.EACCES, "/dev/ng0n1", "Get Log Page")
    assert ei.value.errno == errno.EACCES and not isinstance(ei.value, NvmeError)
