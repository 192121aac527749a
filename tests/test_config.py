"""Config: every error names the key, the bad value and what is allowed."""
import pytest

from flashcache import config
from flashcache.config import ConfigError


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


@pytest.mark.parametrize("text, message", [
    ('[device]\nsize = "1 GB"', 't.toml: device.size = "1 GB": use a size like "1GiB" or "512MiB"'),
    ('[device]\nsize = "1GB"', 't.toml: device.size = "1GB": use a size like "1GiB" or "512MiB"'),
    ('[device]\nsize = -5', "t.toml: device.size = -5: a size cannot be negative"),
    ('[device]\nsize = "0.3B"', 't.toml: device.size = "0.3B": not a whole number of bytes'),
    ('[device]\nsise = "1GiB"', 't.toml: device.sise: unknown key; did you mean "size"? (known keys here: '
                                'block_size, direct, emulator, engine, format, kind, path, placement, queue_depth, size)'),
    ('[devise]\nsize = 1', 't.toml: devise: unknown key; did you mean "device"? (known keys here: cache, device, log)'),
    ('[device]\nengine = "urin"', 't.toml: device.engine = "urin": must be one of "uring", "psync" (did you mean "uring"?)'),
    ('[device]\nblock_size = 1000', "t.toml: device.block_size = 1000: must be a power of two (e.g. 512, 4096)"),
    ('[device]\nblock_size = 256', "t.toml: device.block_size = 256: must be at least 512"),
    ('[device]\ndirect = "yes"', 't.toml: device.direct = "yes": use true or false'),
    ('[device]\nqueue_depth = 1.5', "t.toml: device.queue_depth = 1.5: use a whole number"),
    ('[device]\npath = ""', 't.toml: device.path = "": give a file or device path'),
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
    ('source = "x"', "t.toml: source: unknown key (known keys here: cache, device, log)"),
])
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
