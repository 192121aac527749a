"""Naming of NVMe device nodes: from what a user types to the nodes flashcache opens.

Owns the mapping between `/dev/nvmeX` (controller), `/dev/nvmeXnY[pZ]` (block namespace,
maybe a partition) and `/dev/ngXnY` (generic char namespace, what passthrough I/O uses),
read from sysfs; it opens no device. The surprise: with native multipath the ng node
belongs to the subsystem head, so its controller is found through the subsystem's
directory, not through the node's name.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass

from ..errors import DeviceError

_CTRL = re.compile(r"^nvme(\d+)$")
_NS = re.compile(r"^(?:nvme|ng)(\d+)n(\d+)(?:p(\d+))?$")


@dataclass(frozen=True, slots=True)
class NvmeNodes:
    """The nodes behind one user-given path. ``ns`` is None for a bare controller.

    ``partition_start_bytes``/``partition_size_bytes`` are set when the user named a
    partition: I/O is offset into the namespace by the start, as CacheLib does.
    """

    given: str
    controller: str            # /dev/nvmeX
    ns: str | None             # /dev/ngXnY
    block: str | None          # /dev/nvmeXnY
    partition_start_bytes: int = 0
    partition_size_bytes: int | None = None


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def _controller_of(sysfs: str, ng: str, inst: str) -> str | None:
    """Find the controller of namespace ``ng`` (e.g. "ng0n1") through sysfs."""
    dev = os.path.join(sysfs, "class", "nvme-generic", ng, "device")
    try:
        real = os.path.realpath(dev)
        names = sorted(os.listdir(real))
    except OSError:
        return None
    if _CTRL.match(os.path.basename(real)):         # non-multipath: device -> the controller
        return os.path.basename(real)
    ctrls = sorted((n for n in names if _CTRL.match(n)), key=lambda n: int(n[4:]))
    if ctrls:                                         # multipath: device -> the subsystem
        return ctrls[0]
    return None


def resolve(path: str, sysfs: str = "/sys") -> NvmeNodes:
    """Map a user path (/dev/nvme0, /dev/nvme0n1, /dev/nvme0n1p2, /dev/ng0n1) to nodes."""
    base = os.path.basename(os.path.realpath(path) if os.path.islink(path) else path)
    devdir = os.path.dirname(path) or "/dev"
    m = _CTRL.match(base)
    if m:
        return NvmeNodes(given=path, controller=os.path.join(devdir, base), ns=None, block=None)
    m = _NS.match(base)
    if not m:
        raise DeviceError(path, "is not an NVMe device name", None,
                          "give /dev/nvmeX (controller), /dev/nvmeXnY (namespace) or /dev/ngXnY (generic char device)")
    inst, nsn, part = m.groups()
    ng = f"ng{inst}n{nsn}"
    blk = f"nvme{inst}n{nsn}"
    start, psize = 0, None
    if part is not None:
        pdir = os.path.join(sysfs, "class", "block", base)
        s, z = _read(os.path.join(pdir, "start")), _read(os.path.join(pdir, "size"))
        if s is None or z is None:
            raise DeviceError(path, f"cannot read the partition's start and size from {pdir}", None,
                              "is sysfs mounted, and does the partition exist?")
        start, psize = int(s) * 512, int(z) * 512   # sysfs counts 512-byte sectors
    ctrl = _controller_of(sysfs, ng, inst) or f"nvme{inst}"
    return NvmeNodes(given=path, controller=os.path.join(devdir, ctrl), ns=os.path.join(devdir, ng),
                     block=os.path.join(devdir, blk), partition_start_bytes=start,
                     partition_size_bytes=psize)
