"""The io_uring ring: batches, ordering, errors on the right request, buffers, eventfd."""
import errno
import mmap
import os
import select
import threading
import time

import pytest

from flashcache.errors import ClosedError, DeviceError, UringUnavailableError
from flashcache.uring import Ring, address_of
from flashcache.uring import ring as ring_mod


@pytest.fixture
def datafile(tmp_path):
    p = tmp_path / "data.bin"
    blob = bytes(range(256)) * 16 * 256   # 1 MiB, block i starts with byte i % 256... pattern by offset
    p.write_bytes(blob)
    fd = os.open(p, os.O_RDWR)
    yield fd, blob
    os.close(fd)


def test_setup_reports_geometry_and_features():
    with Ring(8) as r:
        assert r.entries == 8 and r.cq_entries >= 8
        info = r.info()
        assert info["sqe_bytes"] == 64 and "SINGLE_MMAP" in info["features"]
    with Ring(4, sqe128=True, cqe32=True) as r:
        assert r.info()["sqe_bytes"] == 128 and r.info()["cqe_bytes"] == 32


def test_many_in_flight_more_than_ring_depth(datafile):
    fd, blob = datafile
    with Ring(8) as r:
        n = 600
        buf = bytearray(n * 512)
        base = address_of(buf)
        offs = [(i * 7919 % 2048) * 512 for i in range(n)]
        res = r.rw_batch(False, fd, [base + i * 512 for i in range(n)], [512] * n, offs)
        assert res == [512] * n
        for i, off in enumerate(offs):
            assert buf[i * 512:(i + 1) * 512] == blob[off:off + 512]


def test_async_prep_submit_reap_beyond_depth(datafile):
    fd, blob = datafile
    with Ring(4) as r:
        buf = bytearray(100 * 4096)
        base = address_of(buf)
        done = {}
        nxt = 0
        while len(done) < 100:
            while nxt < 100 and r.space:
                r.prep_read(fd, base + nxt * 4096, 4096, nxt * 4096, user_data=1000 + nxt)
                nxt += 1
            r.submit(wait_nr=1)
            for c in r.reap():
                done[c.user_data] = c.res
        assert sorted(done) == list(range(1000, 1100)) and set(done.values()) == {4096}
        assert bytes(buf) == blob[:100 * 4096]


def test_sq_full_is_a_clear_error():
    with Ring(2) as r:
        r.prep_nop(1)
        r.prep_nop(2)
        with pytest.raises(DeviceError, match=r"submission queue full \(2 entries\).*submit\(\) before"):
            r.prep_nop(3)
        r.submit(wait_nr=2)
        assert sorted(c.user_data for c in r.reap()) == [1, 2]


def test_completions_out_of_order_matched_by_user_data(datafile):
    fd, blob = datafile
    rfd, wfd = os.pipe()
    try:
        with Ring(16) as r:
            slow = bytearray(5)
            fast = bytearray(4096 * 4)
            r.prep_read(rfd, address_of(slow), 5, 0, user_data=1)        # waits for the pipe
            for i in range(4):
                r.prep_read(fd, address_of(fast) + i * 4096, 4096, i * 4096, user_data=10 + i)
            r.submit(wait_nr=4)
            first = r.reap()
            assert sorted(c.user_data for c in first) == [10, 11, 12, 13]   # the later SQEs finished first
            os.write(wfd, b"hello")
            r.wait(1)
            (last,) = r.reap()
            assert (last.user_data, last.res, bytes(slow)) == (1, 5, b"hello")
            assert bytes(fast) == blob[:4 * 4096]
    finally:
        os.close(rfd)
        os.close(wfd)


def test_error_cqes_land_on_the_right_request(datafile, tmp_path):
    fd, blob = datafile
    bad = 1 << 20   # far above any open descriptor
    with Ring(8) as r:
        buf = bytearray(3 * 4096)
        a = address_of(buf)
        r.prep_read(fd, a, 4096, 0, user_data=1)
        r.prep_read(bad, a + 4096, 4096, 0, user_data=2)
        r.prep_read(fd, a + 8192, 4096, 4096, user_data=3)
        r.submit(wait_nr=3)
        res = {c.user_data: c.res for c in r.reap()}
        assert res == {1: 4096, 2: -errno.EBADF, 3: 4096}
        assert bytes(buf[8192:]) == blob[4096:8192]


def test_einval_from_misaligned_direct_read_at_ring_level(tmp_path):
    p = tmp_path / "d.bin"
    p.write_bytes(b"x" * 65536)
    fd = os.open(p, os.O_RDONLY | os.O_DIRECT)
    try:
        with Ring(4) as r:
            m = mmap.mmap(-1, 8192)
            a = address_of(m)
            res = r.rw_batch(False, fd, [a + 1, a], [4096, 4096], [0, 4096])
            assert res == [-errno.EINVAL, 4096]
    finally:
        os.close(fd)


def test_short_read_at_end_of_file(tmp_path):
    p = tmp_path / "short.bin"
    p.write_bytes(b"z" * 6000)
    fd = os.open(p, os.O_RDONLY)
    try:
        with Ring(4) as r:
            buf = bytearray(8192)
            assert r.rw_batch(False, fd, [address_of(buf)], [8192], [0]) == [6000]
            assert r.rw_batch(False, fd, [address_of(buf)], [4096], [8192]) == [0]
    finally:
        os.close(fd)


def _staged_ring_run(r, write, fd, stage, lens, offs, bufs, buf_index=-1):
    user = ring_mod.ffi.new("char *[]", [ring_mod.ffi.from_buffer(b) for b in bufs])
    return r.rw_staged(write, fd, stage, 16384, lens, offs, buf_index, user)


@pytest.mark.parametrize("fixed", [True, False])
def test_staged_batch_reuses_a_small_stage_for_a_large_batch(tmp_path, fixed):
    """A staged batch moves 200 requests of 4-16 KiB (about 2 MiB) through a 16 KiB stage
    on a 4-deep ring: every request's bytes land where they belong and read back, whatever
    the order the stage wrapped and completions came in."""
    import random
    p = tmp_path / "staged.bin"
    p.write_bytes(bytes(4 << 20))
    fd = os.open(p, os.O_RDWR)
    rnd = random.Random(7)
    try:
        with Ring(4) as r:
            if fixed:
                r.register_buffers(1, 16384)
                stage, index = r.buffer_addr(0), 0
            else:
                m = mmap.mmap(-1, 16384)
                stage, index = address_of(m), -1
            lens = [rnd.choice([4096, 8192, 12288, 16384]) for _ in range(200)]
            offs, at = [], 0
            for ln in lens:                      # no two overlap: the last writer is unambiguous
                offs.append(at)
                at += ln + rnd.choice([0, 4096])
            pairs = list(zip(lens, offs))
            rnd.shuffle(pairs)                   # in no order on the file
            lens, offs = [ln for ln, _ in pairs], [o for _, o in pairs]
            datas = [bytes([i % 251 + 1]) * ln for i, ln in enumerate(lens)]
            assert _staged_ring_run(r, True, fd, stage, lens, offs, datas, index) == lens
            for d, off in zip(datas, offs):
                assert os.pread(fd, len(d), off) == d
            outs = [bytearray(ln) for ln in lens]
            assert _staged_ring_run(r, False, fd, stage, lens, offs, outs, index) == lens
            assert [bytes(o) for o in outs] == datas
            with pytest.raises(ValueError, match="a request of 20480 bytes; each must be 1 to 16384"):
                _staged_ring_run(r, False, fd, stage, [20480], [0], [bytearray(20480)], index)
    finally:
        os.close(fd)


def test_staged_batch_asks_again_for_the_rest_of_a_short_read():
    """A completion with fewer bytes than asked (a pipe with part of the data in it) is
    resubmitted in C for the rest, into the rest of its staging bytes: the result is the
    whole request, in order."""
    rfd, wfd = os.pipe()

    def feed():
        os.write(wfd, b"1" * 3000)
        time.sleep(0.05)
        os.write(wfd, b"2" * 5192)

    t = threading.Thread(target=feed)
    t.start()
    try:
        with Ring(4) as r:
            m = mmap.mmap(-1, 16384)
            out = bytearray(8192)
            assert _staged_ring_run(r, False, rfd, address_of(m), [8192], [0], [out]) == [8192]
            assert bytes(out) == b"1" * 3000 + b"2" * 5192
    finally:
        t.join()
        os.close(rfd)
        os.close(wfd)


def test_staged_batch_finishes_a_short_read_in_c(tmp_path):
    """A read that crosses the end of the file completes short; C asks again for the rest
    (which finds nothing) and the result is final: the bytes there were, copied out; the
    other requests around it are whole, and an error lands on its own request."""
    p = tmp_path / "short.bin"
    p.write_bytes(b"a" * 8192 + b"b" * 6000)
    fd = os.open(p, os.O_RDONLY)
    try:
        with Ring(4) as r:
            m = mmap.mmap(-1, 16384)
            outs = [bytearray(8192), bytearray(8192), bytearray(4096)]
            assert _staged_ring_run(r, False, fd, address_of(m), [8192, 8192, 4096], [0, 8192, 4096],
                                    outs) == [8192, 6000, 4096]
            assert bytes(outs[1][:6000]) == b"b" * 6000 and bytes(outs[0]) == b"a" * 8192
        with Ring(4) as r:
            m = mmap.mmap(-1, 16384)
            assert _staged_ring_run(r, True, fd, address_of(m), [4096, 4096], [0, 4096],
                                    [b"x" * 4096] * 2) == [-errno.EBADF] * 2     # opened read-only
    finally:
        os.close(fd)


def test_fixed_buffers_read_and_write(datafile):
    fd, blob = datafile
    with Ring(8) as r:
        (buf,) = r.register_buffers(1, 16384)
        buf[:4096] = b"\xee" * 4096
        assert r.rw_batch(True, fd, [r.buffer_addr(0)], [4096], [8192], [0]) == [4096]
        assert os.pread(fd, 4096, 8192) == b"\xee" * 4096
        assert r.rw_batch(False, fd, [r.buffer_addr(0) + 4096], [4096], [0], [0]) == [4096]
        assert bytes(buf[4096:8192]) == blob[:4096]
        r.prep_read(fd, r.buffer_addr(0), 4096, 0, user_data=5, buf_index=0)
        assert r.last_sqe()[0] == ring_mod.OP_READ_FIXED
        r.submit(1)
        assert r.reap()[0].res == 4096
        with pytest.raises(DeviceError, match="already registered"):
            r.register_buffers(1, 4096)


def test_uring_cmd_sqe_layout_and_kernel_answer(datafile):
    fd, _ = datafile
    with Ring(4, sqe128=True, cqe32=True) as r:
        cmd = bytes(range(72))
        r.prep_uring_cmd(fd, 0xC0484E80, cmd, user_data=0xABCDEF, buf_index=3)
        sqe = r.last_sqe()
        assert len(sqe) == 128
        assert sqe[0] == 46                                     # IORING_OP_URING_CMD
        assert int.from_bytes(sqe[4:8], "little") == fd
        assert int.from_bytes(sqe[8:12], "little") == 0xC0484E80  # cmd_op
        assert sqe[12:16] == bytes(4)                            # __pad1 must be 0
        assert int.from_bytes(sqe[28:32], "little") == 1          # IORING_URING_CMD_FIXED
        assert int.from_bytes(sqe[32:40], "little") == 0xABCDEF
        assert int.from_bytes(sqe[40:42], "little") == 3          # buf_index
        assert sqe[48:120] == cmd
        r.submit(1)
        (c,) = r.reap()
        # a regular file has no uring_cmd handler: the kernel says EOPNOTSUPP
        assert (c.user_data, c.res) == (0xABCDEF, -errno.EOPNOTSUPP)
    with Ring(4) as r, pytest.raises(ValueError, match="needs Ring\\(sqe128=True, cqe32=True\\)"):
        r.prep_uring_cmd(fd, 0xC0484E80, bytes(72), 1)


def test_eventfd_is_signalled_on_completion():
    with Ring(4) as r:
        efd = r.register_eventfd()
        assert select.select([efd], [], [], 0)[0] == []
        r.prep_nop(9)
        r.submit()
        assert select.select([efd], [], [], 5)[0] == [efd]
        assert int.from_bytes(os.read(efd, 8), "little") >= 1
        assert [c.user_data for c in r.reap()] == [9]


def test_gil_released_while_waiting():
    rfd, wfd = os.pipe()
    try:
        with Ring(4) as r:
            buf = bytearray(1)
            r.prep_read(rfd, address_of(buf), 1, 0, user_data=1)
            r.submit()
            ticks = []
            t = threading.Thread(target=lambda: r.wait(1))
            t.start()
            t0 = time.monotonic()
            while time.monotonic() - t0 < 0.3:     # this loop needs the GIL
                ticks.append(1)
            os.write(wfd, b"!")
            t.join(5)
            assert not t.is_alive() and len(ticks) > 1000
            assert r.reap()[0].res == 1
    finally:
        os.close(rfd)
        os.close(wfd)


def test_use_after_close():
    r = Ring(4)
    r.close()
    r.close()
    for call in (lambda: r.prep_nop(1), lambda: r.submit(), r.reap, lambda: r.wait(1), r.register_eventfd,
                 lambda: r.rw_batch(False, 0, [0], [1], [0])):
        with pytest.raises(ClosedError, match="ring used after close"):
            call()


class _FakeLib:
    def __init__(self, err):
        self.err = err

    def fc_ring_init(self, r, entries, flags):
        return -self.err


@pytest.mark.parametrize("err, sysctl, message", [
    (errno.ENOSYS, None, "this kernel has no io_uring"),
    (errno.EPERM, 2, "disabled on this machine (sysctl kernel.io_uring_disabled = 2)"),
    (errno.EPERM, 1, "restricted to privileged users and the kernel.io_uring_group group"),
    (errno.EPERM, 0, "a seccomp filter or container policy blocks io_uring_setup"),
])
def test_unavailable_names_the_cause_and_points_to_psync(monkeypatch, err, sysctl, message):
    monkeypatch.setattr(ring_mod, "lib", _FakeLib(err))
    monkeypatch.setattr(ring_mod, "io_uring_disabled_sysctl", lambda: sysctl)
    with pytest.raises(UringUnavailableError) as ei:
        Ring(8)
    assert message in str(ei.value)
    assert 'engine = "psync"' in str(ei.value)
    assert ei.value.errno == err


def test_rw_packed_places_requests_back_to_back_beyond_ring_depth(datafile):
    """Request i lands at base + the lengths before it; more requests than the ring holds;
    a read past the end completes short in its own slot, the others are untouched."""
    fd, blob = datafile
    with Ring(4) as r:
        (buf,) = r.register_buffers(1, 1 << 20)
        lens = [512 * (1 + i % 3) for i in range(40)]
        offs = [(i * 7919 % 1500) * 512 for i in range(40)]
        offs[7] = len(blob) - 256                   # 256 bytes left in the file
        res = r.rw_packed(False, fd, r.buffer_addr(0), lens, offs, 0)
        assert res == [256 if i == 7 else ln for i, ln in enumerate(lens)]
        a = 0
        for i, (off, ln) in enumerate(zip(offs, lens)):
            got = bytes(buf[a:a + res[i]])
            assert got == blob[off:off + res[i]], i
            a += ln
        # writes, non-fixed buffer: back to back from a plain address
        src = bytearray(b"".join(bytes([i]) * 512 for i in range(6)))
        assert r.rw_packed(True, fd, address_of(src), [1024, 512, 1536], [0, 8192, 65536]) == [1024, 512, 1536]
        assert os.pread(fd, 1024, 0) == bytes(src[:1024])
        assert os.pread(fd, 512, 8192) == bytes(src[1024:1536])
        assert os.pread(fd, 1536, 65536) == bytes(src[1536:3072])
        assert r.rw_packed(False, fd, address_of(src), [], []) == []


def test_read_packed_into_fills_each_result_as_it_completes(datafile):
    """More requests than the ring holds, each copied on into its own bytes object from
    new_bytes; a request past the end copies only what it read (res says how much)."""
    fd, blob = datafile
    with Ring(4) as r:
        r.register_buffers(1, 1 << 20)
        lens = [512 * (1 + i % 3) for i in range(40)]
        offs = [(i * 7919 % 1500) * 512 for i in range(40)]
        offs[7] = len(blob) - 256                   # 256 bytes left in the file
        out, dst = ring_mod.new_bytes(lens)
        assert [len(b) for b in out] == lens and len(dst) == 40 * 8
        res = r.read_packed_into(fd, r.buffer_addr(0), lens, offs, 0, dst)
        assert res == [256 if i == 7 else ln for i, ln in enumerate(lens)]
        for i, (off, ln) in enumerate(zip(offs, lens)):
            assert out[i][:res[i]] == blob[off:off + res[i]], i
        # a plain (unregistered) staging buffer works the same way
        stage = bytearray(8192)
        out, dst = ring_mod.new_bytes([512, 1024])
        assert r.read_packed_into(fd, address_of(stage), [512, 1024], [4096, 0], -1, dst) == [512, 1024]
        assert out == [blob[4096:4608], blob[:1024]]
        assert r.read_packed_into(fd, address_of(stage), [], [], -1, b"") == []
        with pytest.raises(ValueError, match="3 requests but 2 destinations"):
            r.read_packed_into(fd, address_of(stage), [512] * 3, [0] * 3, -1, dst)


def test_new_bytes_checks_its_lengths():
    out, dst = ring_mod.new_bytes([])
    assert out == [] and dst == b""
    out, _ = ring_mod.new_bytes([0, 1, 4096])
    assert [len(b) for b in out] == [0, 1, 4096] and out[1] is not out[2]
    with pytest.raises(ValueError, match="length -1 at index 1 is negative"):
        ring_mod.new_bytes([4, -1])
    with pytest.raises(TypeError):
        ring_mod.new_bytes([4, "x"])
    with pytest.raises(TypeError, match="sequence of lengths"):
        ring_mod.new_bytes(7)


def test_reader_returns_bytes_or_the_result_that_was_not_whole(datafile, tmp_path):
    fd, blob = datafile
    with Ring(2) as r:
        r.register_buffers(1, 65536)
        read = r.reader(fd)
        assert read(4096, 8192) == blob[8192:12288]
        assert type(read(4096, 0)) is bytes and read(0, 0) == b""
        assert read(4096, len(blob) - 1024) == 1024           # short at the end: the count
        assert read(4096, len(blob)) == 0                     # at the end: nothing read
        wo = os.open(tmp_path / "wo.bin", os.O_WRONLY | os.O_CREAT)
        try:
            assert r.reader(wo)(4096, 0) == -errno.EBADF      # failed: -errno, no exception
        finally:
            os.close(wo)
        with pytest.raises(ValueError, match="length -1 out of range"):
            read(-1, 0)
    with Ring(2) as r, pytest.raises(DeviceError, match="needs a registered buffer"):
        r.reader(fd)                                          # no registered buffer to read into


def _kernel_without(monkeypatch, flag: int) -> None:
    """Make ring_mod.lib act as a kernel that does not know setup ``flag``: EINVAL for it."""
    real = ring_mod.lib

    class Older:
        def __getattr__(self, name):
            return getattr(real, name)

        def fc_ring_init(self, r, entries, flags):
            return -errno.EINVAL if flags & flag else real.fc_ring_init(r, entries, flags)

    monkeypatch.setattr(ring_mod, "lib", Older())


def test_coop_taskrun_ring_and_the_kernel_without_it(datafile, monkeypatch):
    fd, blob = datafile
    with Ring(4, coop_taskrun=True) as r:
        assert r.info()["coop_taskrun"] is True
        r.register_buffers(1, 8192)
        assert r.reader(fd)(4096, 4096) == blob[4096:8192]
    assert Ring(4).info()["coop_taskrun"] is False
    _kernel_without(monkeypatch, ring_mod.IORING_SETUP_COOP_TASKRUN)     # before 5.19
    with Ring(4, coop_taskrun=True) as r:
        assert r.info()["coop_taskrun"] is False


def test_defer_taskrun_ring_serves_its_own_thread_only(datafile, monkeypatch):
    """SINGLE_ISSUER|DEFER_TASKRUN: completions (here a buffered write, which the kernel
    hands to a worker) are posted when the owner waits; any other thread that submits on
    the ring gets -EEXIST and leaves the ring as it was. Kernels without the flags give
    a COOP ring, then a plain one, each said in info()."""
    import threading
    fd, blob = datafile
    with Ring(8, defer_taskrun=True) as r:
        assert (r.info()["defer_taskrun"], r.info()["coop_taskrun"]) == (True, True)
        (buf,) = r.register_buffers(1, 4 * 4096)
        buf[:] = bytes(range(256)) * 64
        addr = r.buffer_addr(0)
        assert r.rw_packed(True, fd, addr, [4096] * 4, [0, 8192, 16384, 24576], 0) == [4096] * 4
        assert r.rw_packed(False, fd, addr, [4096] * 4, [8192, 0, 24576, 16384], 0) == [4096] * 4
        assert bytes(buf) == bytes(range(256)) * 64
        got = []
        t = threading.Thread(target=lambda: got.append(r.rw_one(False, fd, addr, 4096, 0, 0)))
        t.start()
        t.join()
        assert got == [-errno.EEXIST]
        # the refused SQE was taken back: the owner's next batch finds the ring clean
        assert r.pending == 0
        assert r.rw_packed(False, fd, addr, [4096] * 2, [0, 8192], 0) == [4096] * 2
    _kernel_without(monkeypatch, ring_mod.IORING_SETUP_DEFER_TASKRUN)    # before 6.1
    with Ring(4, defer_taskrun=True) as r:
        assert (r.info()["defer_taskrun"], r.info()["coop_taskrun"]) == (False, True)



def test_pin_gives_lengths_addresses_and_holds_what_is_not_bytes(datafile):
    import ctypes
    ba = bytearray(b"xy" * 4)
    two_d = memoryview(bytearray(b"cd" * 4)).cast("B", (2, 4))
    lens, addrs, keep = ring_mod.pin([b"ab" * 4, ba, two_d, memoryview(b"zz")])
    assert lens == [8, 8, 8, 2] and len(addrs) == 4 * 8 and len(keep) == 3
    ptrs = [int.from_bytes(addrs[i * 8:i * 8 + 8], "little") for i in range(4)]
    assert [ctypes.string_at(p, n) for p, n in zip(ptrs, lens)] == [b"abababab", b"xyxyxyxy", b"cdcdcdcd", b"zz"]
    with pytest.raises(BufferError):
        ba.extend(b"!")                         # pinned: cannot move while C may copy it
    del keep
    ba.extend(b"!")
    assert ring_mod.pin([]) == ([], b"", [])
    with pytest.raises(TypeError):
        ring_mod.pin([b"ok", 7])
    with pytest.raises(TypeError, match="not C-contiguous"):
        ring_mod.pin([memoryview(b"abcdef")[::2]])
    fd, blob = datafile
    with Ring(4) as r:                          # write_packed_from: more requests than the ring
        r.register_buffers(1, 1 << 20)
        datas = [bytes([i]) * 512 for i in range(20)]
        lens, srcs, keep = ring_mod.pin(datas)
        offs = [i * 4096 for i in range(20)]
        assert r.write_packed_from(fd, r.buffer_addr(0), lens, offs, 0, srcs) == lens
        assert [os.pread(fd, 512, o) for o in offs] == datas
        with pytest.raises(ValueError, match="3 requests but 2 sources"):
            r.write_packed_from(fd, r.buffer_addr(0), [512] * 3, [0] * 3, 0, srcs[:16])
