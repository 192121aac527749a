"""Format safety: what a target holds, decided from its first bytes."""
import pytest

from engines.device import SUPERBLOCK_MAGIC
from flashcache.devices.safety import PROBE_BYTES, SIGNATURES, classify


def at(off: int, magic: bytes) -> bytes:
    b = bytearray(PROBE_BYTES)
    b[off:off + len(magic)] = magic
    return bytes(b)


@pytest.mark.parametrize("name, off, magic", SIGNATURES)
def test_each_signature_is_foreign(name, off, magic):
    v = classify(at(off, magic))
    assert v.kind == "foreign" and v.what.startswith(name)


def test_mbr():
    b = bytearray(PROBE_BYTES)
    b[446:462] = b"\x80" + bytes(3) + b"\x83" + bytes(11)
    b[510:512] = b"\x55\xaa"
    assert classify(bytes(b)).what.startswith("an MBR partition table")


def test_empty_ours_and_other():
    assert classify(bytes(PROBE_BYTES)).kind == "empty"
    assert classify(b"").kind == "empty"
    assert classify(SUPERBLOCK_MAGIC + bytes(100)).kind == "flashcache"
    v = classify(bytes(300) + b"x")
    assert v.kind == "foreign" and "first at byte 0x12c" in v.what


def test_check_device_reads_through_the_device(tmp_path):
    """Devices without a file to probe (NVMe namespaces) are checked through their reads."""
    import logging
    from flashcache.devices.file import FileDevice
    from flashcache.devices.safety import check_device
    from flashcache.errors import FormatError
    p = tmp_path / "ns.img"
    p.write_bytes(bytes(0x438) + b"\x53\xef" + bytes((1 << 20) - 0x43A))   # an ext4 superblock magic
    dev = FileDevice(str(p), 1 << 20, format=True)
    try:
        log = logging.getLogger("t")
        import pytest
        with pytest.raises(FormatError, match=r"holds an ext2/3/4 filesystem .* set format = true in the \[device\] table"):
            check_device(dev, False, log)
        check_device(dev, True, log)                      # allowed: said in the log
        dev.write(0, bytes(dev.size))
        check_device(dev, False, log)                     # all zero: empty
    finally:
        dev.close()
