"""The file devices (psync and uring) on a real block device, inside tools/nvme-vm.

/dev/nvme0n1 is the namespace through the Linux NVMe block driver: the size comes from
BLKGETSIZE64, trim is BLKDISCARD, O_DIRECT goes to the drive in its own logical block size
(512 B or 4 KiB by VM), and format safety reads the device's own first bytes. Every test
leaves the areas it wrote zeroed, for the passthrough tests that follow.
"""
import os
import random

import pytest

from engines.device import SUPERBLOCK_MAGIC
from flashcache.devices.file import FileDevice
from flashcache.devices.uring import UringDevice
from flashcache.errors import DeviceError, DeviceInUseError, FormatError

from .conftest import BLOCK, VM

pytestmark = pytest.mark.vm

KINDS = [(FileDevice, False), (FileDevice, True), (UringDevice, False), (UringDevice, True)]
IDS = ["psync", "psync-direct", "uring", "uring-direct"]


def _sysfs(name: str) -> int:
    with open(f"/sys/block/nvme0n1/{name}") as f:
        return int(f.read())


def _raw_write(off: int, data: bytes) -> None:
    """Write through the block device's page cache and push it to the drive."""
    fd = os.open(BLOCK, os.O_RDWR)
    try:
        os.pwrite(fd, data, off)
        os.fsync(fd)
    finally:
        os.close(fd)


def _raw_read(off: int, n: int) -> bytes:
    """Read what the drive holds (O_DIRECT: not the page cache)."""
    import mmap
    fd = os.open(BLOCK, os.O_RDONLY | os.O_DIRECT)
    try:
        buf = mmap.mmap(-1, n)
        got = os.preadv(fd, [buf], off)
        return bytes(buf[:got])
    finally:
        os.close(fd)


@pytest.fixture
def clean():
    """Zero (on the drive) what a test wrote: ``clean(off, n)`` registers a range."""
    spots = [(0, 1 << 20)]
    yield lambda off, n: spots.append((off, n))
    for off, n in spots:
        _raw_write(off, bytes(n))


@pytest.mark.parametrize("cls,direct", KINDS, ids=IDS)
def test_size_block_size_and_data_on_the_drive(cls, direct, clean):
    """The whole namespace by BLKGETSIZE64; single and batched I/O, near both ends and
    larger than the staging, land on the drive as written (read back past the cache)."""
    size = _sysfs("size") * 512
    lba = _sysfs("queue/logical_block_size")
    assert lba == (4096 if VM == "fdp4k" else 512)
    with cls(BLOCK, direct=direct, format=True) as d:
        assert d.size == size and d.is_block and d.block_size == 4096
        rnd = random.Random(f"{cls.__name__}{direct}")
        first = SUPERBLOCK_MAGIC + rnd.randbytes(8192 - len(SUPERBLOCK_MAGIC))
        last = rnd.randbytes(16384)
        big = rnd.randbytes(3 << 20)                  # within a uring device's 4 MiB staging...
        bigger = rnd.randbytes(5 << 20)               # ...and past it: the staging reused as pieces finish
        d.write(0, first)
        d.write(size - 16384, last)
        d.write(8 << 20, big)
        d.write(16 << 20, bigger)
        reqs = [((32 << 20) + i * 65536, rnd.randbytes(4096 * (1 + i % 8)), None) for i in range(300)]
        d.write_many(reqs)
        for off, n in ((size - 16384, 16384), (8 << 20, 3 << 20), (16 << 20, 5 << 20), (32 << 20, 300 * 65536)):
            clean(off, n)
        assert d.read(0, 8192) == first and d.read(size - 16384, 16384) == last
        assert d.read(8 << 20, 3 << 20) == big and d.read(16 << 20, 5 << 20) == bigger
        assert d.read_many([(o, len(b)) for o, b, _ in reqs][::-1]) == [b for _, b, _ in reqs][::-1]
        st = d.stats()
        assert st["writes"] == 4 + 300 and st["bytes_written"] == 8192 + 16384 + (8 << 20) + sum(
            len(b) for _, b, _ in reqs)
        with pytest.raises(ValueError, match="ends past the device size"):
            d.read(size - 4096, 8192)
    # what the drive holds, not what a page cache kept
    assert _raw_read(0, 8192) == first and _raw_read(size - 16384, 16384) == last
    assert _raw_read(16 << 20, 5 << 20) == bigger
    assert all(_raw_read(o, len(b)) == b for o, b, _ in reqs[::37])


@pytest.mark.parametrize("cls,direct", KINDS, ids=IDS)
def test_trim_is_blkdiscard_and_reads_back_zeros(cls, direct, clean):
    """trim() on a block device discards the range on the drive (BLKDISCARD, which also
    drops the page cache's copy): the device and a direct read both see zeros after, and
    the blocks around the range keep their data."""
    with cls(BLOCK, direct=direct, format=True) as d:
        data = bytes([0xA5]) * (1 << 20)
        d.write(4 << 20, data)
        clean(4 << 20, 1 << 20)
        d.trim((4 << 20) + 65536, 256 << 10)
        got = d.read(4 << 20, 1 << 20)
        assert got[:65536] == data[:65536] and got[65536:65536 + (256 << 10)] == bytes(256 << 10)
        assert got[65536 + (256 << 10):] == data[65536 + (256 << 10):]
        assert d.stats()["trims"] == 1 and d.stats()["bytes_trimmed"] == 256 << 10
    assert _raw_read((4 << 20) + 65536, 256 << 10) == bytes(256 << 10)


@pytest.mark.parametrize("cls,direct", KINDS, ids=IDS)
def test_format_safety_reads_the_block_devices_own_bytes(cls, direct, clean):
    """A block device holding a filesystem or a partition table is refused without
    format = true, naming what it holds; nothing is written to it. With format = true it
    opens (and says so in the log); a device holding flashcache's superblock opens as is."""
    ext4 = bytearray(4096)
    ext4[0x438:0x43a] = b"\x53\xef"
    _raw_write(0, bytes(ext4))
    with pytest.raises(FormatError, match=r"/dev/nvme0n1: holds an ext2/3/4 filesystem \(signature at byte "
                                          r"0x438\); flashcache will not overwrite it"):
        cls(BLOCK, direct=direct)
    assert _raw_read(0, 4096) == bytes(ext4)
    mbr = bytearray(4096)
    mbr[446:462] = bytes([0x80, 0, 2, 0, 0x83, 0, 0, 0, 1, 0, 0, 0, 0, 0, 1, 0])
    mbr[510:512] = b"\x55\xaa"
    _raw_write(0, bytes(mbr))
    with pytest.raises(FormatError, match="holds an MBR partition table"):
        cls(BLOCK, direct=direct)
    with cls(BLOCK, direct=direct, format=True) as d:
        d.write(0, SUPERBLOCK_MAGIC.ljust(4096, b"\0"))
    with cls(BLOCK, direct=direct) as d:                      # its own superblock: no refusal
        assert d.read(0, 4096).startswith(SUPERBLOCK_MAGIC)


@pytest.mark.parametrize("cls", [FileDevice, UringDevice], ids=["psync", "uring"])
def test_direct_io_misaligned_for_the_device_is_refused_before_the_kernel(cls, clean):
    """O_DIRECT I/O on the block device must be aligned to the device's block size: a
    misaligned offset or length is a clear error, before any I/O; a block_size below the
    drive's logical block size is refused at open."""
    with cls(BLOCK, direct=True, format=True) as d:
        with pytest.raises(ValueError, match="not aligned to the device block size 4096"):
            d.write(512, b"x" * 4096)
        with pytest.raises(ValueError, match="not aligned to the device block size 4096"):
            d.read(0, 1000)
        assert d.stats()["writes"] == 0 and d.stats()["reads"] == 0
    if VM == "fdp4k":
        with pytest.raises(DeviceError, match="block_size 512 is below the device's logical block size 4096"):
            cls(BLOCK, direct=True, block_size=512, format=True)
    else:
        with cls(BLOCK, direct=True, block_size=512, format=True) as d:
            d.write(512, b"y" * 512)
            assert d.read(512, 512) == b"y" * 512 and _raw_read(0, 1024)[512:] == b"y" * 512


@pytest.mark.parametrize("cls", [FileDevice, UringDevice], ids=["psync", "uring"])
def test_one_process_owns_the_block_device(cls):
    """The lock is on the block device node: a second open is refused, a reopen after close works."""
    with cls(BLOCK, format=True):
        with pytest.raises(DeviceInUseError, match=rf"^{BLOCK}: is already open in this process"):
            cls(BLOCK, format=True)
    cls(BLOCK, format=True).close()
