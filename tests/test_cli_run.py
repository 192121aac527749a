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


def test_run_fails_when_an_item_is_lost(tmp_path, capsys, monkeypatch):
    """A loss planted behind the cache's back (one large item and one small one gone from
    DRAM and flash after they were set) fails the check and names them; the old check
    compared only the items that came back, and passed."""
    from engines.device import run
    from flashcache.cache import Cache

    lost = [b"selfcheck:1", b"selfcheck:10"]          # 100 B (BigHash) and 20 kB (BlockCache)
    set_many = Cache.set_many

    def set_then_lose(self, mapping, ttl=None):
        set_many(self, mapping, ttl)
        for k in lost:
            self.dram.delete(k)
            run(self.navy.remove(k), self.device)

    monkeypatch.setattr(Cache, "set_many", set_then_lose)
    assert cache_check(conf(tmp_path), items=500) == 1
    out = capsys.readouterr().out
    assert "missing 2, wrong 0" in out
    assert "FAILED     2 item(s) missing: selfcheck:1, selfcheck:10" in out
    assert "cachecheck FAILED" in out


def test_run_fails_when_a_deleted_item_is_still_served(tmp_path, capsys, monkeypatch):
    from flashcache.cache import Cache

    delete = Cache.delete
    monkeypatch.setattr(Cache, "delete", lambda self, k: k == b"selfcheck:3" or delete(self, k))
    assert cache_check(conf(tmp_path), items=200) == 1
    out = capsys.readouterr().out
    assert "still served 1" in out and "FAILED     1 item(s) served after delete: selfcheck:3" in out


def test_run_checks_every_item_with_a_sparing_admission_policy_and_a_small_device(tmp_path, capsys):
    """The configured admission would drop most items (random, 10 %) and the device is too
    small for 2000 items without eviction: the check takes accept-all and as many items as
    fit, says so, and every one of them reads back."""
    import re
    cfg = config.loads(f"""
[device]
kind = "file"
path = "{tmp_path}/dev.img"
size = "12MiB"
format = true
[cache.admission]
policy = "random"
probability = 0.1
[cache.flash]
region_size = "1MiB"
""", "t.toml")
    assert cache_check(cfg, items=2000) == 0
    out = capsys.readouterr().out
    assert "admission accept-all (configured: random)" in out
    m = re.search(r"items +set (\d+) \(2000 asked: this device holds \d+ with room to spare\), read back (\d+) "
                  r"\(hits: DRAM \d+, flash (\d+)\), missing 0, wrong 0", out)
    assert m, out
    n, back, flash = map(int, m.groups())
    assert 100 <= n < 2000 and back == n and flash > n // 2
