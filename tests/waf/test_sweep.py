"""flashcache/waf/sweep.py: the grid, parallel points, resuming, a Dask cluster; and the
acceptance in small (config/waf-small.toml, see conftest.py)."""
from __future__ import annotations

import json

import pytest

from flashcache.waf import experiment as ex
from flashcache.waf import sweep as sw


def test_ci_sized_acceptance(small_sweep):
    """FDP keeps WAF near 1 at 50 and 100 % utilisation; without it WAF is above FDP's at
    50 % and at least 2.5 at 100 %; a BigHash of 64 % of the flash erodes FDP's benefit."""
    r = small_sweep["rows"]
    on50, off50 = r["fdp-on_util-50_bighash-4_ii_notrim"], r["fdp-off_util-50_bighash-4_notrim"]
    on100, off100 = r["fdp-on_util-100_bighash-4_ii_notrim"], r["fdp-off_util-100_bighash-4_notrim"]
    on64 = r["fdp-on_util-100_bighash-64_ii_notrim"]
    assert on50["waf"] <= 1.05 and off50["waf"] > on50["waf"] + 0.05
    assert on100["waf"] <= 1.10 and off100["waf"] >= 2.5
    assert on64["waf"] > on100["waf"] + 0.5
    for row in (on50, off50, on100, off100):
        assert row["steady"], row
        assert row["warmup_device_writes"] >= 2


def test_the_sweep_writes_one_summary_and_each_point(small_sweep):
    out = small_sweep["out"]
    s = json.loads((out / "summary.json").read_text())
    assert len(s["rows"]) == 5 and not s["failed"]
    header = (out / "summary.csv").read_text().splitlines()[0]
    assert header.startswith("label,fdp,utilization,bighash_fraction,handle_type,trim,waf,")
    for label in small_sweep["rows"]:
        assert (out / "points" / label / "run.json").exists() and (out / "points" / label / "windows.csv").exists()
    assert "5 points: 0 done before, 5 to run (2 processes here)" in small_sweep["lines"][0]
    assert any(line.startswith("point ") for line in small_sweep["lines"][1:])


def test_running_it_again_resumes_instead_of_repeating(small_sweep):
    lines: list[str] = []
    rows = sw.sweep(*small_sweep["args"], jobs=2, progress=False, echo=lines.append)
    assert "5 points: 5 done before, 0 to run" in lines[0]
    assert {r["label"]: r["waf"] for r in rows} == {k: v["waf"] for k, v in small_sweep["rows"].items()}


def test_a_changed_setting_reruns_only_its_points(small_sweep, tmp_path):
    data, src, base, points, wl, rules, out = small_sweep["args"]
    keys = [sw.point_key(data, p, wl.as_dict(), rules) for p in points]
    other = sw.point_key(data, points[0], wl.as_dict(), ex.Rules(windows=3))
    assert len(set(keys)) == len(keys) and other not in keys


def test_the_default_grid_varies_one_setting_at_a_time():
    pts = sw.Grid().points()
    labels = [p.label() for p in pts]
    assert len(pts) == 14 and len(set(labels)) == 14
    assert "fdp-on_util-50_bighash-4_ii_notrim" in labels and "fdp-off_util-100_bighash-64_notrim" in labels
    assert all(p.utilization == 1.0 for p in pts if p.bighash_fraction != 0.04)
    more = sw.Grid(handle_type=("II", "PI"), trim=(False, True)).points()
    assert len(more) == 17                             # PI with FDP on only; trim with both
    assert len(sw.Grid(design="cross", utilization=(0.5, 1.0), bighash_fraction=(0.04, 0.64)).points()) == 8


def test_points_run_on_a_dask_cluster(tmp_path, small_sweep):
    """The points go to a Dask distributed scheduler (here a local cluster of two workers in
    threads); results come back to the client, which writes them."""
    distributed = pytest.importorskip("distributed")
    data, src, base, _, wl, _, _ = small_sweep["args"]
    grid = sw.Grid(utilization=(1.0,), bighash_fraction=(0.04,))
    rules = ex.Rules(window=0.5, windows=1, min_wraps=0, steady_windows=1, max_warmup=0.5)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None) as c:
        rows = sw.sweep(data, src, base, grid, wl, rules, tmp_path, executor=c.scheduler_address, progress=False,
                        echo=None)
    assert sorted(r["label"] for r in rows) == ["fdp-off_util-100_bighash-4_notrim",
                                                "fdp-on_util-100_bighash-4_ii_notrim"]
    for r in rows:
        run = json.loads((tmp_path / "points" / r["label"] / "run.json").read_text())
        assert run["worker"] and run["summary"]["measured_windows"] == 1


def test_a_failing_point_is_reported_and_the_others_finish(tmp_path):
    data = {"device": {"kind": "emulated", "emulator": {"preset": "small-test"}},
            "cache": {"flash": {"region_size": "64MiB"}}}        # does not fit the device
    lines: list[str] = []
    rows = sw.sweep(data, "<t>", None, sw.Grid(fdp=(True,), utilization=(1.0,), bighash_fraction=(0.04,)),
                    {"path": "x.csv"}, ex.Rules(), tmp_path, jobs=1, progress=False, echo=lines.append)
    assert rows == [] and any("failed" in line for line in lines)
    assert json.loads((tmp_path / "summary.json").read_text())["failed"]
