"""`flashcache run`: the device self-check and the cache check, on the default config's
device kind (the emulated FDP SSD) in a scratch directory."""
from flashcache import config
from flashcache.cli import cache_check, main, selfcheck


def conf(tmp_path, extra=""):
    return config.loads(f"""
[device]
kind = "emulated"
path = "{tmp_path}/dev.img"
size = "64MiB"
[device.emulator]
preset = "small-test"
{extra}
[cache.flash]
region_size = "1MiB"
""", "t.toml")


def test_run_checks_device_then_cache(tmp_path, capsys):
    cfg = conf(tmp_path)
    assert selfcheck(cfg) == 0
    assert cache_check(cfg, items=500) == 0
    out = capsys.readouterr().out
    assert "selfcheck  passed" in out and "cachecheck passed" in out
    assert "placement  bighash: on, placement identifier 1" in out
    assert "wrong 0" in out and "device WAF 1.000 since open" in out


def test_run_on_a_conventional_ssd_says_why_placement_is_off(tmp_path, capsys):
    assert cache_check(conf(tmp_path, "fdp = false"), items=300) == 0
    out = capsys.readouterr().out
    assert "placement  bighash: off: FDP is disabled in endurance group 1" in out


def test_run_with_a_bad_config_exits_2(tmp_path, capsys):
    p = tmp_path / "bad.toml"
    p.write_text('[device]\nsize = "1 GB"\n')
    assert main(["run", "-c", str(p)]) == 2
    assert 'device.size = "1 GB": use a size like "1GiB"' in capsys.readouterr().err
