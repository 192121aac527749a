"""Plots of write-amplification runs and sweeps (``flashcache waf plot``), PNG and SVG.

Owns reading results (a sweep folder, or run folders) and drawing three figures with
matplotlib: device WAF over time per run, WAF against utilisation (FDP on and off), WAF
against BigHash's share (FDP on and off). Each has labelled axes with units, a legend,
and a caption with the device's geometry and OP. The surprise: it draws only what the
results hold; a sweep without a BigHash series simply has no third figure.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def load_runs(paths: list[Path]) -> list[dict[str, Any]]:
    """Every run.json under the given sweep or run folders (or the files themselves)."""
    runs = []
    for p in paths:
        p = Path(p)
        files = [p] if p.is_file() else sorted(p.glob("run.json")) + sorted(p.glob("points/*/run.json"))
        for f in files:
            runs.append(json.loads(f.read_text()))
    if not runs:
        raise FileNotFoundError(f"no run.json under {', '.join(str(p) for p in paths)}")
    return runs


def caption(runs: list[dict[str, Any]]) -> str:
    d = runs[0]["device"]
    wl = runs[0]["workload"]
    ru = d.get("ru_bytes")
    op = d.get("op")
    geo = (f"{d['capacity_bytes'] / 2**30:.2f} GiB exported, OP {op * 100:.1f} % ((physical-exported)/exported)"
           if op is not None else f"{d['capacity_bytes'] / 2**30:.2f} GiB, OP not reported by the drive")
    units = (f"{d.get('reclaim_units') or '?'} RUs of {ru / 2**20:g} MiB" if ru else "RU size unknown")
    handles = f"{d.get('handles')} handles ({'/'.join(d.get('handle_types') or [])})"
    region = f"BlockCache region {d['region_bytes'] / 2**10:g} KiB" + (
        f" (1:{1 / d['region_to_ru']:g} of an RU)" if d.get("region_to_ru") else "")
    work = wl.get("name") or Path(str(wl.get("path", "trace"))).name
    return (f"{d['kind']} device: {geo}; {units}, {d.get('reclaim_groups')} RG, {handles}; {region}; "
            f"workload {work}, seed {wl.get('seed')}")


def _figure(plt, title: str, xlabel: str, ylabel: str, cap: str, wide: bool = False):
    fig, ax = plt.subplots(figsize=(10.5 if wide else 7.5, 4.6), dpi=100)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    fig.text(0.01, 0.01, cap, fontsize=7, wrap=True, va="bottom")
    fig.subplots_adjust(bottom=0.22, right=0.66 if wide else 0.95)
    return fig, ax


def _save(fig, out: Path, name: str, written: list[Path]) -> None:
    for ext in ("png", "svg"):
        f = out / f"{name}.{ext}"
        fig.savefig(f)
        written.append(f)


def _held(key: str, v: Any) -> str:
    return {"utilization": lambda: f"utilisation {v * 100:g} %", "bighash_fraction": lambda: f"BigHash {v * 100:g} %",
            "handle_type": lambda: f"{v} handles", "trim": lambda: f"region trim {'on' if v else 'off'}"}[key]()


def plot(paths: list[Path], out: Path) -> list[Path]:
    """Draw every figure the runs allow into ``out``; returns the files written."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = load_runs(paths)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cap = caption(runs)
    written: list[Path] = []

    # 1. WAF over time, one line per run
    fig, ax = _figure(plt, "Device WAF over time", "host writes (device writes: host bytes / capacity)",
                      "device WAF per window (media / host bytes)", cap, wide=True)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, r in enumerate(sorted(runs, key=lambda r: r["label"])):
        ws = r["windows"]
        xs = [w["device_writes"] for w in ws if w["waf"] is not None]
        ys = [w["waf"] for w in ws if w["waf"] is not None]
        off = r["point"].get("fdp") is False
        line, = ax.plot(xs, ys, marker=".", color=colors[i % len(colors)], linestyle="--" if off else "-",
                        label=r["label"])
        wu = r.get("warmup") or {}
        if wu.get("device_writes") is not None:        # the window where measuring began
            ax.plot([wu["device_writes"]], [ys[min(len(ys) - 1, wu.get("windows", 1) - 1)]] if ys else [],
                    marker="|", markersize=14, color=line.get_color())
    ax.legend(fontsize=7, title="run (dashed: FDP off; |: end of warm-up)", title_fontsize=7,
              loc="upper left", bbox_to_anchor=(1.01, 1.0))
    _save(fig, out, "waf-over-time", written)
    plt.close(fig)

    def rows() -> list[tuple[dict[str, Any], bool, float]]:
        out = []
        for r in runs:
            if r["summary"].get("waf") is None:
                continue
            row = {"utilization": round(r["device"]["utilization"], 3),
                   "bighash_fraction": r["config"]["cache"]["flash"]["bighash_fraction"],
                   "handle_type": r["point"].get("handle_type") or "II", "trim": bool(r["point"].get("trim"))}
            fdp = r["point"]["fdp"] if r["point"]["fdp"] is not None else bool(r["device"].get("fdp"))
            out.append((row, fdp, r["summary"]["waf"]))
        return out

    def series(x_key: str) -> tuple[dict[str, Any], dict[bool, list[tuple[float, float]]]]:
        """The runs varying ``x_key`` with the other settings fixed: of the groups of
        equal other settings, the one with the most distinct values of ``x_key``."""
        groups: dict[tuple, dict[bool, list[tuple[float, float]]]] = {}
        for row, fdp, waf in rows():
            other = tuple(sorted((k, v) for k, v in row.items() if k != x_key))
            groups.setdefault(other, {}).setdefault(fdp, []).append((row[x_key], waf))
        best, fixed = {}, {}
        for other, by in groups.items():
            n = len({x for v in by.values() for x, _ in v})
            if n >= 2 and n > len({x for v in best.values() for x, _ in v}):
                best, fixed = by, dict(other)
        return fixed, {k: sorted(v) for k, v in best.items()}

    for x_key, name, title, xlabel in (
            ("utilization", "waf-vs-utilization", "Device WAF vs utilisation",
             "utilisation: cache size / device capacity (%)"),
            ("bighash_fraction", "waf-vs-bighash", "Device WAF vs BigHash share",
             "BigHash share of the cache's flash (%)")):
        fixed, s = series(x_key)
        if not s:
            continue
        held = ", ".join(_held(k, v) for k, v in fixed.items())
        fig, ax = _figure(plt, f"{title} ({held})", xlabel, "device WAF (media / host bytes)", cap)
        for fdp in sorted(s, reverse=True):
            xs = [x * 100 for x, _ in s[fdp]]
            ys = [y for _, y in s[fdp]]
            ax.plot(xs, ys, marker="o", label=f"FDP {'on' if fdp else 'off'}")
            for x, y in zip(xs, ys):
                ax.annotate(f"{y:.2f}", (x, y), textcoords="offset points", xytext=(0, 6), ha="center", fontsize=7)
        ax.set_ylim(bottom=0.9)
        ax.legend()
        _save(fig, out, name, written)
        plt.close(fig)
    return written
