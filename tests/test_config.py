"""Config: every error names the key, the bad value and what is allowed; a file lists all
of its problems at once; a dict is validated as a file is; relative paths in a file start
at the file's folder."""
import tomllib
from pathlib import Path

import pytest

from flashcache import config
from flashcache.cli import main
from flashcache.config import ConfigError

ROOT = Path(__file__).resolve().parent.parent


def err(text: str) -> str:
    with pytest.raises(ConfigError) as ei:
        config.loads(text, "t.toml")
    return str(ei.value)


def test_defaults_and_sizes():
    cfg = config.loads('[device]\nsize = "1GiB"\nblock_size = 512\n')
    assert cfg.device.size == 1 << 30
    assert cfg.device.block_size == 512
    assert cfg.device.kind == "emulated"
    assert cfg.device.emulator.preset == "qemu-like" and cfg.device.placement is True
    assert config.loads('[device]\nkind = "file"\nsize = "1.5KiB"\n').device.size == 1536
    assert config.loads('[device]\nsize = 8192\nkind = "file"\n').device.size == 8192


ERRORS = [
    ('[device]\nsize = "1 GB"', 't.toml: device.size = "1 GB": use a size like "1GiB" or "512MiB"'),
    ('[device]\nsize = "1GB"', 't.toml: device.size = "1GB": use a size like "1GiB" or "512MiB"'),
    ('[device]\nsize = -5', "t.toml: device.size = -5: a size cannot be negative"),
    ('[device]\nsize = "0.3B"', 't.toml: device.size = "0.3B": not a whole number of bytes'),
    ('[device]\nsise = "1GiB"', 't.toml: device.sise: unknown key; did you mean "size"? (known keys here: '
                                'block_size, direct, emulator, engine, format, kind, path, placement, queue_depth, size, utilization)'),
    ('[devise]\nsize = 1', 't.toml: devise: unknown key; did you mean "device"? (known keys here: cache, device, log, server)'),
    ('[device]\nengine = "urin"', 't.toml: device.engine = "urin": must be one of "uring", "psync" (did you mean "uring"?)'),
    ('[device]\nblock_size = 1000', "t.toml: device.block_size = 1000: must be a power of two (e.g. 512, 4096)"),
    ('[device]\nblock_size = 256', "t.toml: device.block_size = 256: must be at least 512"),
    ('[device]\ndirect = "yes"', 't.toml: device.direct = "yes": use true or false'),
    ('[device]\nqueue_depth = 1.5', "t.toml: device.queue_depth = 1.5: use a whole number"),
    ('[device]\npath = ""', 't.toml: device.path = "": give a file or device path'),
    ('[device]\npath = 3', 't.toml: device.path = 3: use a path as a string in quotes'),
    ('[log]\nlevel = 3', "t.toml: log.level = 3: use a string in quotes"),
    ('device = 3', "t.toml: device = 3: must be a table ([device])"),
    ('[device.emulator]\npreset = "paper"', 't.toml: device.emulator.preset = "paper": must be one of '
     '"paper-1.88tb-scaled", "qemu-like", "small-test"'),
    ('[device.emulator]\nhandle_type = "XI"', 't.toml: device.emulator.handle_type = "XI": use "II" (initially '
     'isolated), "PI" (persistently isolated) or "" for the preset\'s'),
    ('[device.emulator]\nlba_size = 1024', 't.toml: device.emulator.lba_size = 1024: must be one of 0, 512, 4096'),
    ('[device]\nsize = "64MiB"\n[device.emulator]\nru_size = "32MiB"',
     "t.toml: [device.emulator] with device.size = 67108864: emulated SSD geometry: only 1 spare reclaim units "
     "per group, need at least 12 (2 GC reserve + 9 open write frontiers + 1); raise op, use smaller reclaim "
     "units or fewer handles"),
    ('source = "x"', "t.toml: source: unknown key (known keys here: cache, device, log, server)"),
]


@pytest.mark.parametrize("text, message", ERRORS)
def test_errors_name_key_value_and_fix(text, message):
    assert err(text) == message


def test_invalid_toml_names_file():
    assert err("[device\n").startswith("t.toml: not valid TOML: ")


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="config file not found; the examples are in config/"):
        config.load(tmp_path / "nope.toml")


def test_every_shipped_example_is_valid():
    import pathlib
    files = sorted(pathlib.Path("config").glob("*.toml"))
    assert files, "config/ has no example files"
    for f in files:
        config.load(f)


def test_durations():
    assert config.parse_duration("k", "250ms") == 0.25
    assert config.parse_duration("k", "2h") == 7200
    with pytest.raises(ConfigError, match='k = "2 hours": use a duration like'):
        config.parse_duration("k", "2 hours")


def test_describe_lists_every_option_with_doc():
    rows = config.describe()
    keys = [k for k, _, _ in rows]
    assert "device.size" in keys and "log.level" in keys
    assert all(doc for _, _, doc in rows)


def test_emulator_table_overrides_the_preset():
    cfg = config.loads('[device]\nkind = "emulated"\nsize = "256MiB"\n[device.emulator]\npreset = "small-test"\n'
                       'handles = 3\nhandle_type = "PI"\nop = 0.28\ngc_policy = "fifo"\nfdp = false\n')
    g = cfg.device.emulator.geometry(cfg.device.size)
    assert g.capacity_bytes == 256 << 20 and g.handles == ("PI",) * 3 and g.op == 0.28
    assert g.gc_policy == "fifo" and g.fdp is False and g.ru_bytes == 1 << 20


@pytest.mark.parametrize("text, message", ERRORS)
def test_a_dict_is_validated_as_a_file_is(text, message):
    """One validation path: the same table as a dict gives the same message."""
    with pytest.raises(ConfigError) as ei:
        config.from_dict(tomllib.loads(text), source="t.toml")
    assert str(ei.value) == message


def test_dict_config():
    cfg = config.from_dict({"device": {"kind": "emulated", "size": "256MiB", "emulator": {"preset": "small-test"}},
                            "cache": {"dram_size": "1MiB", "flash": {"region_size": "1MiB"}}})
    assert cfg.device.size == 256 << 20 and cfg.device.emulator.preset == "small-test"
    assert cfg.cache.dram_size == 1 << 20 and cfg.cache.flash.region_size == 1 << 20
    assert cfg.source == "<dict>"
    assert config.from_dict({}) == config.Config()
    assert config.from_dict({"device": {"path": Path("x/dev.img")}}).device.path == "x/dev.img"
    with pytest.raises(ConfigError) as ei:
        config.from_dict({"device": {"size": "1 GB"}})
    assert str(ei.value) == '<dict>: device.size = "1 GB": use a size like "1GiB" or "512MiB"'


def test_a_dict_config_must_be_a_dict_of_tables():
    with pytest.raises(ConfigError) as ei:
        config.from_dict([("device", {})])
    assert str(ei.value) == ("<dict>: the config is a list; give a dict of tables like "
                             '{"device": {"kind": "emulated", "size": "1GiB"}, "cache": {...}}')
    with pytest.raises(ConfigError) as ei:
        config.from_dict({1: {}})
    assert str(ei.value) == "<dict>: 1: unknown key (known keys here: cache, device, log, server)"


def test_relative_paths_start_at_the_config_files_folder(tmp_path, monkeypatch):
    tmp_path = tmp_path.resolve()
    (tmp_path / "conf").mkdir()
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "conf" / "c.toml").write_text('[device]\npath = "data/dev.img"\n')
    (tmp_path / "conf" / "up.toml").write_text('[device]\npath = "../var/dev.img"\n')
    (tmp_path / "conf" / "abs.toml").write_text('[device]\nkind = "nvme"\npath = "/dev/ng0n1"\n')
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert config.load("../conf/c.toml").device.path == str(tmp_path / "conf" / "data" / "dev.img")
    assert config.load("../conf/up.toml").device.path == str(tmp_path / "var" / "dev.img")
    assert config.load("../conf/abs.toml").device.path == "/dev/ng0n1"


def test_relative_paths_of_a_dict_or_text_start_at_the_working_directory():
    assert config.from_dict({"device": {"path": "data/dev.img"}}).device.path == "data/dev.img"
    assert config.loads('[device]\npath = "data/dev.img"\n').device.path == "data/dev.img"


def test_every_path_option_starts_at_the_config_files_folder(tmp_path):
    """Each option named *path is resolved against the file's folder (a new one declared
    without kind="path" fails here)."""
    tmp_path = tmp_path.resolve()
    keys = [k for k, _, _ in config.describe() if k.rsplit(".", 1)[-1].endswith("path")]
    assert "device.path" in keys
    for key in keys:
        table, name = key.rsplit(".", 1)
        f = tmp_path / "c.toml"
        f.write_text(f'[{table}]\n{name} = "rel/x"\n')
        obj = config.load(f)
        for part in key.split("."):
            obj = getattr(obj, part)
        assert obj == str(tmp_path / "rel" / "x"), key


def test_the_defaults_are_the_device_of_config_default_toml():
    """flashcache.open() and flashcache.open("config/default.toml") from the repo root open
    the same emulated SSD: the same file and the same geometry (a different geometry on the
    same file fails the second open with a FormatError)."""
    d = config.Config().device
    f = config.load(ROOT / "config" / "default.toml").device
    assert (f.kind, f.format, f.placement) == (d.kind, d.format, d.placement)
    assert f.path == str(ROOT / d.path)
    assert f.emulator.geometry(f.size) == d.emulator.geometry(d.size)


BAD = '''\
[device]
size = "1 GB"
sise = 3
engine = "urin"
[device.emulator]
lba_size = 1024
[cache]
dram_size = "1GiB"
write_through = "yes"
[log]
level = 3
'''
BAD_ERRORS = [
    'bad.toml: device.size = "1 GB": use a size like "1GiB" or "512MiB"',
    'bad.toml: device.sise: unknown key; did you mean "size"? (known keys here: block_size, direct, emulator, '
    'engine, format, kind, path, placement, queue_depth, size, utilization)',
    'bad.toml: device.engine = "urin": must be one of "uring", "psync" (did you mean "uring"?)',
    'bad.toml: device.emulator.lba_size = 1024: must be one of 0, 512, 4096',
    'bad.toml: cache.write_through = "yes": use true, false or "sync" (true, and fdatasync before each set or '
    'delete returns)',
    'bad.toml: log.level = 3: use a string in quotes',
]


def test_every_problem_of_a_file_is_listed_at_once():
    with pytest.raises(ConfigError) as ei:
        config.loads(BAD, "bad.toml")
    assert ei.value.errors == BAD_ERRORS
    assert str(ei.value) == "\n".join(BAD_ERRORS)


def test_a_table_with_bad_values_is_not_also_judged_as_a_whole():
    """[device]'s geometry check needs a good size: with a bad one only the size is named."""
    with pytest.raises(ConfigError) as ei:
        config.loads('[device]\nsize = "64 MiB"\n[device.emulator]\nru_size = "32MiB"\n', "t.toml")
    assert ei.value.errors == ['t.toml: device.size = "64 MiB": use a size like "1GiB" or "512MiB"']


def test_flashcache_config_prints_every_problem(tmp_path, capsys, monkeypatch):
    (tmp_path / "bad.toml").write_text(BAD)
    monkeypatch.chdir(tmp_path)
    assert main(["config", "-c", "bad.toml"]) == 2
    assert capsys.readouterr().err.splitlines() == [f"flashcache: config error: {e}" for e in BAD_ERRORS]


def test_a_config_error_keeps_its_list_through_pickle():
    """(multiprocessing and concurrent.futures pickle exceptions between processes)"""
    import pickle
    e = pickle.loads(pickle.dumps(ConfigError("a: x = 1: bad", "a: y = 2: bad")))
    assert e.errors == ["a: x = 1: bad", "a: y = 2: bad"] and str(e) == "a: x = 1: bad\na: y = 2: bad"
