"""The acceptance of docs/waf-model.md on the experiment's own device (config/waf.toml: 1
GiB, 144 RUs of 8 MiB, 12 % OP, 8 II handles, 1 RG), kvcache with BigHash at 4 %: full
runs, minutes each, so marked slow (make test-slow). tests/waf/test_sweep.py checks the
same in small in the default run."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest

from flashcache import workload
from flashcache.waf import experiment as ex
from flashcache.waf import sweep as sw

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def full_sweep(tmp_path_factory):
    out = tmp_path_factory.mktemp("waf-full")
    data, src, base = ex.config_data(None)
    grid = sw.Grid(utilization=(0.5, 1.0), bighash_fraction=(0.04, 0.64))
    rows = sw.sweep(data, src, base, grid, workload.load("kvcache"), ex.Rules(), out, jobs=2, progress=False,
                    echo=None)
    return {r["label"]: r for r in rows}


def test_fdp_keeps_waf_near_one_and_without_it_waf_climbs_with_utilisation(full_sweep):
    r = full_sweep
    on50, off50 = r["fdp-on_util-50_bighash-4_ii_notrim"], r["fdp-off_util-50_bighash-4_notrim"]
    on100, off100 = r["fdp-on_util-100_bighash-4_ii_notrim"], r["fdp-off_util-100_bighash-4_notrim"]
    assert on50["waf"] <= 1.05 and off50["waf"] > on50["waf"]
    assert on100["waf"] <= 1.10 and off100["waf"] >= 2.5
    assert all(x["steady"] for x in (on50, off50, on100, off100))


def test_a_large_bighash_erodes_fdps_benefit(full_sweep):
    r = full_sweep
    on4, on64 = r["fdp-on_util-100_bighash-4_ii_notrim"], r["fdp-on_util-100_bighash-64_ii_notrim"]
    assert on64["waf"] > on4["waf"] + 0.5


def test_regions_as_large_as_rus_separate_the_engines_by_accident(tmp_path):
    """Without FDP, CacheLib's default 16 MiB regions in 8 MiB RUs: whole RUs fall inside a
    region, die with it, and WAF stays far below what 256 KiB regions give on the same
    drive (4.35 and 2.15 when measured)."""
    data, src, base = ex.config_data(None)
    big = copy.deepcopy(data)
    big["cache"]["flash"]["region_size"] = "16MiB"
    rules = ex.Rules(windows=3)
    wl = workload.load("write-only")
    small = ex.run(data, src, base, ex.Point(fdp=False), wl, rules, Path(tmp_path) / "256k", progress=False,
                   echo=None).summary["waf"]
    large = ex.run(big, src, base, ex.Point(fdp=False), wl, rules, Path(tmp_path) / "16m", progress=False,
                   echo=None).summary["waf"]
    assert large < 0.6 * small, (large, small)
