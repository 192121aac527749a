"""The one exception family of flashcache, rooted at FlashCacheError.

Owns only the exception types; every layer raises these and nothing else for expected
failures. Messages say what was wrong, where, and what to do.
"""
from __future__ import annotations

import errno as _errno
import os


class FlashCacheError(Exception):
    """Base of every error flashcache raises on purpose."""


class ConfigError(FlashCacheError, ValueError):
    """A configuration value is missing, malformed or out of range (names the key).

    ``errors`` holds one message per problem (a config file's are all found in one pass);
    ``str(err)`` is those messages, one per line.
    """

    def __init__(self, *errors: str):
        self.errors = list(errors)
        super().__init__("\n".join(self.errors))

    def __reduce__(self):
        return (type(self), tuple(self.errors))


class FormatError(FlashCacheError):
    """On-flash bytes are not what the format says, or a target holds foreign data."""


class DeviceError(FlashCacheError, OSError):
    """An I/O-level failure, carrying errno and the device path.

    ``str(err)`` is ``"<path>: <what>: <strerror> (errno NAME); <hint>"``.
    """

    def __init__(self, path: str | None, what: str, err: int | None = None, hint: str = ""):
        self.path = path
        self.what = what
        self.hint = hint
        parts = [f"{path}: {what}" if path else what]
        if err:
            parts.append(f": {os.strerror(err)} (errno {_errno.errorcode.get(err, err)})")
        if hint:
            parts.append(f"; {hint}")
        msg = "".join(parts)
        OSError.__init__(self, err or 0, msg)
        self.errno = err
        self.filename = path
        self.msg = msg

    def __str__(self) -> str:
        return self.msg

    def __reduce__(self):
        return (type(self), (self.path, self.what, self.errno, self.hint))


class ClosedError(DeviceError):
    """An operation on a device, ring or cache after close()."""

    def __init__(self, path: str | None, what: str = "used after close()"):
        super().__init__(path, what, _errno.EBADF, "open it again")

    def __reduce__(self):
        return (type(self), (self.path, self.what))


class DeviceInUseError(DeviceError):
    """The device (or its backing file) is already open: another cache or device holds its
    exclusive lock, in this process or another. ``pids`` are the holders found in
    /proc/locks (empty when none could be read)."""

    def __init__(self, path: str | None, what: str, pids: tuple[int, ...] = (), hint: str = ""):
        self.pids = tuple(pids)
        super().__init__(path, what, _errno.EBUSY, hint)

    def __reduce__(self):
        return (type(self), (self.path, self.what, self.pids, self.hint))


class ForkedError(DeviceError):
    """A device, io_uring ring or Cache used in a child process that inherited it through
    fork(). The parent's object keeps working; the child must open its own.
    ``owner_pid`` opened it, ``pid`` is the child that tried to use it."""

    def __init__(self, path: str | None, what: str, thing: str, owner_pid: int, hint: str = "",
                 pid: int | None = None):
        self.thing = thing
        self.owner_pid = owner_pid
        self.pid = os.getpid() if pid is None else pid
        self.forked_what = what
        super().__init__(path, f"{what}: this {thing} was opened in process {owner_pid} and inherited "
                         f"by fork() (this is process {self.pid})", None,
                         hint or f"open a new {thing} in the child; the parent keeps its own")

    def __reduce__(self):
        return (type(self), (self.path, self.forked_what, self.thing, self.owner_pid, self.hint, self.pid))


class UringUnavailableError(DeviceError):
    """io_uring cannot be used on this machine (ENOSYS, EPERM, sysctl off)."""


class NvmeError(DeviceError):
    """An NVMe command completed with a non-zero status.

    ``sct``/``sc`` are the Status Code Type and Status Code; ``status_name`` decodes them
    ("LBA Out of Range", "Invalid Placement Handle List", ...).
    """

    def __init__(self, path: str | None, what: str, sct: int, sc: int, status_name: str,
                 dnr: bool = False, hint: str = ""):
        self.sct = sct
        self.sc = sc
        self.status_name = status_name
        self.dnr = dnr
        super().__init__(path, f"{what}: NVMe status {status_name} (SCT {sct:#x}, SC {sc:#04x})",
                         None, hint)
        self.what = what
        self.errno = _errno.EIO

    def __reduce__(self):
        return (type(self), (self.path, self.what, self.sct, self.sc, self.status_name,
                             self.dnr, self.hint))
