"""flashcache.Cache / flashcache.open and their config argument (cache.py `_as_config`): a
Config, a TOML path, a dict shaped like the file, or nothing for the defaults, which are
the device config/default.toml describes."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import flashcache
from flashcache.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent

SMALL = {"device": {"kind": "emulated", "path": "dev.img", "size": "64MiB", "emulator": {"preset": "small-test"}},
         "cache": {"dram_size": "256KiB", "flash": {"region_size": "1MiB"}}}


def test_cache_takes_a_dict_and_its_relative_paths_start_at_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with flashcache.Cache(SMALL) as c:
        c.set("k", b"v")
        assert c.config.source == "<dict>" and c.config.device.size == 64 << 20
    assert (tmp_path / "dev.img").exists()
    with flashcache.open(SMALL) as c:
        assert c.get("k") == b"v"


def test_a_bad_dict_names_the_key():
    with pytest.raises(ConfigError) as ei:
        flashcache.open({"device": {"size": "1 GB", "sise": 1}})
    assert ei.value.errors == [
        '<dict>: device.size = "1 GB": use a size like "1GiB" or "512MiB"',
        '<dict>: device.sise: unknown key; did you mean "size"? (known keys here: block_size, direct, emulator, '
        'engine, format, kind, path, placement, queue_depth, size, utilization)']


def test_a_config_of_another_type_says_what_to_pass():
    with pytest.raises(TypeError) as ei:
        flashcache.Cache(42)
    assert str(ei.value) == ("flashcache.Cache(config): got int; pass a flashcache.config.Config, the path of "
                             "a TOML file, a dict shaped like that file, or nothing for the defaults")


def test_a_config_file_from_another_folder_opens_its_own_files(tmp_path, monkeypatch):
    (tmp_path / "conf").mkdir()
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "conf" / "c.toml").write_text(
        '[device]\npath = "data/dev.img"\nsize = "64MiB"\n[device.emulator]\npreset = "small-test"\n'
        '[cache.flash]\nregion_size = "1MiB"\n')
    monkeypatch.chdir(tmp_path / "elsewhere")
    with flashcache.open("../conf/c.toml") as c:
        c.set("k", b"v")
    assert (tmp_path / "conf" / "data" / "dev.img").exists()
    assert (tmp_path / "conf" / "data" / "dev.img.ftl").exists()
    assert list((tmp_path / "elsewhere").iterdir()) == []


def test_open_defaults_and_default_toml_are_one_cache(tmp_path, monkeypatch):
    """From the repo root (here a copy of its config/), flashcache.open() and
    flashcache.open("config/default.toml") open the same emulated SSD, in either order."""
    (tmp_path / "config").mkdir()
    shutil.copy(ROOT / "config" / "default.toml", tmp_path / "config" / "default.toml")
    monkeypatch.chdir(tmp_path)
    with flashcache.open() as c:
        c.set("k", b"v")
    with flashcache.open("config/default.toml") as c:
        assert c.get("k") == b"v"
        c.set("k2", b"v2")
    with flashcache.open() as c:
        assert c.get("k2") == b"v2"
    assert sorted(p.name for p in (tmp_path / "var").iterdir()) == ["flashcache.img", "flashcache.img.ftl"]


def _emulated(path, **device):
    emulator = device.pop("emulator", {})
    return {"device": {"kind": "emulated", "path": str(path), **device,
                       "emulator": {"preset": "small-test", **emulator}},
            "cache": {"dram_size": "256KiB", "flash": {"region_size": "1MiB"}}}


def test_utilization_gives_the_cache_a_share_and_leaves_the_rest_spare(tmp_path):
    """device.utilization = 0.5 on a 128 MiB emulated SSD: the cache uses 64 MiB, the
    exported capacity stays 128 MiB, and LBAs past the cache's share are never written."""
    cfg = _emulated(tmp_path / "d.img", utilization=0.5, emulator={"capacity": "128MiB"})
    with flashcache.open(cfg) as c:
        assert (c.device.size, c.device.capacity) == (64 << 20, 128 << 20)
        assert c.device.ftl.geometry.capacity_bytes == 128 << 20
        for i in range(3000):
            c.set(f"k{i}", bytes(3000))
        l2p = c.device.ftl.arrays["l2p"]
        assert (l2p[(64 << 20) // 4096:] == 0xFFFFFFFF).all()     # the spare half: never mapped
        assert (l2p[: (64 << 20) // 4096] != 0xFFFFFFFF).any()


def test_the_unused_share_is_deallocated_once_when_the_cache_formats(tmp_path):
    """A drive that held an earlier user's data in the share the cache now leaves: the
    cache deallocates it when it formats the device (so it is spare, not live data the FTL
    keeps copying), and not again on a warm restart."""
    path = tmp_path / "d.img"
    full = _emulated(path, size="128MiB")
    with flashcache.open(full) as c:
        c.device.write(64 << 20, b"\1" * (32 << 20))                 # data in the upper half
    half = _emulated(path, utilization=0.5, emulator={"capacity": "128MiB"})
    with flashcache.open(half) as c:
        assert c.navy.start.startswith("formatted")
        ftl = c.device.ftl
        assert (ftl.arrays["l2p"][(64 << 20) // 4096:] == 0xFFFFFFFF).all()
        assert c.stats()["device"]["bytes_trimmed"] == 64 << 20
    with flashcache.open(half) as c:
        assert c.navy.start == "warm"
        assert c.stats()["device"]["bytes_trimmed"] == 0


@pytest.mark.parametrize("device,message", [
    ({"utilization": 0}, "device.utilization = 0: use a share above 0, up to 1 (e.g. 0.5 for half the device)"),
    ({"utilization": 1.5}, "device.utilization = 1.5: must be at most 1.0"),
    ({"kind": "file", "size": "64MiB", "utilization": 0.5},
     'device.utilization = 0.5: kind = "file" has no spare to leave to a drive; set device.size instead '
     "(utilization is for nvme and emulated)"),
    ({"size": "256MiB", "emulator": {"capacity": "128MiB"}},
     "device.size = 268435456: larger than the emulated SSD (device.emulator.capacity = 134217728); "
     "lower it or leave it out"),
])
def test_utilization_and_capacity_errors(tmp_path, device, message):
    cfg = _emulated(tmp_path / "d.img", **device)
    with pytest.raises(ConfigError) as ei:
        flashcache.open(cfg)
    assert ei.value.errors == [f"<dict>: {message}"]
