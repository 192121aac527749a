"""The uring device: the file device's contract, through io_uring batches."""
import errno
import os

import pytest

from engines.device import SUPERBLOCK_MAGIC
from flashcache.devices.uring import UringDevice
from flashcache.uring.ring import ffi
from flashcache.errors import ClosedError, DeviceError
from tests.devices.helpers import close_refusing_reads, collected


@pytest.fixture
def img(tmp_path):
    return str(tmp_path / "u.img")


def test_roundtrip_and_counters(img):
    with UringDevice(img, 8 << 20, queue_depth=8) as d:
        data = os.urandom(12288)
        d.write(4096, data)
        assert d.read(4096, 12288) == data
        st = d.stats()
        assert st["engine"] == "uring" and st["ring"]["fixed_buffers"] == "on"
        assert (st["writes"], st["bytes_written"], st["reads"], st["bytes_read"]) == (1, 12288, 1, 12288)


def test_batches_larger_than_the_ring_and_slots(img):
    with UringDevice(img, 16 << 20, queue_depth=4) as d:
        s = d.open_stream("x")
        n = 300
        d.write_many([(i * 8192, bytes([i % 251]) * 8192, s) for i in range(n)])
        got = d.read_many([(i * 8192, 8192) for i in reversed(range(n))])
        assert got == [bytes([i % 251]) * 8192 for i in reversed(range(n))]
        big = os.urandom(1 << 20)            # 16 pieces of 64 KiB through a 256 KiB stage
        d.write(4 << 20, big)
        assert d.read(4 << 20, 1 << 20) == big
        assert d.stats()["bytes_written_by_stream"]["x"] == n * 8192


@pytest.mark.parametrize("direct", [False, True])
def test_io_larger_than_the_staging_runs_in_one_staged_batch(img, monkeypatch, direct):
    """Single I/O and batches larger than the staging buffer (4 x 64 KiB here) go through
    one staged C batch on the thread's ring (the stage reused as pieces complete), with
    the bytes right on disk and back, buffered and O_DIRECT."""
    import random
    from flashcache.uring import Ring
    calls = []
    real = Ring.rw_staged

    def counted(self, write, fd, stage, stage_bytes, lens, offs, buf_index, user):
        calls.append((write, len(lens), sum(lens), stage_bytes))
        return real(self, write, fd, stage, stage_bytes, lens, offs, buf_index, user)

    monkeypatch.setattr(Ring, "rw_staged", counted)
    rnd = random.Random(3)
    with UringDevice(img, 32 << 20, queue_depth=4, direct=direct, format=True) as d:
        region = os.urandom(3 << 20)
        d.write(8 << 20, region)
        assert d.read(8 << 20, 3 << 20) == region
        assert calls == [(True, 48, 3 << 20, 256 << 10), (False, 48, 3 << 20, 256 << 10)]
        reqs = [(i * (128 << 10), os.urandom(rnd.choice([4096, 65536, 131072])), None) for i in range(40)]
        d.write_many(reqs)
        assert d.read_many([(o, len(b)) for o, b, _ in reqs][::-1]) == [b for _, b, _ in reqs][::-1]
        assert len(calls) == 4 and calls[2][2] == sum(len(b) for _, b, _ in reqs) > 256 << 10
    with open(img, "rb") as f:
        f.seek(8 << 20)
        assert f.read(3 << 20) == region


def test_staged_read_past_a_truncated_end_names_where_it_stopped(img):
    """A staged read that finds the file shorter (cut behind flashcache's back) fails with
    the offset where the bytes ran out and how many of the request's were left."""
    with UringDevice(img, 4 << 20, queue_depth=2) as d:
        d.write(0, os.urandom(1 << 20))
        os.truncate(img, (1 << 20) - 4096 * 3)
        with pytest.raises(DeviceError, match=r"read at offset 1036288 made no progress "
                                              r"\(12288 of 65536 bytes left\)"):
            d.read(0, 1 << 20)


def test_direct_io_through_the_ring(img):
    with UringDevice(img, 4 << 20, direct=True) as d:
        data = SUPERBLOCK_MAGIC + os.urandom(65536 - len(SUPERBLOCK_MAGIC))
        d.write(0, data)
        assert d.read(0, 65536) == data
        assert d.read_many([(4096, 4096), (0, 4096)]) == [data[4096:8192], data[:4096]]


def test_misaligned_direct_io_rejected_before_the_kernel(img):
    with UringDevice(img, 4 << 20, direct=True) as d:
        with pytest.raises(ValueError, match=r"read at offset 512 length 4096 is not aligned to the device block size 4096"):
            d.read(512, 4096)
        with pytest.raises(ValueError, match="not aligned"):
            d.write_many([(0, bytes(4096), None), (4096, bytes(100), None)])
        assert d.stats()["writes"] == 0   # nothing of the bad batch was written


def test_error_names_request(img):
    with UringDevice(img, 4 << 20) as d:
        os.close(d.fd)
        try:
            with pytest.raises(DeviceError, match=r"read of 4096 bytes at offset 8192 failed: Bad file descriptor") as ei:
                d.read(8192, 4096)
            assert ei.value.errno == errno.EBADF and d.stats()["errors"] == 1
        finally:
            d.fd = os.open(img, os.O_RDWR)


def test_truncated_file_is_reported(img):
    with UringDevice(img, 4 << 20) as d:
        os.truncate(img, 8192)
        with pytest.raises(DeviceError, match="truncated behind flashcache's back"):
            d.read(1 << 20, 4096)


def test_use_after_close(img):
    d = UringDevice(img, 1 << 20)
    d.close()
    with pytest.raises(ClosedError):
        d.read_many([(0, 4096)])
    with pytest.raises(ClosedError):
        d.write(0, bytes(4096))


def test_threads_share_one_device(img):
    import threading
    with UringDevice(img, 8 << 20, queue_depth=8) as d:
        errors = []

        def work(t):
            try:
                for i in range(50):
                    off = (t * 50 + i) * 4096
                    d.write(off, bytes([t]) * 4096)
                    assert d.read(off, 4096) == bytes([t]) * 4096
            except Exception as e:   # reported below
                errors.append(e)

        ts = [threading.Thread(target=work, args=(t,)) for t in range(4)]
        [t.start() for t in ts]
        [t.join() for t in ts]
        assert not errors


def test_packed_batch_reports_the_short_request_and_accepts_any_buffer(img):
    """A packed batch (many small requests, one C call) checks each result: the request
    past a truncated end is named; bytes, bytearray and memoryview data all write."""
    with UringDevice(img, 4 << 20, queue_depth=4) as d:
        d.write_many([(0, bytes([1]) * 4096, None), (4096, bytearray([2]) * 8192, None),
                      (16384, memoryview(bytes([3]) * 4096), None),
                      (20480, memoryview(bytearray(4096 * 2)).cast("B", (2, 4096)), None)])
        assert d.read_many([(16384, 4096), (0, 4096), (4096, 8192), (20480, 8192)]) == \
            [bytes([3]) * 4096, bytes([1]) * 4096, bytes([2]) * 8192, bytes(8192)]
        st = d.stats()
        assert (st["writes"], st["bytes_written"], st["reads"], st["bytes_read"]) == (4, 24576, 4, 24576)
        os.truncate(img, 1 << 20)
        with pytest.raises(DeviceError, match=r"read at offset 2097152 made no progress"):
            d.read_many([(0, 4096)] * 9 + [(2 << 20, 4096)] + [(4096, 4096)] * 9)


def test_single_reads_from_many_threads_use_their_own_rings(img):
    import random
    import threading
    d = UringDevice(img, 4 << 20)
    blocks = [bytes([i]) * 4096 for i in range(256)]
    d.write_many([(i * 4096, b, None) for i, b in enumerate(blocks)])
    bad = []

    def work(seed):
        rnd = random.Random(seed)
        for _ in range(3000):
            i = rnd.randrange(256)
            if d.read(i * 4096, 4096) != blocks[i]:
                bad.append(i)

    ts = [threading.Thread(target=work, args=(s,)) for s in range(4)]
    [t.start() for t in ts]
    [t.join() for t in ts]
    assert not bad
    # one read ring for the opener and for each reader thread, and the opener's batch ring
    assert len(d._thread_rings) - d._batch_rings == 5 and d._batch_rings == 1
    assert d.stats()["reads"] == 12000
    d.close()
    with pytest.raises(ClosedError):
        d.read(0, 4096)


@pytest.mark.parametrize("own_ring", [True, False])
def test_packed_read_finishes_a_request_the_kernel_split(img, monkeypatch, own_ring):
    """A request that completes short (the kernel may split) is read to its end and its
    result holds all of it, although the C loop copied only the first part on; on this
    thread's batch ring and on the device ring (where batches go without one)."""
    with UringDevice(img, 4 << 20, queue_depth=4) as d:
        blocks = [bytes([i + 1]) * 8192 for i in range(6)]
        d.write_many([(i * 8192, b, None) for i, b in enumerate(blocks)])
        if not own_ring:
            d._tls.batch = None
        ring = d._tls.batch.ring if own_ring else d.ring
        assert (ring is d.ring) is not own_ring
        real = ring.read_packed_into
        split = []

        def split_third(fd, base, lens, offs, buf_index, dst):
            res = real(fd, base, lens, offs, buf_index, dst)
            # as if request 2 had stopped after 1 KiB: its result and staging past that are stale
            ptr = ffi.cast("char **", ffi.from_buffer(dst))[2]
            ffi.memmove(ptr + 1024, b"\0" * 7168, 7168)
            ffi.memmove(ffi.cast("char *", base) + 2 * 8192 + 1024, b"\xee" * 7168, 7168)
            res[2] = 1024
            split.append(base)
            return res

        monkeypatch.setattr(ring, "read_packed_into", split_third)
        assert d.read_many([(i * 8192, 8192) for i in range(6)]) == blocks
        assert len(split) == 1


def test_batches_run_on_each_threads_own_ring(img):
    """Each thread's batches run on a SINGLE_ISSUER|DEFER_TASKRUN ring of its own (no lock
    between threads); their data, results and counters are those of one device."""
    import threading
    d = UringDevice(img, 4 << 20, queue_depth=8)
    errors = []

    def work(t):
        try:
            for rnd in range(40):
                reqs = [((t * 64 + i) * 4096, bytes([t * 16 + rnd % 16]) * 4096, None) for i in range(64)]
                d.write_many(reqs)
                got = d.read_many([(o, 4096) for o, _, _ in reqs][::-1])
                if got != [b for _, b, _ in reqs][::-1]:
                    errors.append((t, rnd))
        except Exception as e:                      # noqa: BLE001 - reported below
            errors.append(e)

    ts = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    [t.start() for t in ts]
    [t.join() for t in ts]
    assert not errors
    assert d._batch_rings == 4 and all(r.defer_taskrun for r in d._thread_rings if r.entries == 8)
    assert d.stats()["ring"]["batch_rings"] == "4 per-thread, SINGLE_ISSUER|DEFER_TASKRUN"
    st = d.stats()
    assert (st["writes"], st["reads"], st["bytes_written"]) == (4 * 40 * 64, 4 * 40 * 64, 4 * 40 * 64 * 4096)
    d.close()
    with pytest.raises(ClosedError):
        d.read_many([(0, 4096)])
    with pytest.raises(ClosedError):
        d.write_many([(0, b"x" * 4096, None)])


def test_single_io_shares_the_device_ring_when_a_read_ring_cannot_be_made(img, monkeypatch, caplog):
    """A thread ring whose buffer cannot be registered is closed, not kept; single reads
    and writes then go through the device ring, said once in the log."""
    from flashcache.uring.ring import Ring
    real = Ring.register_buffers
    refused = []

    def no_room(ring, count, size):
        if ring.entries == 2:                       # the per-thread single-I/O rings
            refused.append(ring)
            raise DeviceError(None, "no room to lock the buffer", errno.ENOMEM)
        return real(ring, count, size)

    monkeypatch.setattr(Ring, "register_buffers", no_room)
    import threading
    with caplog.at_level("WARNING", logger="flashcache.devices"), UringDevice(img, 4 << 20, queue_depth=4) as d:
        d.write(0, b"a" * 4096)
        t = threading.Thread(target=lambda: d.write(4096, b"b" * 4096))
        t.start()
        t.join()
        assert d.read(0, 4096) == b"a" * 4096 and d.read(4096, 4096) == b"b" * 4096
        assert len(refused) == 2 and all(r._closed for r in refused)
        assert d._tls.reader is None and not any(r.entries == 2 for r in d._thread_rings)
        assert (d.stats()["reads"], d.stats()["writes"]) == (2, 2)
    assert sum("per-thread read rings unavailable" in r.getMessage() for r in caplog.records) == 1


def test_batches_share_the_device_ring_when_a_thread_ring_cannot_be_made(img, monkeypatch, caplog):
    import flashcache.devices.uring as uring_mod
    real = uring_mod.Ring

    def no_defer(*a, defer_taskrun=False, **k):
        if defer_taskrun:
            raise DeviceError(None, "no room for another ring", errno.ENOMEM)
        return real(*a, **k)

    monkeypatch.setattr(uring_mod, "Ring", no_defer)
    with caplog.at_level("WARNING", logger="flashcache.devices"), UringDevice(img, 4 << 20, queue_depth=4) as d:
        d.write_many([(i * 4096, bytes([i]) * 4096, None) for i in range(16)])
        assert d.read_many([(i * 4096, 4096) for i in range(16)]) == [bytes([i]) * 4096 for i in range(16)]
        assert d._tls.batch is None and d._batch_rings == 0
        assert d.stats()["ring"]["batch_rings"].startswith("off: ") and "no room" in d.stats()["ring"]["batch_rings"]
    assert sum("per-thread batch rings unavailable" in r.getMessage() for r in caplog.records) == 1


@pytest.mark.parametrize("direct", [False, True])
def test_every_uring_io_goes_through_the_ring(img, monkeypatch, direct):
    """A uring device never takes the psync syscalls, single or batched, buffered or direct."""
    import flashcache.devices.file as file_mod

    def refuse(*a, **k):
        raise AssertionError("a uring device called a psync syscall")

    with UringDevice(img, 4 << 20, direct=direct, queue_depth=4) as d:
        for name in ("pread", "pwrite", "preadv", "pwritev"):
            monkeypatch.setattr(file_mod.os, name, refuse)
        d.write(8192, b"a" * 4096)
        d.write(65536, bytearray(b"b" * (256 << 10)))       # larger than a slot
        d.write_many([(0, b"c" * 4096, None), (4096, b"d" * 4096, None)])
        assert d.read(8192, 4096) == b"a" * 4096
        assert d.read(65536, 256 << 10) == b"b" * (256 << 10)
        assert d.read_many([(0, 4096), (4096, 4096)]) == [b"c" * 4096, b"d" * 4096]


def test_batched_writes_count_bytes_per_stream(img):
    with UringDevice(img, 4 << 20, queue_depth=4) as d:
        x, y = d.open_stream("x"), d.open_stream("y")
        d.write_many([(0, b"a" * 4096, x), (4096, b"b" * 8192, x)])             # one stream
        d.write_many([(16384, b"c" * 4096, y), (20480, b"d" * 4096, None), (24576, b"e" * 4096, x)])
        d.write_many([])
        st = d.stats()
        assert st["bytes_written_by_stream"] == {"x": 16384, "y": 4096, "default": 4096}
        assert (st["writes"], st["bytes_written"]) == (5, 24576)


@pytest.mark.parametrize("direct", [False, True])
def test_single_writes_run_in_c_on_each_threads_ring(tmp_path, direct):
    """A single write is one C call on the calling thread's own ring (a new thread's first
    write makes its ring through the Python fallback); everything unusual goes to the
    Python write, which names the problem. A twin device held to the Python write gets
    the same bytes and the same counters, per stream too."""
    import threading
    import types

    from flashcache.devices.base import BaseDevice
    a = UringDevice(str(tmp_path / "a.img"), 4 << 20, direct=direct, queue_depth=4)
    b = UringDevice(str(tmp_path / "b.img"), 4 << 20, direct=direct, queue_depth=4)
    b.write = types.MethodType(BaseDevice.write, b)                         # the Python form
    assert a.write == a._c_reads.write
    for d in (a, b):
        x, y = d.open_stream("x"), d.open_stream("y")
        d.write(0, b"a" * 4096, x)
        d.write(8192, bytearray(b"b" * 8192), y)
        d.write(16384, b"c" * 4096)
        d.write(20480, memoryview(b"d" * 4096), x)                          # not bytes: Python
        d.write(24576, b"e" * 4096, stream=y)                               # a keyword: Python
        d.write(65536, b"f" * (256 << 10), x)                               # larger than a slot: Python
        t = threading.Thread(target=lambda d=d, x=x: [d.write(i * 4096, b"t" * 4096, x) for i in range(40, 44)])
        t.start()
        t.join()
        with pytest.raises(ValueError, match="not aligned to the device block size 4096"):
            d.write(100, b"z" * 4096)
        with pytest.raises(ValueError, match="ends past the device size"):
            d.write(4 << 20, b"z" * 4096)
    assert a._c_reads.writes == 3 + 3          # the thread's first write made its ring in Python
    assert b._c_reads.writes == 0
    sa, sb = a.stats(), b.stats()
    for k in ("writes", "bytes_written", "bytes_written_by_stream", "errors"):
        assert sa[k] == sb[k], k
    assert sa["writes"] == 10 and sa["bytes_written_by_stream"]["x"] == 4096 * 6 + (256 << 10)
    assert a.read(0, 1 << 20) == b.read(0, 1 << 20)
    a.close()
    with pytest.raises(ClosedError):
        a.write(0, b"z" * 4096)
    b.close()


def test_a_failed_single_write_is_a_clear_error(tmp_path):
    """A write the kernel fails (here past RLIMIT_FSIZE, in a child) comes out of the C path
    as the device's DeviceError, written by nothing."""
    import subprocess
    import sys
    code = f"""
import resource, signal
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
from flashcache.devices.uring import UringDevice
d = UringDevice({str(tmp_path / 'full.img')!r}, 1 << 20)
d.write(0, bytes(4096))                      # through C (the opening thread has its ring)
resource.setrlimit(resource.RLIMIT_FSIZE, (65536, 65536))
try:
    d.write(65536, bytes(4096))
except Exception as e:
    print(type(e).__name__, e)
print("written in C:", d._c_reads.writes, "errors:", d.stats()["errors"])
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    lines = out.stdout.splitlines()
    assert len(lines) == 2, out
    assert lines[0].startswith("DeviceError") and "write of 4096 bytes at offset 65536 failed" in lines[0], out
    assert lines[1] == "written in C: 1 errors: 1", out      # the failed one counted as an error only


def test_single_reads_run_in_c_on_each_threads_ring(img):
    """The opening thread reads in one C call at once; another thread's first read makes
    its ring through the Python fallback, its later reads are C too; stats add both up;
    after close every read is refused; a dropped device is collected."""
    import threading

    from flashcache.uring._results_c import Reader
    d = UringDevice(img, 4 << 20)
    assert isinstance(d._c_reads, Reader)
    blocks = [bytes([i + 1]) * 4096 for i in range(8)]
    d.write_many([(i * 4096, b, None) for i, b in enumerate(blocks)])
    assert [d.read(i * 4096, 4096) for i in range(8)] == blocks
    assert d._c_reads.reads == 8
    got = []
    t = threading.Thread(target=lambda dev: got.extend(dev.read(i * 4096, 4096) for i in range(8)), args=(d,))
    t.start()
    t.join()
    assert got == blocks
    assert d._c_reads.reads == 8 + 7           # the thread's first read made its ring in Python
    assert len(d._thread_rings) - d._batch_rings == 2 and d._batch_rings == 1   # + the opener's batch ring
    st = d.stats()
    assert (st["reads"], st["bytes_read"]) == (16, 16 * 4096)
    with pytest.raises(ValueError, match="not aligned"):
        d.read(100, 4096)
    ref = close_refusing_reads(d)
    del d
    assert collected(ref)
