"""`flashcache waf run` on the VM's QEMU FDP namespace: the real-device path end to end.

QEMU's FDP model has no GC (every write adds to HBMW and MBMW alike), so this proves only
that the run deallocates the namespace, drives the cache on it through passthrough with a
placement identifier per engine, reads the FDP Statistics log every window and reports
it; the WAF itself is the emulated SSD's business. The namespace is deallocated again
afterwards, for the tests that follow.
"""
import json
import subprocess
import sys

import pytest

from flashcache.devices.nvme_passthru import open_nvme_device

from .conftest import NS, fdp_only, nofdp_only

pytestmark = pytest.mark.vm


def _config(tmp_path, fmt: bool = True):
    p = tmp_path / "nvme.toml"
    p.write_text(f'[device]\nkind = "nvme"\npath = "{NS}"\nformat = {"true" if fmt else "false"}\n'
                 '[cache]\ndram_size = "1MiB"\n[cache.flash]\nbighash_fraction = 0.04\nregion_size = "256KiB"\n')
    return p


def _waf_run(*args):
    return subprocess.run([sys.executable, "-m", "flashcache.cli", "waf", "run", "--no-progress", *args],
                          capture_output=True, text=True, timeout=300)


@pytest.fixture
def clean_afterwards():
    yield
    d = open_nvme_device(NS)
    try:
        d.trim(0, d.size)
    finally:
        d.close()


@fdp_only()
def test_waf_run_reads_and_reports_the_fdp_statistics_log(tmp_path, clean_afterwards):
    out = tmp_path / "out"
    # QEMU erases nothing and never becomes "steady": one window of warm-up, then windows
    # (each at least one batch of 4096 operations: seconds under the VM's TCG) for 30 s
    r = _waf_run("-c", str(_config(tmp_path)), "-u", "50", "--fdp", "on", "--max-seconds", "30",
                 "--window", "0.002", "--max-warmup", "0.002", "--windows", "1000", "-o", str(out))
    assert r.returncode == 0, r.stderr + r.stdout
    assert "WAF from  FDP Statistics log (LID 0x22)" in r.stdout and "result    WAF" in r.stdout, r.stdout
    run = json.loads((out / "run.json").read_text())
    d = run["device"]
    assert d["kind"] == "nvme" and d["ru_bytes"] and d["handles"] >= 2 and d["op"] is None
    assert d["utilization"] == pytest.approx(0.5, abs=0.01)
    assert run["summary"]["stopped"] == "max_seconds = 30 reached"
    ws = run["windows"]
    assert len(ws) >= 3 and all(w["host_bytes"] > 0 for w in ws), r.stdout
    assert run["warmup"]["steady"] is False and run["summary"]["measured_windows"] >= 1
    # no GC in QEMU: media bytes are host bytes (plus a little at reclaim unit switches)
    assert all(1.0 <= w["waf"] < 1.5 for w in ws), ws
    assert ws[-1]["bighash_bytes"] > 0 and ws[-1]["blockcache_bytes"] > 0
    assert run["config"]["device"]["placement"] is True


@fdp_only()
def test_waf_run_on_a_drive_needs_format_true(tmp_path):
    r = _waf_run("-c", str(_config(tmp_path, fmt=False)), "--max-seconds", "1")
    assert r.returncode == 2 and "set format = true in [device]" in r.stderr


@nofdp_only()
def test_waf_run_says_why_a_drive_without_fdp_cannot_be_measured(tmp_path):
    r = _waf_run("-c", str(_config(tmp_path)), "--max-seconds", "1")
    assert r.returncode == 2, r.stderr
    assert "cannot report them: the device has no FDP" in r.stderr
