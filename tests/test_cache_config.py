"""flashcache.Cache / flashcache.open and their config argument (cache.py `_as_config`): a
Config, a TOML path, a dict shaped like the file, or nothing for the defaults."""
from __future__ import annotations

import pytest

import flashcache
from flashcache.errors import ConfigError

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
