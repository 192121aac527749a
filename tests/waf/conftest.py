"""One CI-sized sweep for the waf tests: config/waf-small.toml (64 MiB, 144 RUs of 512 KiB,
12 % OP, regions 1/32 of an RU), the kvcache workload, FDP on and off at 50 and 100 %
utilisation, and FDP on at BigHash 64 %: the acceptance of docs/waf-model.md in small.
To take seconds, not minutes, warm-up asks one BlockCache wrap instead of two and
compares blocks of three half-device-write windows (two swing by a few per cent with
FDP off at 100 %: noise, not warm-up); the full rules run in the slow suite."""
from __future__ import annotations

from pathlib import Path

import pytest

from flashcache import workload
from flashcache.waf import experiment as ex
from flashcache.waf import sweep as sw

ROOT = Path(__file__).resolve().parent.parent.parent
SMALL = ROOT / "config" / "waf-small.toml"
POINTS = [ex.Point(fdp=f, utilization=u, bighash_fraction=0.04, handle_type="II" if f else None, trim=False)
          for f in (True, False) for u in (0.5, 1.0)]
POINTS.append(ex.Point(fdp=True, utilization=1.0, bighash_fraction=0.64, handle_type="II", trim=False))
RULES = ex.Rules(window=0.5, windows=2, min_wraps=1, steady_windows=3, max_warmup=12)


@pytest.fixture(scope="session")
def small_sweep(tmp_path_factory):
    out = tmp_path_factory.mktemp("waf") / "sweep"
    data, src, base = ex.config_data(SMALL)
    lines: list[str] = []
    rows = sw.sweep(data, src, base, POINTS, workload.load("kvcache"), RULES, out, jobs=2, progress=False,
                    echo=lines.append)
    return {"rows": {r["label"]: r for r in rows}, "out": out, "lines": lines,
            "args": (data, src, base, POINTS, workload.load("kvcache"), RULES, out)}
