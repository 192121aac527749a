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


def test_run_reports_since_open_from_deltas_and_lifetime_as_lifetime(tmp_path, capsys):
    """The same check twice on one device: what it wrote since open is the same each time
    (so is app write amplification); the device's lifetime counters grow."""
    import re
    cfg = conf(tmp_path)
    runs = []
    for _ in range(2):
        assert cache_check(cfg, items=500) == 0
        out = capsys.readouterr().out
        since = re.search(r"device WAF ([\d.]+) since open \(host ([\d,]+) B, media ([\d,]+) B\)", out)
        life = re.search(r"device WAF ([\d.]+) lifetime +\(host ([\d,]+) B, media ([\d,]+) B\)", out)
        wa = re.search(r"app WA +([\d.]+) since open \(engines wrote ([\d,]+) B for ([\d,]+) B of items set\)", out)
        assert since and life and wa, out
        runs.append((since.groups(), life.groups(), wa.groups()))
    (s1, l1, w1), (s2, l2, w2) = runs
    assert s1 == s2 and w1 == w2
    assert int(l2[1].replace(",", "")) > int(l1[1].replace(",", "")) > int(s1[1].replace(",", ""))
    assert float(w1[0]) == round(int(w1[1].replace(",", "")) / int(w1[2].replace(",", "")), 2)
