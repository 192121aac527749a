"""flashcache/waf/experiment.py: one experiment's config, steadiness rule, outputs, and
Ctrl-C; the whole stack on config/waf-small.toml, briefly."""
from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path

import pytest

from flashcache import workload
from flashcache.config import from_dict
from flashcache.errors import ConfigError
from flashcache.waf import experiment as ex

ROOT = Path(__file__).resolve().parent.parent.parent
SMALL = ROOT / "config" / "waf-small.toml"
SAMPLE = ROOT / "tests" / "data" / "twitter-sample.csv"
QUICK = ex.Rules(window=1.0, windows=1, min_wraps=0, steady_windows=1, max_warmup=1.0)


def small():
    return ex.config_data(SMALL)


def test_config_waf_toml_is_the_built_in_default(tmp_path):
    data, src, base = ex.config_data(ROOT / "config" / "waf.toml")
    from_file = ex.point_config(data, ex.Point(), src, base, tmp_path)
    data, src, base = ex.config_data(None)
    built_in = ex.point_config(data, ex.Point(), src, base, tmp_path)
    assert dataclasses.replace(from_file, source="") == dataclasses.replace(built_in, source="")
    g = built_in.device.emulator.geometry(built_in.device.emulated_capacity())
    assert (g.nru, g.nrg, g.handles, g.ru_bytes) == (144, 1, ("II",) * 8, 8 << 20)
    assert built_in.cache.flash.region_size * 32 == g.ru_bytes      # regions much smaller than RUs


def test_a_point_sets_what_it_names_and_nothing_else(tmp_path):
    data, src, base = small()
    p = ex.Point(fdp=False, utilization=0.5, bighash_fraction=0.16, handle_type="PI", trim=True)
    cfg = ex.point_config(data, p, src, base, tmp_path)
    assert cfg.device.emulator.fdp is False and cfg.device.utilization == 0.5
    assert cfg.cache.flash.bighash_fraction == 0.16 and cfg.cache.flash.trim_on_reclaim
    assert cfg.device.emulator.handle_type == "PI"
    assert cfg.device.path == str(tmp_path / "device.img") and cfg.device.format    # always a fresh SSD
    assert p.label() == "fdp-off_util-50_bighash-16_pi_trim"
    assert ex.point_config(data, ex.Point(), src, base, tmp_path).device.emulator.fdp is True


def test_on_a_real_drive_fdp_off_means_no_placement_and_handle_types_are_the_drives():
    data = {"device": {"kind": "nvme", "path": "/dev/ng0n1"}}
    cfg = ex.point_config(data, ex.Point(fdp=False), "<t>", None, Path("/tmp"))
    assert cfg.device.placement is False and cfg.device.path == "/dev/ng0n1"
    with pytest.raises(ConfigError, match="a real drive's handle types are fixed by its FDP configuration"):
        ex.point_config(data, ex.Point(handle_type="PI"), "<t>", None, Path("/tmp"))


def _w(waf: float, wraps: float = 5.0) -> ex.Window:
    return ex.Window(0, "warmup", 0, 1000, int(1000 * waf), 0, waf, 1, 0.5, 1, 1, 1, 0, 0, wraps)


def test_steady_needs_wraps_erases_and_two_blocks_of_windows_that_agree():
    r = ex.Rules(steady_windows=2, tolerance=0.01, min_wraps=2)
    flat = [_w(3.0), _w(3.02), _w(3.01), _w(2.99)]
    assert ex.steadiness(flat, 2.5, 10, 10, 5, r, True) == []
    assert ex.steadiness(flat, 1.5, 10, 10, 5, r, True) == ["BlockCache wrapped 1.50 of 2 times"]
    assert ex.steadiness(flat, 1.5, 10, 10, 5, r, False) == []                  # no BlockCache: no wraps
    assert ex.steadiness(flat, 2.5, 4, 10, 5, r, True) == ["the FTL erased 0.80 of 1 device's worth"]
    assert ex.steadiness(flat, 2.5, 0, 15, 5, r, True) == []      # a drive that reports no erases (QEMU)
    assert ex.steadiness(flat[:3], 2.5, 10, 10, 5, r, True) == ["3 of 4 windows"]
    rising = [_w(1.0), _w(1.5), _w(2.5), _w(3.0)]
    assert "differs from the 2 before" in ex.steadiness(rising, 2.5, 10, 10, 5, r, True)[0]


def test_a_run_writes_its_windows_as_csv_and_json_stamped_with_config_geometry_and_seed(tmp_path):
    data, src, base = small()
    res = ex.run(data, src, base, ex.Point(fdp=True), workload.load("kvcache"), QUICK, tmp_path / "out",
                 progress=False, echo=None)
    d = json.loads((tmp_path / "out" / "run.json").read_text())
    assert d["seed"] == 1 and d["workload"]["name"] == "kvcache" and d["workload"]["keys"] > 0
    assert d["config"]["cache"]["flash"]["bighash_fraction"] == 0.04
    dev = d["device"]
    assert (dev["ru_bytes"], dev["reclaim_units"], dev["reclaim_groups"], dev["handles"]) == (512 << 10, 144, 1, 8)
    assert dev["region_bytes"] == 16 << 10 and dev["region_to_ru"] == 1 / 32
    assert dev["op"] == pytest.approx(0.125) and dev["waf_source"] == "FDP Statistics log (LID 0x22)"
    rows = list(csv.DictReader(open(tmp_path / "out" / "windows.csv")))
    assert len(rows) == len(d["windows"]) == len(res.windows) == 2
    assert [r["phase"] for r in rows] == ["warmup", "measure"]
    w = d["windows"][1]
    assert w["host_bytes"] > 0 and w["media_bytes"] >= w["host_bytes"] and w["waf"] >= 1.0
    assert w["app_wa"] > 1 and 0 < w["hit_ratio"] < 1 and w["ops_per_s"] > 0
    assert d["warmup"]["device_writes"] > 0.9 and d["summary"]["waf"] == pytest.approx(w["waf"])
    assert d["summary"]["counts"]["wrong_size"] == 0
    assert not (tmp_path / "out" / "device.img").exists()            # the scratch SSD is gone
    assert "result    WAF" in ex.table(res)


def test_ctrl_c_keeps_the_windows_done_so_far(tmp_path, monkeypatch):
    from flashcache.workload import Driver
    calls = {"n": 0}
    real = Driver.apply

    def apply(self, b):
        calls["n"] += 1
        if calls["n"] == 20:
            raise KeyboardInterrupt
        return real(self, b)
    monkeypatch.setattr(Driver, "apply", apply)
    data, src, base = small()
    rules = dataclasses.replace(QUICK, window=0.25, max_warmup=10, steady_windows=12, windows=5)
    res = ex.run(data, src, base, ex.Point(), workload.load("kvcache"), rules, tmp_path, progress=False, echo=None)
    d = json.loads((tmp_path / "run.json").read_text())
    assert res.interrupted and d["interrupted"] and "Ctrl-C" in d["summary"]["stopped"]
    assert len(d["windows"]) >= 1 and d["warmup"]["steady"] is False


def test_a_trace_replays_through_the_same_run(tmp_path):
    data, src, base = small()
    rules = dataclasses.replace(QUICK, window=0.01, max_warmup=0.01)
    res = ex.run(data, src, base, ex.Point(), {"path": str(SAMPLE), "loop": True}, rules, tmp_path,
                 progress=False, echo=None)
    t = res.summary["trace"]
    assert t["malformed"] == 5 and t["unknown_op"] == 2 and t["passes"] > 1 and t["lines"] > 408
    assert res.meta["workload"]["kind"] == "trace" and res.summary["waf"] >= 1.0
    assert "trace     " in ex.table(res)


def test_max_seconds_stops_a_run_and_says_so(tmp_path):
    data, src, base = small()
    rules = dataclasses.replace(QUICK, max_warmup=100, max_seconds=0.5)
    res = ex.run(data, src, base, ex.Point(), workload.load("kvcache"), rules, tmp_path, progress=False, echo=None)
    assert res.summary["stopped"] == "max_seconds = 0.5 reached" and res.windows


def test_bad_rules_are_refused():
    with pytest.raises(ConfigError, match="window = 0"):
        ex.Rules(window=0).check()


def test_the_config_of_a_dict_validates_as_a_file():
    assert from_dict(ex.DEFAULT_CONFIG).device.emulator.capacity == 1 << 30


def test_persistently_isolated_handles_that_do_not_fit_are_fewer_and_it_says_so(tmp_path):
    """8 PI handles need 8 GC frontiers of their own besides 8 host ones: more spare RUs
    than 12 % OP leaves on 144 RUs. The point takes as many as fit, and notes it."""
    data, src, base = ex.config_data(None)
    notes: list[str] = []
    cfg = ex.point_config(data, ex.Point(handle_type="PI"), src, base, tmp_path, notes)
    g = cfg.device.emulator.geometry(cfg.device.emulated_capacity())
    assert set(g.handles) == {"PI"} and 3 <= len(g.handles) < 8
    assert notes == [f"8 persistently isolated handles need more spare reclaim units than the drive has (each "
                     f"keeps its own GC frontier): this point uses {len(g.handles)}"]
    assert ex.point_config(data, ex.Point(handle_type="II"), src, base, tmp_path).device.emulator.handles == 8


def test_a_trace_that_ends_ends_the_run_with_what_it_measured(tmp_path):
    data, src, base = small()
    rules = dataclasses.replace(QUICK, window=0.001, max_warmup=100)
    res = ex.run(data, src, base, ex.Point(), {"path": str(SAMPLE), "loop": False}, rules, tmp_path,
                 progress=False, echo=None)
    assert res.summary["stopped"] == "the trace ended (replay it again with loop)"
    assert res.summary["trace"]["passes"] == 1 and res.windows


def test_a_run_is_repeatable_byte_for_byte(tmp_path):
    """The same config, point, workload and seed give the same windows: host and media
    bytes alike (what a reader of a published table needs to reproduce it)."""
    data, src, base = small()
    runs = [ex.run(data, src, base, ex.Point(fdp=False), workload.load("kvcache"), QUICK, tmp_path / str(i),
                   progress=False, echo=None) for i in range(2)]
    a, b = ([(w.host_bytes, w.media_bytes, w.ops) for w in r.windows] for r in runs)
    assert a == b and a[-1][1] > a[-1][0]
