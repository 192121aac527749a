"""One owner per device: the lock a device holds on its target while it is open, and who
holds it when a second open is refused.

Owns taking the lock (flock, LOCK_NB, on the descriptor the device keeps open), finding
the holder's PID in /proc/locks, and letting go of inherited descriptors in a forked
child. The surprise: a flock belongs to the open file description, not to the process: a
second open in the same process is refused too; fork() shares the description, so a
child must never LOCK_UN (that unlocks the parent) and instead points its copies at
/dev/null; the lock goes when the owner closes. On NFS, flock is a byte-range lock that
belongs to the process, so there only other processes are kept out.

A holder that has exited can keep the lock a moment: the kernel lets go of a dead
process's files only once everything that holds them is done, and an io_uring process
killed by SIGKILL keeps its ring's files until the ring's teardown (asynchronous) ends.
So while every holder /proc/locks names has exited, ``lock`` waits for the lock, at most
``EXITED_HOLDER_WAIT`` seconds; a live holder is refused at once.
"""
from __future__ import annotations

import errno
import fcntl
import logging
import os
import time

from ..errors import DeviceError, DeviceInUseError

log = logging.getLogger("flashcache.devices")

PROC_LOCKS = "/proc/locks"
ONE_OWNER = "one process owns a device at a time"
EXITED_HOLDER_WAIT = 5.0      # seconds lock() waits while every holder has exited
EXITED_HOLDER_POLL = 0.02     # seconds between its tries


def lock(fd: int, path: str, *, shared: bool = False) -> None:
    """Take the exclusive (or, with ``shared``, the shared) lock on ``fd``, or raise
    DeviceInUseError naming the holder. Released when the device closes ``fd``. Refused at
    once while a live process holds it; held only by processes that have exited (the
    kernel not yet done with their files), waited for, at most ``EXITED_HOLDER_WAIT``
    seconds."""
    first = None                  # when the first try was refused
    while True:
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno != errno.EWOULDBLOCK:
                raise DeviceError(path, "taking the device's lock (flock) failed", e.errno,
                                  "flashcache locks the device so one process owns it at a time: "
                                  "put it on a filesystem that supports flock (a local one)") from None
        else:
            if first is not None:
                log.info("%s: took the device's lock after waiting %.2f s for exited holders to let go of it",
                         path, time.monotonic() - first)
            return
        pids = holders(fd)
        now = time.monotonic()
        first = now if first is None else first
        if not pids or not all(map(exited, pids)) or now - first >= EXITED_HOLDER_WAIT:
            raise in_use(path, pids, now - first) from None
        time.sleep(EXITED_HOLDER_POLL)


def exited(pid: int) -> bool:
    """Whether process ``pid`` has exited: no /proc/<pid>, or every thread of it a zombie
    (its files are closed; what may still hold them is the kernel's)."""
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except FileNotFoundError:
        return True
    except OSError:
        return False
    for t in tasks:
        try:
            with open(f"/proc/{pid}/task/{t}/stat", "rb") as f:
                line = f.read()
        except FileNotFoundError:
            continue
        except OSError:
            return False
        # "tid (comm) S ...": the state follows the last ')' (comm may hold any byte)
        if line[line.rfind(b")") + 2:][:1] not in (b"Z", b"X"):
            return False
    return True


def holders(fd: int, proc_locks: str = PROC_LOCKS) -> list[int]:
    """PIDs holding a flock on the file open as ``fd``, from /proc/locks, which lists
    "<n>: FLOCK ADVISORY WRITE <pid> <major>:<minor>:<inode> 0 EOF" (major and minor in
    hex, as the kernel prints the file's superblock device). Where the file system reports
    another device number to stat() than its superblock's (btrfs subvolumes), entries with
    the same inode count only if that process has the file open (/proc/<pid>/fd). Empty
    when none can be found or read."""
    st = os.fstat(fd)
    key = (os.major(st.st_dev), os.minor(st.st_dev), st.st_ino)
    try:
        with open(proc_locks) as f:
            text = f.read()
    except OSError:
        return []
    exact: list[int] = []
    same_inode: list[int] = []
    for line in text.splitlines():
        f = line.split()
        if len(f) < 6 or f[1] != "FLOCK":     # POSIX/OFD locks are not ours; "->" marks a waiter
            continue
        try:
            pid = int(f[4])
            major, minor, ino = f[5].split(":")
            where = (int(major, 16), int(minor, 16), int(ino))
        except ValueError:
            continue
        if pid <= 0:                          # in a PID namespace we cannot see
            continue
        if where == key:
            exact.append(pid)
        elif where[2] == st.st_ino:
            same_inode.append(pid)
    if not exact:
        exact = [p for p in same_inode if _has_open(p, st)]
    return list(dict.fromkeys(exact))


def _has_open(pid: int, st: os.stat_result) -> bool:
    d = f"/proc/{pid}/fd"
    try:
        names = os.listdir(d)
    except OSError:
        return False
    for n in names:
        try:
            s = os.stat(os.path.join(d, n))
        except OSError:
            continue
        if (s.st_dev, s.st_ino) == (st.st_dev, st.st_ino):
            return True
    return False


def _describe(pid: int, path: str, waited: float) -> str:
    if pid == os.getpid():
        return f"{pid} (this process)"
    if exited(pid):
        return (f"{pid} (which has exited; its lock was still held after waiting {waited:.1f} s for the "
                f"kernel to let go of its files: a process it forked without Python still has the device "
                f"open; `fuser -v {path}` names it)")
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f"{pid} ({f.read().strip()})"
    except OSError:
        return str(pid)


def in_use(path: str, pids: list[int], waited: float = 0.0) -> DeviceInUseError:
    """The error for a lock another open holds: who, and what to do (``waited``: seconds
    lock() waited for holders that have exited)."""
    me = os.getpid()
    if not pids:
        return DeviceInUseError(path, "is in use: another process holds its lock (its PID is not in "
                                f"{PROC_LOCKS})", (), f"find it with `fuser -v {path}`, then stop it or "
                                f"close its cache first; {ONE_OWNER}")
    if pids == [me]:
        return DeviceInUseError(path, f"is already open in this process (pid {me}): another Cache or "
                                "device opened on it has not been closed", tuple(pids),
                                f"close that one first (close(), or a with block); {ONE_OWNER}")
    other = next(p for p in pids if p != me)
    return DeviceInUseError(path, "is in use by process "
                            f"{', '.join(_describe(p, path, waited) for p in pids)}",
                            tuple(pids), f"stop process {other} or close its cache first; {ONE_OWNER}")


def let_go(fd: int | None) -> None:
    """In a forked child: stop sharing the parent's open file behind ``fd`` without
    unlocking it (the child's copy no longer keeps the parent's lock alive once the parent
    closes). The number stays taken, pointed at /dev/null, so a stray use of it can reach
    no other file; it is never closed in the child."""
    if fd is None or fd < 0:
        return
    try:
        null = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        os.close(fd)            # no /dev/null: closing is the other way to let go
        return
    try:
        os.dup2(null, fd, inheritable=False)
    finally:
        os.close(null)
