"""Analytical write amplification of uniform random overwrites: the anchors the emulator
is validated against (docs/waf-model.md).

Owns formulas only. ``alpha`` is T / U, physical over exported pages (OP = alpha - 1).
The surprise: the spare a simulator really has is less than T - U, because the RUs held
open as write frontiers and the free-RU reserve hold no valid data; ``effective_alpha``
takes them out before the formulas are applied.
"""
from __future__ import annotations

import math


def lambert_w0(x: float) -> float:
    """Principal branch of Lambert W for -1/e <= x < 0 (and x >= 0), by Halley's method."""
    if x < -1 / math.e - 1e-15:
        raise ValueError(f"Lambert W is not real at {x}")
    if x == 0:
        return 0.0
    # start on the principal branch (above -1): a series near the branch point, else log
    w = -1 + math.sqrt(2 * (1 + math.e * x)) if x < -0.25 else math.log1p(x)
    for _ in range(100):
        ew = math.exp(w)
        f = w * ew - x
        step = f / (ew * (w + 1) - (w + 2) * f / (2 * w + 2))
        w -= step
        if abs(step) < 1e-15 * (1 + abs(w)):
            break
    return w


def waf_fifo(alpha: float) -> float:
    """FIFO (and greedy with very large RUs): Desnoyers 2012 eq. 4."""
    if alpha <= 1:
        raise ValueError(f"alpha = T/U = {alpha}: needs spare (alpha > 1)")
    return alpha / (alpha + lambert_w0(-alpha * math.exp(-alpha)))


def waf_greedy(alpha: float, ru_pages: int) -> float:
    """Greedy with ``ru_pages`` pages per RU: Desnoyers 2012 eq. 12."""
    k = 1 + 1 / (2 * ru_pages)
    return waf_fifo(k * alpha) / k


def effective_alpha(physical_pages: int, exported_pages: int, ru_pages: int,
                    idle_rus: float) -> float:
    """alpha after taking out ``idle_rus`` reclaim units that hold no data on average
    (the free-RU reserve, and the unwritten part of open frontiers)."""
    return (physical_pages - idle_rus * ru_pages) / exported_pages


def waf_segregated(soc_share_of_writes: float, soc_alpha: float, ru_pages: int | None = None) -> float:
    """Allison et al. 2025, Theorem 1: with FDP, only the small-object cache is ever
    relocated, and behaves like uniform random writes at ``soc_alpha`` = (SOC + all
    device spare) / SOC live data; the log-structured large-object cache adds WAF 1.
    Blended by the share of host writes each engine makes. With ``ru_pages`` the SOC's
    part uses the greedy formula for that RU size, else FIFO / large-RU greedy."""
    soc = waf_greedy(soc_alpha, ru_pages) if ru_pages else waf_fifo(soc_alpha)
    return soc_share_of_writes * soc + (1 - soc_share_of_writes)
