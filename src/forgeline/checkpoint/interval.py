"""Checkpoint intervals from failure statistics (pure math: no torch, no Ray)."""

from __future__ import annotations

import math
from typing import Any


def young_daly_interval_s(save_cost_s: float, mtbf_s: float) -> float:
    """Young/Daly optimal checkpoint interval ``sqrt(2 · C · MTBF)`` (first-order)."""
    if save_cost_s <= 0 or mtbf_s <= 0 or not math.isfinite(mtbf_s):
        return math.inf
    return math.sqrt(2.0 * save_cost_s * mtbf_s)


def planning_mtbf_s(stats: dict[str, Any]) -> float:
    """The MTBF a checkpoint interval plans for, from ``failure_stats.json``: that of the
    failures no proactive save covered (``unpredicted_mtbf_s``; a file written before the
    split: all failures' ``mtbf_s``); inf when there is none."""
    value = stats["unpredicted_mtbf_s"] if "unpredicted_mtbf_s" in stats else stats.get("mtbf_s")
    return float(value) if value else math.inf
