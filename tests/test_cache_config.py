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
        'engine, format, kind, path, placement, queue_depth, size)']


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
