"""The psync file device: sizes, alignment, O_DIRECT, trim, counters, format safety."""
import errno
import os

import pytest

from engines.device import SUPERBLOCK_MAGIC
from flashcache.devices.file import FileDevice
from flashcache.errors import ClosedError, DeviceError, FormatError
from tests.devices.helpers import close_refusing_reads, collected


@pytest.fixture
def img(tmp_path):
    return str(tmp_path / "dev.img")


def test_create_sparse_and_roundtrip(img):
    with FileDevice(img, 4 << 20) as d:
        assert d.size == 4 << 20 and os.path.getsize(img) == 4 << 20
        assert os.stat(img).st_blocks == 0  # sparse
        data = os.urandom(3 * 4096)
        d.write(8192, data)
        assert d.read(8192, len(data)) == data
        assert d.read(0, 4096) == bytes(4096)
        s = d.stats()
        assert (s["writes"], s["bytes_written"], s["reads"], s["bytes_read"]) == (1, 12288, 2, 16384)


def test_batched_forms(img):
    with FileDevice(img, 1 << 20) as d:
        s = d.open_stream("x")
        d.write_many([(i * 4096, bytes([i]) * 4096, s) for i in range(10)])
        got = d.read_many([(i * 4096, 4096) for i in reversed(range(10))])
        assert got == [bytes([i]) * 4096 for i in reversed(range(10))]
        assert d.stats()["bytes_written_by_stream"] == {"x": 40960}


def test_large_io_is_split(img):
    with FileDevice(img, 1 << 20, max_io=16384) as d:
        data = os.urandom(200 * 1024 - 200 * 1024 % 4096)
        d.write(4096, data)
        assert d.read(4096, len(data)) == data


@pytest.mark.parametrize("off, ln", [(1, 4096), (4096, 100), (-4096, 4096)])
def test_misaligned_rejected(img, off, ln):
    with FileDevice(img, 1 << 20) as d, pytest.raises(ValueError, match="not aligned to the device block size 4096"):
        d.read(off, ln)


def test_past_end_rejected(img):
    with FileDevice(img, 1 << 20) as d, pytest.raises(ValueError, match="ends past the device size 1048576"):
        d.write((1 << 20) - 4096, bytes(8192))


def test_direct_io(img):
    with FileDevice(img, 1 << 20, direct=True) as d:
        data = os.urandom(16384)
        d.write(0, SUPERBLOCK_MAGIC + bytes(4096 - len(SUPERBLOCK_MAGIC)))
        d.write(4096, data)
        assert d.read(4096, 16384) == data
        with pytest.raises(ValueError, match="not aligned"):
            d.write(100, data)
    with FileDevice(img, direct=False) as d:   # a buffered reopen sees the same bytes
        assert d.read(4096, 16384) == data


def test_trim_punches_hole(img):
    with FileDevice(img, 1 << 20) as d:
        d.write(0, b"\xff" * (1 << 20))
        before = os.stat(img).st_blocks
        d.trim(65536, 262144)
        assert d.read(65536, 262144) == bytes(262144)
        assert d.read(0, 4096) == b"\xff" * 4096
        assert os.stat(img).st_blocks < before
        assert d.stats()["bytes_trimmed"] == 262144


def test_use_after_close(img):
    d = FileDevice(img, 1 << 20)
    d.close()
    d.close()  # idempotent
    for call in (lambda: d.read(0, 4096), lambda: d.write(0, bytes(4096)), lambda: d.trim(0, 4096),
                 d.flush, lambda: d.open_stream("x")):
        with pytest.raises(ClosedError, match="after close"):
            call()


def test_missing_without_size(img):
    with pytest.raises(DeviceError, match="does not exist and no device.size was given") as ei:
        FileDevice(img)
    assert ei.value.errno == errno.ENOENT


def test_directory_and_parent_missing(tmp_path):
    with pytest.raises(DeviceError, match="is a directory"):
        FileDevice(str(tmp_path), 1 << 20)
    with pytest.raises(DeviceError, match="No such file or directory.*check the path"):
        FileDevice(str(tmp_path / "no" / "dev.img"), 1 << 20)


def test_ext4_signature_refused(img):
    with open(img, "wb") as f:
        f.truncate(1 << 20)
        f.seek(0x438)
        f.write(b"\x53\xef")
    with pytest.raises(FormatError) as ei:
        FileDevice(img)
    assert str(ei.value) == (f"{img}: holds an ext2/3/4 filesystem (signature at byte 0x438); flashcache will "
                             "not overwrite it. If you really want to use it as a cache, set format = true in the "
                             "[device] table of the config; all of its data will be lost")
    with open(img, "rb") as f:  # nothing was written
        f.seek(0x438)
        assert f.read(2) == b"\x53\xef"
    with FileDevice(img, format=True) as d:
        assert d.size == 1 << 20


def test_foreign_data_refused_and_kept(img):
    blob = b"my precious database " * 1000
    with open(img, "wb") as f:
        f.write(blob)
    with pytest.raises(FormatError, match="non-zero data that is not a flashcache device"):
        FileDevice(img, 1 << 20)
    assert open(img, "rb").read() == blob   # untouched, not even resized


def test_own_superblock_and_zero_file_accepted(img):
    with open(img, "wb") as f:
        f.write(SUPERBLOCK_MAGIC + bytes(4096 - len(SUPERBLOCK_MAGIC)))
        f.truncate(1 << 20)
    with FileDevice(img) as d:
        assert d.read(0, 4096).startswith(SUPERBLOCK_MAGIC)
    z = img + ".zero"
    with open(z, "wb") as f:
        f.truncate(1 << 20)
    FileDevice(z).close()


def test_placement_and_waf_say_off(img):
    with FileDevice(img, 1 << 20) as d:
        s = d.open_stream("bighash")
        assert s.pid is None and s.placement.startswith("off: psync regular file device has no FDP")
        assert d.waf_unavailable_reason().startswith("psync device on a regular file cannot report")
        from flashcache.devices import WafUnavailableError
        with pytest.raises(WafUnavailableError, match="device WAF unavailable"):
            d.waf_snapshot()


def test_full_disk_is_a_clear_error(tmp_path):
    # A 64 KiB tmpfs would be ideal; without mount rights use RLIMIT_FSIZE in a child.
    import subprocess
    import sys
    code = f"""
import resource, signal
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
from flashcache.devices.file import FileDevice
d = FileDevice({str(tmp_path / 'full.img')!r}, 1 << 20)
resource.setrlimit(resource.RLIMIT_FSIZE, (65536, 65536))
for off in (65536, 61440):      # nothing fits; half fits (a short write)
    try:
        d.write(off, bytes(8192))
    except Exception as e:
        print(type(e).__name__, e)
print("written in C:", d._c_reads.writes)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    lines = out.stdout.splitlines()
    assert len(lines) == 3, out
    assert lines[0].startswith("DeviceError") and "write of 8192 bytes at offset 65536 failed" in lines[0], out
    assert lines[1].startswith("DeviceError") and "at offset 65536 failed" in lines[1], out
    assert lines[2] == "written in C: 0", out


def test_buffered_writes_take_the_c_path_and_count_as_the_python_write_does(tmp_path):
    """A psync device's single buffered write is one C call (bytes or bytearray, with or
    without a stream); everything unusual goes to the Python write, which names the
    problem. The same writes on a twin device held to the Python write give the same
    bytes on disk and the same counters, per stream too."""
    import types

    a = FileDevice(str(tmp_path / "a.img"), 4 << 20)
    b = FileDevice(str(tmp_path / "b.img"), 4 << 20)
    b.write = types.MethodType(FileDevice.write, b)                          # the Python form
    assert a.write == a._c_reads.write
    for d in (a, b):
        s1, s2 = d.open_stream("bighash"), d.open_stream("blockcache")
        d.write(4096, b"a" * 8192, s1)
        d.write(0, bytearray(b"b" * 4096), s2)
        d.write(16384, b"c" * 4096)                                          # default stream
        d.write(20480, b"d" * 4096, None)
        d.write(24576, memoryview(b"e" * 4096), s1)                          # not bytes: Python
        d.write(28672, b"f" * 4096, stream=s2)                               # a keyword: Python
        with pytest.raises(ValueError, match="not aligned to the device block size 4096"):
            d.write(100, b"x" * 4096, s1)
        with pytest.raises(ValueError, match="ends past the device size"):
            d.write(4 << 20, b"x" * 4096)
        with pytest.raises(TypeError):
            d.write("0", b"x" * 4096)
        with pytest.raises(TypeError, match="a write's stream must be None or a PlacementStream"):
            d.write(0, b"x" * 4096, "not a stream")                          # refused, not written
    assert a._c_reads.writes == 4 and a._c_reads.bytes_written == 5 * 4096
    assert a._c_reads.stream_bytes == {"bighash": 8192, "blockcache": 4096, "default": 8192}
    assert b._c_reads.writes == 0
    sa, sb = a.stats(), b.stats()
    assert sa == {**sb, "path": sa["path"]} and sa["writes"] == 6
    assert sa["bytes_written_by_stream"] == {"bighash": 12288, "blockcache": 8192, "default": 8192}
    assert a.read(0, 32768) == b.read(0, 32768)
    a.close()
    with pytest.raises(ClosedError):
        a.write(0, b"x" * 4096)
    b.close()


@pytest.mark.parametrize("path", ["pwrite", "fdatasync"])
def test_close_waits_for_an_io_on_the_fd(img, monkeypatch, path):
    """close() does not close the fd under an I/O another thread has in the kernel (the
    fd number could be reused by then): it waits for it, and later I/O is refused."""
    import threading
    import time

    import flashcache.devices.file as file_mod
    d = FileDevice(img, 4 << 20)
    inside, release = threading.Event(), threading.Event()
    real = getattr(os, path)

    def slow(*a):
        inside.set()
        assert release.wait(10)
        return real(*a)

    monkeypatch.setattr(file_mod.os, path, slow)
    io = (lambda: d.write(0, memoryview(b"w" * 4096))) if path == "pwrite" else d.flush  # the Python paths
    worker = threading.Thread(target=io)
    worker.start()
    assert inside.wait(10)
    closer = threading.Thread(target=d.close)
    closer.start()
    time.sleep(0.05)
    assert closer.is_alive() and d._busy == 1
    os.fstat(d.fd)                                    # still open under the I/O
    release.set()
    worker.join(10)
    closer.join(10)
    assert not closer.is_alive()
    with pytest.raises(OSError):
        os.fstat(d.fd)
    with pytest.raises(ClosedError):
        d.write(0, memoryview(b"w" * 4096))
    monkeypatch.undo()
    assert open(img, "rb").read(4096) == (b"w" * 4096 if path == "pwrite" else bytes(4096))


def test_buffered_reads_take_the_c_path_and_fall_back_for_the_rest(img):
    """A psync device's single buffered read is one C call; everything unusual falls back
    to the Python read, which names the problem; the counters add both up."""

    from flashcache.uring._results_c import Reader
    d = FileDevice(img, 4 << 20)
    assert isinstance(d._c_reads, Reader)
    d.write(4096, b"z" * 8192)
    assert d.read(4096, 8192) == b"z" * 8192 and d._c_reads.reads == 1       # C
    assert d.read(0, 4 << 20) == bytes(4096) + b"z" * 8192 + bytes((4 << 20) - 12288)   # C too
    with pytest.raises(ValueError, match="not aligned to the device block size 4096"):
        d.read(100, 4096)
    with pytest.raises(TypeError):
        d.read("0", 4096)
    with pytest.raises(ValueError, match="ends past the device size"):
        d.read(4 << 20, 4096)
    os.truncate(img, 8192)                                                    # behind its back
    with pytest.raises(DeviceError, match="truncated behind flashcache's back"):
        d.read(8192, 4096)
    os.truncate(img, 4 << 20)
    st = d.stats()
    assert st["reads"] == 2 and st["bytes_read"] == 8192 + (4 << 20)
    ref = close_refusing_reads(d)
    del d
    assert collected(ref)


def test_direct_reads_and_writes_take_the_c_path_through_an_aligned_buffer(img):
    """With O_DIRECT the C Reader reads and writes through the calling thread's aligned
    64 KiB buffer (its own per thread); larger I/O, misaligned I/O and a file truncated
    behind its back go to the Python forms, which still say what went wrong."""
    import threading
    with FileDevice(img, 4 << 20, direct=True, format=True) as d:
        r = d._c_reads
        assert d.read == r.read and d.write == r.write
        d.write(8192, b"q" * 65536)                                     # C: fits the buffer
        d.write(4096, bytearray(b"p" * 4096))                            # C
        assert d.read(4096, 4096 + 65536) == b"p" * 4096 + b"q" * 65536  # too big: Python
        assert d.read(8192, 65536) == b"q" * 65536                       # C
        d.write(2 << 20, b"r" * (128 << 10))                             # too big: Python
        got = []
        t = threading.Thread(target=lambda: got.append((d.write(1 << 20, b"t" * 4096), d.read(1 << 20, 4096))))
        t.start()
        t.join()
        assert got == [(None, b"t" * 4096)]
        assert (r.reads, r.writes) == (2, 3) and r.bytes_written == 65536 + 2 * 4096
        with open(img, "rb") as f:                                       # what O_DIRECT wrote
            disk = f.read()
        assert disk[4096:8192 + 65536] == b"p" * 4096 + b"q" * 65536
        assert disk[1 << 20:(1 << 20) + 4096] == b"t" * 4096 and disk[2 << 20:(2 << 20) + 131072] == b"r" * 131072
        with pytest.raises(ValueError, match="not aligned to the device block size 4096"):
            d.read(512, 4096)
        os.truncate(img, 8192)
        with pytest.raises(DeviceError, match="truncated behind flashcache's back"):
            d.read(8192, 4096)
        os.truncate(img, 4 << 20)
        st = d.stats()
        assert (st["reads"], st["writes"]) == (3, 4) and st["bytes_read"] == 2 * 65536 + 2 * 4096


def _open_kind(kind, tmp_path, name):
    from flashcache.devices.uring import UringDevice
    if kind == "emulated":
        from flashcache.devices.emulated import open_emulated
        from flashcache.emulator import Geometry
        return open_emulated(str(tmp_path / f"{name}.ssd"), Geometry(
            capacity_bytes=16 << 20, op=0.12, ru_bytes=256 << 10, handles=("II",) * 2, lba_size=4096))
    cls = UringDevice if kind.startswith("uring") else FileDevice
    return cls(str(tmp_path / f"{name}.img"), 1 << 20, direct=kind.endswith("direct"))


@pytest.mark.parametrize("kind", ["psync", "psync-direct", "uring", "uring-direct", "emulated"])
def test_a_write_with_a_stream_this_device_did_not_open_is_refused_before_any_io(tmp_path, kind):
    """A stream must be None or one this device's open_stream() gave: anything else (no
    stream at all, another device's) is refused with what to do, single or batched, on the
    C fast paths too, and nothing is written or counted, not even the batch's good items."""
    with _open_kind(kind, tmp_path, "a") as d, _open_kind(kind, tmp_path, "b") as other:
        mine, theirs = d.open_stream("bighash"), other.open_stream("bighash")
        data = b"\x5a" * 4096
        d.write(0, data, mine)                       # its own stream, and None: fine
        d.write(4096, data)
        counted = ("writes", "bytes_written", "bytes_written_by_stream", "errors")
        before = {k: d.stats()[k] for k in counted}
        with pytest.raises(TypeError, match=r"a write's stream must be None or a PlacementStream from "
                                            r"this device's open_stream\(name\), not str 'bighash'"):
            d.write(8192, data, "bighash")
        with pytest.raises(ValueError, match=r"stream 'bighash' was not opened on this device \(another "
                                             r"device's\?\); open it here with open_stream\('bighash'\)"):
            d.write(8192, data, theirs)
        with pytest.raises(ValueError, match="was not opened on this device"):
            d.write(8192, bytearray(data), theirs)
        for bad in (theirs, object()):
            with pytest.raises((TypeError, ValueError)):
                d.write_many([(8192, data, mine), (12288, data, bad), (16384, data, None)])
        assert {k: d.stats()[k] for k in counted} == before
        assert d.read_many([(8192, 4096), (12288, 4096), (16384, 4096)]) == [bytes(4096)] * 3


# -- mapped reads (flashcache/uring/results.c: Reader.map_reads) ---------------------------

def test_mapped_reads_read_what_pread_reads(tmp_path):
    """A buffered device's reads of up to a page copy from a mapping of the file; against a
    twin that preads everything: the same bytes through writes, hole punching, a write by
    another descriptor and reads of every size, and the same counters."""
    import random

    a = FileDevice(str(tmp_path / "a.img"), 1 << 20)
    b = FileDevice(str(tmp_path / "b.img"), 1 << 20)
    try:
        assert a._c_reads.mapped and b._c_reads.mapped
        b._c_reads.unmap()                                   # the twin: pread only
        assert not b._c_reads.mapped
        other = [os.open(str(tmp_path / n), os.O_WRONLY) for n in ("a.img", "b.img")]
        rnd = random.Random(5)
        for step in range(600):
            off = rnd.randrange(256) * 4096
            what = rnd.random()
            if what < 0.35:
                data = bytes([step % 251]) * rnd.choice([4096, 8192])
                off = min(off, (1 << 20) - len(data))
                a.write(off, data)
                b.write(off, data)
            elif what < 0.4:
                a.trim(off, 4096)
                b.trim(off, 4096)
            elif what < 0.45:
                for fd in other:                             # behind the device, through the page cache
                    os.pwrite(fd, b"o" * 4096, off)
            else:
                n = rnd.choice([4096, 4096, 8192, 65536])
                off = min(off, (1 << 20) - n)
                assert a.read(off, n) == b.read(off, n), (step, off, n)
        for fd in other:
            os.close(fd)
        sa, sb = a.stats(), b.stats()
        assert (sa["reads"], sa["bytes_read"]) == (sb["reads"], sb["bytes_read"])
    finally:
        a.close()
        b.close()


def test_a_mapped_read_of_a_page_the_file_lost_is_an_error_not_a_crash(img):
    """Where pread fails, a copy from the mapping faults (SIGBUS): the read goes to pread,
    whose error the device raises; the BigHash core's read through the hook too. The
    device keeps working where the file is whole. (The SIGBUS handler sits in front of
    pytest's faulthandler, so a crash here would end the run.)"""
    from engines.bighash import BigHash

    d = FileDevice(img, 4 << 20)
    try:
        assert d._c_reads.mapped
        bh = BigHash(1 << 20, 1 << 20, 4096)                  # its buckets from 1 MiB on
        bh.insert_now(d, b"k", b"v")
        d.write(0, b"a" * 4096)
        os.truncate(img, 8192)                                # behind its back: the bucket's page is gone
        with pytest.raises(DeviceError, match="truncated behind flashcache's back"):
            d.read(1 << 20, 4096)
        with pytest.raises(DeviceError, match="truncated behind flashcache's back"):
            bh.lookup_item_now(d, b"k")
        assert d.read(0, 4096) == b"a" * 4096                  # still mapped, still reading
        os.truncate(img, 4 << 20)
    finally:
        d.close()


CHAINED = """
import mmap, os, signal, sys
sys.path.insert(0, {root!r})
if sys.argv[1] == "faulthandler":
    import faulthandler
    faulthandler.enable()
from flashcache.devices.file import FileDevice
d = FileDevice({img!r}, 1 << 20)
assert d._c_reads.mapped
if sys.argv[2] == "sent":
    os.kill(os.getpid(), signal.SIGBUS)
else:                                                         # a fault outside flashcache's copies
    with open({other!r}, "wb") as f:
        f.write(bytes(8192))
    with open({other!r}, "r+b") as f:
        m = mmap.mmap(f.fileno(), 8192)
        os.truncate({other!r}, 0)
        m[4096]
print("survived", flush=True)
"""


@pytest.mark.parametrize("how", ["sent", "fault"])
@pytest.mark.parametrize("before", ["default", "faulthandler"])
def test_a_sigbus_not_from_a_mapped_read_goes_to_the_handler_before(tmp_path, how, before):
    """The handler passes every other SIGBUS on: a fault elsewhere, or the signal sent,
    ends the process as it would have (the default action, or faulthandler first)."""
    import signal
    import subprocess
    import sys
    from pathlib import Path

    root = str(Path(__file__).resolve().parents[2])
    code = CHAINED.format(root=root, img=str(tmp_path / "dev.img"), other=str(tmp_path / "other"))
    p = subprocess.run([sys.executable, "-c", code, before, how], capture_output=True, text=True, timeout=60)
    assert p.returncode == -signal.SIGBUS and "survived" not in p.stdout, (p.returncode, p.stdout, p.stderr)
    assert ("Fatal Python error: Bus error" in p.stderr) == (before == "faulthandler"), p.stderr


def test_a_forked_child_has_no_mapping_and_reads_through_pread(img):
    """The mapping is not inherited (MADV_DONTFORK): a Reader in a forked child reads with
    pread, and its unmap() leaves the child's memory alone."""
    from flashcache.uring._results_c import Reader
    from tests.devices.helpers import in_child

    fd = os.open(img, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        os.ftruncate(fd, 1 << 20)
        os.pwrite(fd, b"m" * 4096, 8192)
        r = Reader(fd, 1 << 20, 4095, 1 << 20, lambda off, n: b"fallback", 0)
        assert r.map_reads() and r.mapped and r.read(8192, 4096) == b"m" * 4096

        def child():
            state = (r.mapped, r.read(8192, 4096) == b"m" * 4096)
            r.unmap()
            return state + (bytes(100_000) == bytes(100_000),)

        assert in_child(child) == (False, True, True)
        assert r.mapped and r.read(8192, 4096) == b"m" * 4096 and r.reads == 2    # the parent's, still mapped
        r.close()
        r.unmap()
        assert not r.mapped
    finally:
        os.close(fd)
