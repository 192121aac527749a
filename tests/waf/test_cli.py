"""`flashcache waf run|sweep|plot` (flashcache/cli_waf.py): arguments, output and exit codes."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from flashcache.cli import main
from flashcache.cli_waf import _share

ROOT = Path(__file__).resolve().parent.parent.parent
SMALL = str(ROOT / "config" / "waf-small.toml")


@pytest.mark.parametrize("text,share", [("0.5", 0.5), ("50", 0.5), ("50%", 0.5), ("100%", 1.0), ("1", 1.0)])
def test_shares_take_fractions_or_percents(text, share):
    assert _share(text) == share


@pytest.mark.parametrize("text", ["0", "-5", "150%", "half"])
def test_bad_shares_are_refused(text):
    with pytest.raises(argparse.ArgumentTypeError):
        _share(text)


def test_waf_run_prints_its_setup_windows_and_result(tmp_path, capsys):
    rc = main(["waf", "run", "-c", SMALL, "--fdp", "off", "-u", "75%", "--no-progress", "--window", "0.5",
               "--windows", "1", "--max-warmup", "0.5", "-o", str(tmp_path), "--seed", "9"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert out.startswith("device    0.06 GiB exported, OP 12.5 % (asked 12 %), RU 0.5 MiB x 144 in 1 RG, "
                          "handles: FDP off (conventional SSD)")
    assert "cache     48 MiB of 64 MiB (utilisation 75%), BigHash 4%, region 0.015625 MiB vs RU 0.5 MiB (1:32)" in out
    assert "WAF from  emulator FTL counters" in out and "warm-up   " in out and "NOT steady" in out
    run = json.loads((tmp_path / "run.json").read_text())
    assert run["seed"] == 9 and run["point"]["fdp"] is False and run["device"]["utilization"] == 0.75


def test_waf_sweep_lists_its_points(capsys):
    assert main(["waf", "sweep", "--utilization", "50,100", "--bighash", "4", "--handle-type", "II,PI", "--list"]) == 0
    assert capsys.readouterr().out.split() == [
        "fdp-on_util-50_bighash-4_ii_notrim", "fdp-on_util-100_bighash-4_ii_notrim",
        "fdp-on_util-100_bighash-4_pi_notrim", "fdp-off_util-50_bighash-4_notrim",
        "fdp-off_util-100_bighash-4_notrim"]


def test_waf_plot_without_results_says_so(tmp_path, capsys):
    assert main(["waf", "plot", str(tmp_path)]) == 2
    assert "no run.json under" in capsys.readouterr().err


def test_a_bad_workload_is_a_config_error(capsys):
    assert main(["waf", "run", "-c", SMALL, "-w", "nosuch", "--no-progress"]) == 2
    assert "no such workload file or preset; presets: kvcache, twitter-like, write-only" in capsys.readouterr().err
