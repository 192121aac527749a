"""flashcache/waf/plot.py: figures from the CI-sized sweep, as PNG and SVG, with labelled
axes, a legend and the device's geometry in the caption."""
from __future__ import annotations

from flashcache.waf.plot import caption, load_runs, plot


def test_plots_of_a_sweep(small_sweep, tmp_path):
    files = plot([small_sweep["out"]], tmp_path)
    names = sorted(f.name for f in files)
    assert names == ["waf-over-time.png", "waf-over-time.svg", "waf-vs-bighash.png", "waf-vs-bighash.svg",
                     "waf-vs-utilization.png", "waf-vs-utilization.svg"]
    for f in files:
        assert f.stat().st_size > 5000
    svg = (tmp_path / "waf-vs-utilization.svg").read_text()
    for text in ("utilisation: cache size / device capacity (%)", "device WAF (media / host bytes)",
                 "FDP on", "FDP off", "144 RUs of 0.5 MiB", "OP 12.5 %"):
        assert text in svg, text


def test_the_caption_states_geometry_op_and_region_size(small_sweep):
    cap = caption(load_runs([small_sweep["out"]]))
    assert cap.startswith("emulated device: 0.06 GiB exported, OP 12.5 % ((physical-exported)/exported); "
                          "144 RUs of 0.5 MiB, 1 RG, 8 handles (II)")
    assert "BlockCache region 16 KiB (1:32 of an RU)" in cap and "workload kvcache, seed 1" in cap
