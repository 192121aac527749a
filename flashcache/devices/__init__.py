"""Devices: where flashcache's bytes go. One protocol (engines.device.Device), several kinds.

Owns choosing and opening a device from config; each module owns one kind. Only this
package and flashcache.uring do I/O.
"""
from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING

from .base import BaseDevice, PlacementStream, WafSnapshot, WafUnavailableError
from .file import FileDevice

if TYPE_CHECKING:
    from ..config import DeviceConfig

log = logging.getLogger("flashcache.devices")

__all__ = ["BaseDevice", "FileDevice", "PlacementStream", "WafSnapshot", "WafUnavailableError",
           "open_device"]


def open_device(cfg: "DeviceConfig") -> BaseDevice:
    """Open the device a [device] config table describes."""
    if cfg.kind == "file":
        if cfg.engine == "uring":
            from .uring import UringDevice
            return UringDevice(cfg.path, cfg.size or None, block_size=cfg.block_size,
                               direct=cfg.direct, format=cfg.format, queue_depth=cfg.queue_depth)
        return FileDevice(cfg.path, cfg.size or None, block_size=cfg.block_size,
                          direct=cfg.direct, format=cfg.format)
    if cfg.kind == "emulated":
        from .emulated import open_emulated
        d = os.path.dirname(cfg.path)
        if d:
            os.makedirs(d, exist_ok=True)
        # device.size is the SSD's capacity unless emulator.capacity says that instead
        size = cfg.size if cfg.emulator.capacity and cfg.size else None
        return open_emulated(cfg.path, cfg.emulator.geometry(cfg.emulated_capacity()), format=cfg.format,
                             placement=cfg.placement, debug=cfg.emulator.check_invariants, size=size,
                             utilization=cfg.utilization)
    if cfg.kind == "nvme":
        from .nvme_passthru import open_nvme_device
        from .safety import check_device
        dev = open_nvme_device(cfg.path, size=cfg.size or None, queue_depth=cfg.queue_depth,
                               placement=cfg.placement, utilization=cfg.utilization)
        try:
            check_device(dev, cfg.format, log)          # the namespace may hold a filesystem
        except BaseException:
            dev.close()
            raise
        return dev
    raise NotImplementedError(f"device.kind = {cfg.kind!r} is validated by config but has no opener")
