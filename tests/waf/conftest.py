"""One CI-sized sweep for the waf tests: config/waf-small.toml (64 MiB, 144 RUs of 512 KiB,
12 % OP, regions 1/32 of an RU), the kvcache workload, FDP on and off at 50 and 100 %
utilisation and at BigHash 4 and 64 %: the acceptance of docs/waf-model.md in small."""
from __future__ import annotations

from pathlib import Path

import pytest

from flashcache import workload
from flashcache.waf import experiment as ex
from flashcache.waf import sweep as sw

ROOT = Path(__file__).resolve().parent.parent.parent
SMALL = ROOT / "config" / "waf-small.toml"
GRID = sw.Grid(utilization=(0.5, 1.0), bighash_fraction=(0.04, 0.64))


@pytest.fixture(scope="session")
def small_sweep(tmp_path_factory):
    out = tmp_path_factory.mktemp("waf") / "sweep"
    data, src, base = ex.config_data(SMALL)
    lines: list[str] = []
    rows = sw.sweep(data, src, base, GRID, workload.load("kvcache"), ex.Rules(), out, jobs=2, progress=False,
                    echo=lines.append)
    return {"rows": {r["label"]: r for r in rows}, "out": out, "lines": lines,
            "args": (data, src, base, GRID, workload.load("kvcache"), ex.Rules(), out)}
