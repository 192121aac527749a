"""One owner per device (flashcache/devices/owner.py): every device kind locks its target
while open; a second open, in this process or another, is refused naming the holder and
changes nothing; close releases it. And a forked child refuses the devices it inherited,
writes nothing, and neither unlocks the parent's device nor keeps it locked."""
from __future__ import annotations

import errno
import fcntl
import json
import os
import select
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from engines.device import SUPERBLOCK_MAGIC
from flashcache import nvme
from flashcache.devices import owner
from flashcache.devices.emulated import open_emulated, state_path_for
from flashcache.devices.file import FileDevice
from flashcache.devices.nvme_passthru import PassthroughTransport
from flashcache.devices.uring import UringDevice
from flashcache.emulator import Geometry
from flashcache.errors import DeviceError, DeviceInUseError, ForkedError
from tests.devices.helpers import digest, in_child, outcome

KINDS = ["psync", "uring", "emulated"]
SMALL = Geometry(capacity_bytes=16 << 20, op=0.12, ru_bytes=256 << 10, handles=("II",) * 4, lba_size=4096)
CHILD = Path(__file__).with_name("owner_child.py")
ROOT = Path(__file__).resolve().parents[2]


def open_kind(kind: str, path: str, **kw):
    """A device of ``kind`` on ``path`` (also used by owner_child.py, in another process)."""
    if kind == "psync":
        return FileDevice(path, kw.pop("size", 8 << 20), **kw)
    if kind == "uring":
        return UringDevice(path, kw.pop("size", 8 << 20), **kw)
    return open_emulated(path, SMALL, **kw)


def ours(tag: bytes, n: int = 4096) -> bytes:
    """``n`` bytes for offset 0 that format safety takes for a flashcache device's own."""
    return (SUPERBLOCK_MAGIC + tag * n)[:n]


@pytest.fixture(params=KINDS)
def kind(request):
    return request.param


@pytest.fixture
def path(tmp_path):
    d = tmp_path / "dev"
    d.mkdir()
    return str(d / "dev.img")


def _child(mode: str, kind: str, path: str, **kw):
    return subprocess.Popen([sys.executable, str(CHILD), mode, kind, path], cwd=ROOT, text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)


def _line(proc, timeout: float = 60.0) -> str:
    if not select.select([proc.stdout], [], [], timeout)[0]:
        proc.kill()
        pytest.fail(f"the other process said nothing in {timeout} s: {proc.stderr.read()}")
    line = proc.stdout.readline()
    assert line, f"the other process ended early: {proc.stderr.read()}"
    return line.strip()


# -- the lock ------------------------------------------------------------------------------

def test_a_second_open_in_this_process_is_refused_naming_it(kind, path):
    """flock belongs to the open file description, so a second open in the same process
    is refused too; the first keeps working, and after its close a reopen works."""
    a = open_kind(kind, path)
    a.write(0, ours(b"a"))
    with pytest.raises(DeviceInUseError) as ei:
        open_kind(kind, path)
    e = ei.value
    me = os.getpid()
    assert e.pids == (me,) and e.errno == errno.EBUSY
    assert str(e).startswith(f"{path}: is already open in this process (pid {me})"), e
    assert "close that one first" in str(e) and "one process owns a device" in str(e)
    assert a.read(0, 4096) == ours(b"a")
    a.close()
    for i in range(3):                       # close and reopen, as a restarted cache does
        b = open_kind(kind, path)
        assert b.read(0, 4096) == ours(b"a" if i == 0 else b"%d" % (i - 1))
        b.write(0, ours(b"%d" % i))
        b.close()


def test_a_refused_open_changes_nothing(kind, path):
    """The lock comes before anything reads, resizes, formats or drops state: a second
    open that asks for another size and a format leaves the file (and the emulated SSD's
    FTL state) exactly as the owner has it."""
    a = open_kind(kind, path)
    a.write(0, ours(b"kept"))
    a.close()                                # the emulated SSD saves its FTL state here
    a = open_kind(kind, path)
    folder = Path(path).parent
    before = digest(folder)
    if kind == "emulated":
        assert os.path.exists(state_path_for(path))
    with pytest.raises(DeviceInUseError):
        open_kind(kind, path, format=True, **({} if kind == "emulated" else {"size": 16 << 20}))
    assert digest(folder) == before
    assert a.read(0, 4096) == ours(b"kept")
    a.close()


def test_another_process_is_refused_naming_this_one(kind, path):
    a = open_kind(kind, path)
    try:
        p = _child("try", kind, path)
        out = json.loads(_line(p))
        p.wait(30)
    finally:
        a.close()
    me = os.getpid()
    assert out["error"] == "DeviceInUseError" and out["pids"] == [me], out
    assert f"{path}: is in use by process {me} (" in out["message"], out
    assert f"stop process {me} or close its cache first" in out["message"], out


def test_a_process_holding_it_is_named_and_its_close_releases_it(kind, path):
    p = _child("hold", kind, path)
    try:
        assert _line(p) == "ready"
        with pytest.raises(DeviceInUseError) as ei:
            open_kind(kind, path)
        e = ei.value
        assert e.pids == (p.pid,)
        assert f"is in use by process {p.pid} (python" in str(e), e
        assert f"stop process {p.pid}" in str(e)
        p.stdin.write("close\n")
        p.stdin.flush()
        assert _line(p) == "closed"
    finally:
        p.kill()
        p.wait(30)
    open_kind(kind, path).close()


# A process that takes the lock on a file, forks a child sharing it (the lock is the open
# file description's) and says "ready <pid>"; the child keeps the lock until its stdin
# ends. Killing the parent then leaves the lock held under the parent's PID, which has
# exited: as an io_uring process killed by SIGKILL leaves it until its ring's teardown
# ends. Plain Python, no flashcache (whose fork handlers would let the lock go).
EXITED_HOLDER = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o644)
fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
if os.fork() == 0:
    sys.stdin.buffer.read()
    os._exit(0)
print("ready", os.getpid(), flush=True)
time.sleep(600)
"""


def _exited_holder(path: str) -> tuple[subprocess.Popen, int]:
    """The lock on ``path`` held for a process that has exited (EXITED_HOLDER), and its PID;
    the lock goes when the returned process's stdin is closed."""
    p = subprocess.Popen([sys.executable, "-c", EXITED_HOLDER, path], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True)
    word, pid = _line(p).split()
    assert word == "ready" and int(pid) == p.pid
    p.kill()
    p.wait(30)
    assert owner.exited(p.pid)
    return p, p.pid


def test_a_lock_held_for_a_process_that_has_exited_is_waited_for(kind, path, monkeypatch):
    """The lock of a process that has exited, still held a moment (the kernel not yet done
    with its files), is waited for: the open takes it once it goes, and says so in the log."""
    p, dead = _exited_holder(path)
    tries = []
    real_sleep = owner.time.sleep

    def sleep(s):
        tries.append(owner.holders(fd_probe))
        if len(tries) == 2:
            p.stdin.close()                  # the last holder lets go, while the open waits
        real_sleep(s)

    fd_probe = os.open(path, os.O_RDONLY)
    try:
        monkeypatch.setattr(owner.time, "sleep", sleep)
        dev = open_kind(kind, path)
    finally:
        os.close(fd_probe)
        if not p.stdin.closed:
            p.stdin.close()
    dev.write(0, ours(b"mine"))
    assert dev.read(0, 4096) == ours(b"mine")
    dev.close()
    assert len(tries) >= 2 and tries[0] == [dead], tries     # it waited, for the exited holder


def test_a_cache_opens_once_the_exited_holder_lets_go(path, monkeypatch):
    """The same through Cache(config), as tools/crash_check.py reopens after each kill."""
    import flashcache

    p, dead = _exited_holder(path)
    real_sleep = owner.time.sleep
    waits = []

    def sleep(s):
        waits.append(s)
        if not p.stdin.closed:
            p.stdin.close()
        real_sleep(s)

    monkeypatch.setattr(owner.time, "sleep", sleep)
    try:
        with flashcache.Cache({"device": {"kind": "file", "path": path, "size": "64MiB"},
                               "cache": {"dram_size": "1MiB", "flash": {"region_size": "1MiB"}}}) as c:
            c.set(b"k", b"v")
            assert c.get(b"k") == b"v"
    finally:
        if not p.stdin.closed:
            p.stdin.close()
    assert waits


def test_a_lock_an_exited_process_keeps_is_refused_after_the_wait_naming_it(path, monkeypatch):
    """Held past EXITED_HOLDER_WAIT: DeviceInUseError naming the exited holder and the wait."""
    p, dead = _exited_holder(path)
    monkeypatch.setattr(owner, "EXITED_HOLDER_WAIT", 0.2)
    try:
        with pytest.raises(DeviceInUseError) as ei:
            FileDevice(path, 1 << 20)
    finally:
        p.stdin.close()
    e = ei.value
    assert e.pids == (dead,), e
    assert f"is in use by process {dead} (which has exited; its lock was still held after waiting" in str(e), e
    assert f"`fuser -v {path}` names it" in str(e) and f"stop process {dead}" in str(e), e


def test_a_live_holder_is_refused_at_once(path, monkeypatch):
    """Only exited holders are waited for: with a live one, in another process or this
    one, the open fails on its first try."""
    def no_sleep(s):
        raise AssertionError("lock() waited for a live holder")

    p = _child("hold", "psync", path)
    try:
        assert _line(p) == "ready"
        with monkeypatch.context() as m:
            m.setattr(owner.time, "sleep", no_sleep)
            with pytest.raises(DeviceInUseError, match=f"is in use by process {p.pid} \\(python"):
                FileDevice(path, 8 << 20)
    finally:
        p.kill()
        p.wait(30)
    a = FileDevice(path, 8 << 20)
    try:
        monkeypatch.setattr(owner.time, "sleep", no_sleep)
        with pytest.raises(DeviceInUseError, match="is already open in this process"):
            FileDevice(path, 8 << 20)
    finally:
        a.close()


def test_exited_reads_proc(tmp_path):
    assert not owner.exited(os.getpid())
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait(30)
    assert owner.exited(p.pid)                                   # reaped: no /proc/<pid>
    z = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        os.waitid(os.P_PID, z.pid, os.WEXITED | os.WNOWAIT)       # ended, not reaped: a zombie
        assert owner.exited(z.pid)
    finally:
        z.wait(30)


def test_holders_come_from_proc_locks_by_device_and_inode(tmp_path):
    """Only FLOCK entries on this file count (not POSIX locks, not waiters, not another
    file); an entry with the same inode on another device number (btrfs subvolumes report
    a different one to stat) counts only if that process has the file open."""
    f = tmp_path / "f"
    f.write_bytes(b"")
    fd = os.open(f, os.O_RDONLY)
    try:
        st = os.fstat(fd)
        here = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
        elsewhere = f"ff:ee:{st.st_ino}"
        locks = tmp_path / "locks"
        locks.write_text(
            f"1: POSIX  ADVISORY  WRITE 111 {here} 0 EOF\n"
            f"2: FLOCK  ADVISORY  WRITE 222 {here} 0 EOF\n"
            f"2: -> FLOCK  ADVISORY  WRITE 333 {here} 0 EOF\n"
            f"3: FLOCK  ADVISORY  WRITE 444 {elsewhere} 0 EOF\n"
            f"4: FLOCK  ADVISORY  READ  555 {here[:-len(str(st.st_ino))]}{st.st_ino + 1} 0 EOF\n"
            f"5: FLOCK  ADVISORY  WRITE -1 {here} 0 EOF\n"
            "garbage\n")
        assert owner.holders(fd, str(locks)) == [222]
        # no exact entry: the same inode elsewhere counts for a process that has it open (us)
        locks.write_text(f"3: FLOCK  ADVISORY  WRITE 444 {elsewhere} 0 EOF\n"
                         f"3: FLOCK  ADVISORY  WRITE {os.getpid()} {elsewhere} 0 EOF\n")
        assert owner.holders(fd, str(locks)) == [os.getpid()]
        assert owner.holders(fd, str(tmp_path / "no-such-file")) == []
    finally:
        os.close(fd)


def test_an_unknown_holder_still_gets_a_clear_error(path):
    e = owner.in_use(path, [])
    assert isinstance(e, DeviceInUseError) and e.pids == ()
    assert f"{path}: is in use: another process holds its lock" in str(e)
    assert f"fuser -v {path}" in str(e)


def test_a_lock_the_file_system_refuses_is_a_clear_error(path, monkeypatch):
    def no_locks(fd, op):
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))

    monkeypatch.setattr(fcntl, "flock", no_locks)
    with pytest.raises(DeviceError, match=r"taking the device's lock \(flock\) failed: .*ENOLCK.*supports flock"):
        FileDevice(path, 1 << 20)
    assert not os.path.exists(path)          # it made the file, and took it away again


@pytest.fixture
def loop_device(tmp_path):
    """A 16 MiB loop block device (root and losetup only)."""
    if os.geteuid() != 0 or not shutil.which("losetup"):
        pytest.skip("needs root and losetup for a loop block device")
    img = tmp_path / "loop.img"
    img.write_bytes(b"")
    os.truncate(img, 16 << 20)
    got = subprocess.run(["losetup", "-f", "--show", str(img)], capture_output=True, text=True)
    if got.returncode:
        pytest.skip(f"losetup could not attach a loop device: {got.stderr.strip()}")
    dev = got.stdout.strip()
    yield dev
    subprocess.run(["losetup", "-d", dev], check=False)


@pytest.mark.parametrize("cls", [FileDevice, UringDevice], ids=["psync", "uring"])
def test_a_block_device_is_locked_through_its_node(cls, loop_device):
    a = cls(loop_device)
    try:
        assert a.is_block
        with pytest.raises(DeviceInUseError, match=rf"^{loop_device}: is already open in this process"):
            cls(loop_device)
        p = _child("try", "psync", loop_device)
        out = json.loads(_line(p))
        p.wait(30)
        assert out["error"] == "DeviceInUseError" and out["pids"] == [os.getpid()], out
    finally:
        a.close()
    cls(loop_device).close()


# -- NVMe passthrough, on stand-in nodes (the real driver: tests/vm/test_passthru.py) ------

@pytest.fixture
def nodes(tmp_path, monkeypatch):
    """Regular files standing in for /dev/nvme1, /dev/ng1n1 and two partitions, a sysfs
    naming them, and NVME_IOCTL_ID answered: enough for PassthroughTransport without a
    ring. Returns the folder of the nodes and the sysfs root."""
    dev = tmp_path / "dev"
    dev.mkdir()
    for n in ("nvme1", "ng1n1", "nvme1n1p1", "nvme1n1p2"):
        (dev / n).write_bytes(b"")
    sysfs = tmp_path / "sys"
    ctrl = sysfs / "devices/pci0000:00/nvme/nvme1"
    ctrl.mkdir(parents=True)
    (sysfs / "class/nvme-generic/ng1n1").mkdir(parents=True)
    os.symlink(ctrl, sysfs / "class/nvme-generic/ng1n1/device")
    for i, start in ((1, 2048), (2, 8192)):
        p = sysfs / f"class/block/nvme1n1p{i}"
        p.mkdir(parents=True)
        (p / "start").write_text(f"{start}\n")
        (p / "size").write_text("4096\n")
    real = fcntl.ioctl

    def ioctl(fd, req, *args):
        return 1 if req == nvme.NVME_IOCTL_ID else real(fd, req, *args)

    monkeypatch.setattr(fcntl, "ioctl", ioctl)
    return dev, str(sysfs)


def _transport(nodes, name: str, exclusive: bool = True) -> PassthroughTransport:
    dev, sysfs = nodes
    return PassthroughTransport(str(dev / name), sysfs=sysfs, use_ring=False, exclusive=exclusive)


def test_nvme_passthrough_locks_the_namespace(nodes):
    dev = nodes[0]
    a = _transport(nodes, "ng1n1")
    with pytest.raises(DeviceInUseError, match=rf"^{dev}/ng1n1: is already open in this process"):
        _transport(nodes, "ng1n1")
    _transport(nodes, "ng1n1", exclusive=False).close()     # the nvme CLI reading logs beside a cache
    with pytest.raises(DeviceInUseError, match=rf"^{dev}/ng1n1: is already open"):
        _transport(nodes, "nvme1n1p1")                       # a partition beside the whole namespace
    a.close()
    _transport(nodes, "ng1n1").close()


def test_nvme_partitions_each_have_one_owner(nodes):
    dev = nodes[0]
    p1 = _transport(nodes, "nvme1n1p1")
    p2 = _transport(nodes, "nvme1n1p2")                      # another partition: runs beside it
    with pytest.raises(DeviceInUseError, match=rf"^{dev}/nvme1n1p1: is already open"):
        _transport(nodes, "nvme1n1p1")
    with pytest.raises(DeviceInUseError, match=rf"^{dev}/ng1n1: is already open"):
        _transport(nodes, "ng1n1")                           # the whole namespace over them
    p1.close()
    p2.close()
    _transport(nodes, "ng1n1").close()


def test_a_forked_child_refuses_an_inherited_nvme_transport(nodes):
    t = _transport(nodes, "ng1n1")
    me = os.getpid()
    try:
        got = in_child(lambda: {
            "admin": outcome(lambda: t.admin(nvme.identify_controller(), bytearray(4096))),
            "io": outcome(lambda: t.io(nvme.flush_cmd(1))),
            "io_many": outcome(lambda: t.io_many([(nvme.flush_cmd(1), None)])),
            "close": outcome(t.close),
            "open anew": outcome(lambda: _transport(nodes, "ng1n1")),
        })
        for op in ("admin", "io", "io_many"):
            assert got[op].startswith("ForkedError: ") and f"NVMe device was opened in process {me}" in got[op], got
        assert got["close"] == "returned None"
        assert got["open anew"].startswith("DeviceInUseError: ") and f"process {me}" in got["open anew"], got
        with pytest.raises(DeviceInUseError):                # the child left the parent's lock alone
            _transport(nodes, "ng1n1")
    finally:
        t.close()
    _transport(nodes, "ng1n1").close()


# -- fork ---------------------------------------------------------------------------------------

def test_a_forked_child_refuses_an_inherited_device_and_writes_nothing(kind, path):
    """Every call on the inherited device raises ForkedError naming the owner, close() is
    a quiet no-op, the parent's lock still holds (a fresh open in the child is refused),
    nothing on disk changes; the parent then carries on and reopens with its data."""
    dev = open_kind(kind, path)
    s = dev.open_stream("x")
    data = ours(os.urandom(64), 64 << 10)
    dev.write(0, data, s)
    dev.flush()
    folder = Path(path).parent
    before = digest(folder)
    me = os.getpid()
    calls = {
        "read": lambda: dev.read(0, 4096),
        "write": lambda: dev.write(4096, b"c" * 4096, s),
        "read_many": lambda: dev.read_many([(0, 4096), (8192, 4096)]),
        "write_many": lambda: dev.write_many([(0, b"c" * 4096, s)]),
        "trim": lambda: dev.trim(0, 4096),
        "flush": dev.flush,
        "open_stream": lambda: dev.open_stream("y"),
    }

    def child():
        got = {name: outcome(call) for name, call in calls.items()}
        got["close"] = outcome(dev.close)
        got["read after close"] = outcome(lambda: dev.read(0, 4096))
        got["open anew"] = outcome(lambda: open_kind(kind, path))
        return got

    got = in_child(child)
    for name in [*calls, "read after close"]:
        assert got[name].startswith("ForkedError: ") and f"device was opened in process {me}" in got[name], got
    assert got["close"] == "returned None"
    assert got["open anew"].startswith("DeviceInUseError: ") and f"in use by process {me}" in got["open anew"], got
    assert digest(folder) == before
    assert dev.read(0, len(data)) == data
    dev.write(1 << 20, data, s)
    dev.close()
    again = open_kind(kind, path)
    assert again.read(0, len(data)) == data and again.read(1 << 20, len(data)) == data
    again.close()


def test_a_child_that_lives_on_does_not_keep_the_parents_device_locked(kind, path):
    """fork() shares the locked open file; the child lets go of its copy at once, so the
    parent's close releases the lock though the child is still running."""
    dev = open_kind(kind, path)
    r, w = os.pipe()
    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid == 0:                                     # lives until told (or 30 s), then leaves
        try:
            os.close(w)
            os.write(ready_w, b"r")                  # the at-fork hook has run by now
            select.select([r], [], [], 30)
        finally:
            os._exit(0)
    os.close(r)
    os.close(ready_w)
    try:
        select.select([ready_r], [], [], 30)         # not a sleep: a loaded machine may be slow
        os.close(ready_r)
        dev.close()
        open_kind(kind, path).close()
    finally:
        os.write(w, b"x")
        os.close(w)
        os.waitpid(pid, 0)


def test_a_fork_after_close_leaves_a_reused_descriptor_number_alone(path, tmp_path):
    """A closed device's descriptor number may name another file by the fork: the child
    lets go only of devices still open."""
    dev = open_kind("psync", path)
    number = dev.fd
    dev.close()
    other = tmp_path / "other"
    other.write_bytes(b"not the device")
    fd = os.open(other, os.O_RDONLY)
    try:
        if fd != number:
            pytest.skip(f"the descriptor number was not reused ({fd} != {number})")
        assert in_child(lambda: os.pread(fd, 64, 0)) == b"not the device"
    finally:
        os.close(fd)


def test_forked_error_names_both_processes_and_pickles():
    import pickle
    e = ForkedError("/x", "read", "device", 123, pid=456)
    assert str(e) == ("/x: read: this device was opened in process 123 and inherited by fork() "
                      "(this is process 456); open a new device in the child; the parent keeps its own")
    assert str(pickle.loads(pickle.dumps(e))) == str(e)
    u = DeviceInUseError("/x", "is in use by process 9", (9,), "stop process 9")
    back = pickle.loads(pickle.dumps(u))
    assert str(back) == str(u) and back.pids == (9,)
