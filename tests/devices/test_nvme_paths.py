"""Resolving what a user types to the NVMe nodes, on fake sysfs trees."""
import os

import pytest

from flashcache.devices.nvme_paths import resolve
from flashcache.errors import DeviceError


def mk(tmp_path, multipath=True):
    sysfs = tmp_path / "sys"
    if multipath:
        sub = sysfs / "devices/virtual/nvme-subsystem/nvme-subsys0"
        (sub / "nvme3").mkdir(parents=True)
        (sub / "nvme1").mkdir()
        (sub / "ng1n1").mkdir()
        target = sub
    else:
        target = sysfs / "devices/pci0000:00/0000:00:04.0/nvme/nvme2"
        target.mkdir(parents=True)
    g = sysfs / "class/nvme-generic/ng1n1"
    g.mkdir(parents=True)
    os.symlink(target, g / "device")
    p = sysfs / "class/block/nvme1n1p2"
    p.mkdir(parents=True)
    (p / "start").write_text("2048\n")
    (p / "size").write_text("4096\n")
    return str(sysfs)


@pytest.mark.parametrize("multipath, ctrl", [(True, "/dev/nvme1"), (False, "/dev/nvme2")])
def test_ng_and_block_names(tmp_path, multipath, ctrl):
    sysfs = mk(tmp_path, multipath)
    for given in ("/dev/ng1n1", "/dev/nvme1n1"):
        n = resolve(given, sysfs)
        assert (n.controller, n.ns, n.block) == (ctrl, "/dev/ng1n1", "/dev/nvme1n1")
        assert n.partition_start_bytes == 0 and n.partition_size_bytes is None


def test_partition(tmp_path):
    n = resolve("/dev/nvme1n1p2", mk(tmp_path))
    assert n.ns == "/dev/ng1n1"
    assert (n.partition_start_bytes, n.partition_size_bytes) == (2048 * 512, 4096 * 512)


def test_controller_only(tmp_path):
    n = resolve("/dev/nvme0", mk(tmp_path))
    assert n.controller == "/dev/nvme0" and n.ns is None


def test_bad_names(tmp_path):
    sysfs = mk(tmp_path)
    with pytest.raises(DeviceError, match="is not an NVMe device name"):
        resolve("/dev/sda", sysfs)
    with pytest.raises(DeviceError, match="cannot read the partition's start"):
        resolve("/dev/nvme1n1p9", sysfs)
