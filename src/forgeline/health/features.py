"""Features of a window of samples: per-signal change-point and threshold rules, scale-free.

Every feature is 0 on a healthy steady worker and grows with the evidence of trouble, so a
small logistic model can weigh them (``forgeline.health.hazard``). Times are in steps, so the
features do not depend on the machine's speed. The window's first half is the baseline.

| feature | rule |
|---|---|
| ``step_drift`` | log of recent (last 4) over baseline (or fastest 8-step) median step, ≥ 0 |
| ``step_cusum`` | one-sided CUSUM (Page; slack 0.5, robust z clipped to ±3) of log step time, / 8 |
| ``data_wait`` | rise of the data-wait share of the step time over the baseline |
| ``loss_spike`` | robust z-score (median/MAD) of the newest loss, / 10 |
| ``grad_spike`` | log10 of the newest gradient norm over the baseline median |
| ``nonfinite`` | 1 when the newest loss or gradient norm is NaN/Inf |
| ``mem_used`` | memory used / limit |
| ``mem_exhaustion`` | horizon / steps to the memory limit at the recent slope (median rise) |
| ``swap_growth`` | swap grown over the window, / memory limit × 10 |
| ``disk_used`` | 1 − free / total disk |
| ``disk_exhaustion`` | the same for the disk |
| ``thread_growth`` | relative growth of threads + child processes over the window |
| ``gpu_hot`` | (GPU temperature − 80 °C) / 10, ≥ 0 (NVML only) |
| ``gpu_errors`` | 1 when the GPU's uncorrected ECC count grew (NVML only) |

All are clipped to [0, 3]; a missing source gives 0.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from forgeline.health.signals import Sample

FEATURES: tuple[str, ...] = (
    "step_drift", "step_cusum", "data_wait", "loss_spike", "grad_spike", "nonfinite",
    "mem_used", "mem_exhaustion", "swap_growth", "disk_used", "disk_exhaustion",
    "thread_growth", "gpu_hot", "gpu_errors",
)
FORECAST_FEATURES: tuple[str, ...] = (  # what a memory/disk exhaustion forecast comes from
    "mem_used", "mem_exhaustion", "swap_growth", "disk_used", "disk_exhaustion",
)
RECENT = 4
MIN_DIFFS = 3  # growth differences a trend needs: one jump among them is no trend
CLIP = 3.0


def _clip(value: float) -> float:
    return 0.0 if not math.isfinite(value) else float(min(CLIP, max(0.0, value)))


def _median(values: np.ndarray) -> float:
    """``np.median`` of a short array, without its overhead (~10 µs a call: the features
    take a dozen per evaluation): the middle value, or the mean of the two; NaN when empty
    or when any value is NaN."""
    ordered = sorted(values.tolist())
    n = len(ordered)
    if n == 0 or any(math.isnan(v) for v in ordered):
        return math.nan
    return ordered[n // 2] if n % 2 else (ordered[n // 2 - 1] + ordered[n // 2]) / 2


def _col(samples: Sequence[Sample], name: str) -> np.ndarray:
    values = (getattr(s, name) for s in samples)
    return np.array([math.nan if v is None else v for v in values], dtype=np.float64)


def _steps_to_limit(used: np.ndarray, steps: np.ndarray, limit: float) -> float:
    """Steps from the newest reading until ``used`` reaches ``limit`` at the growth slope of
    the recent half (inf: no growth; 0: at the limit). The slope is the median of ~4-step
    differences per step over at least ``MIN_DIFFS`` of them, so that one jump (a buffer
    allocated once) is no trend. ``used``: the fresh readings only (taken at ``steps``); when
    host reads are sparser than every step, the differences span the readings nearest 4 steps
    apart."""
    keep = np.isfinite(used)
    used, steps = used[keep], steps[keep]
    if len(used) < 2 or not math.isfinite(limit) or limit <= 0:
        return math.inf
    if limit - used[-1] <= 0:
        return 0.0
    gap = max(1.0, float(steps[-1] - steps[0]) / (len(steps) - 1))
    k = max(1, round(RECENT / gap))
    span = max(RECENT * 2, int(steps[-1] - steps[0] + 1) // 2)
    recent = max(k + MIN_DIFFS, int(np.sum(steps > steps[-1] - span)))
    used, steps = used[-recent:], steps[-recent:]
    if len(used) < k + MIN_DIFFS:
        return math.inf
    slope = _median((used[k:] - used[:-k]) / (steps[k:] - steps[:-k]))
    return float((limit - used[-1]) / slope) if slope > 0 else math.inf


def _exhaustion(eta_steps: float, horizon: int) -> float:
    """``horizon / steps-to-limit``, clipped (0 when nothing grows)."""
    return CLIP if eta_steps <= 0 else _clip(horizon / eta_steps)


def _robust_z(values: np.ndarray, newest: float) -> float:
    values = values[np.isfinite(values)]
    if len(values) < 4 or not math.isfinite(newest):
        return 0.0
    med = _median(values)
    mad = _median(np.abs(values - med)) * 1.4826
    return (newest - med) / max(mad, 1e-3 * abs(med), 1e-12)


def extract(samples: Sequence[Sample], horizon_steps: int) -> dict[str, float]:
    """The feature vector of the newest sample given the window before it."""
    return extract_forecast(samples, horizon_steps)[0]


def extract_forecast(samples: Sequence[Sample], horizon_steps: int
                     ) -> tuple[dict[str, float], float]:
    """``(features, eta_steps)``: the feature vector of the newest sample, and the steps from
    it until memory or disk runs out at their recent growth (the nearer; inf when neither
    grows), projected from the last host reading to the newest step."""
    out = dict.fromkeys(FEATURES, 0.0)
    samples = list(samples)
    if not samples:
        return out, math.inf
    last = samples[-1]
    out["nonfinite"] = float(any(v is not None and not math.isfinite(v)
                                 for v in (last.loss, last.grad_norm)))
    base = samples[: max(RECENT, len(samples) // 2)]
    step = _col(samples, "step_s")
    if len(samples) >= 2 * RECENT and np.all(step > 0):
        logs = np.log(step)
        mu = _median(logs[: len(base)])
        sigma = max(1.4826 * _median(np.abs(logs[: len(base)] - mu)), 0.05)
        # against the fastest sustained pace in the window: a slow-down that outlasts half
        # the window would otherwise become its own baseline and fade from the feature
        fastest = min((_median(logs[i:i + 2 * RECENT])
                       for i in range(0, len(logs) - 3 * RECENT + 1, RECENT)), default=mu)
        out["step_drift"] = _clip(_median(logs[-RECENT:]) - min(mu, fastest))
        cusum = 0.0  # each step's z clipped to ±3: one stall is not a change point
        for z in np.clip((logs[len(base):] - mu) / sigma, -3.0, 3.0).tolist():
            cusum = max(0.0, cusum + z - 0.5)
        out["step_cusum"] = _clip(cusum / 8.0)
        wait = _col(samples, "data_wait_s") / step
        out["data_wait"] = _clip(float(np.mean(wait[-RECENT:]) - np.mean(wait[: len(base)])))
    loss = _col(samples, "loss")
    out["loss_spike"] = _clip(_robust_z(loss[:-1], float(loss[-1])) / 10.0)
    grad = _col(samples, "grad_norm")
    base_grad = grad[: len(base)]
    base_grad = base_grad[np.isfinite(base_grad) & (base_grad > 0)]
    recent_grad = grad[-RECENT:][np.isfinite(grad[-RECENT:])]
    if len(base_grad) and len(recent_grad):
        newest = float(np.max(recent_grad))
        out["grad_spike"] = _clip(math.log10(newest / _median(base_grad)))
    fresh = np.array([s.fresh for s in samples])
    steps = np.array([s.step for s in samples], dtype=np.float64)[fresh]
    eta = math.inf
    limit = last.mem_limit_bytes
    if math.isfinite(last.mem_used_bytes) and math.isfinite(limit) and limit > 0:
        out["mem_used"] = _clip(last.mem_used_bytes / limit)
        mem_eta = _steps_to_limit(_col(samples, "mem_used_bytes")[fresh], steps, limit)
        out["mem_exhaustion"] = _exhaustion(mem_eta, horizon_steps)
        eta = min(eta, mem_eta)
        swap = _col(samples, "swap_used_bytes")
        if np.isfinite(swap).sum() >= 2:
            grown = float(swap[np.isfinite(swap)][-1] - swap[np.isfinite(swap)][0])
            out["swap_growth"] = _clip(10.0 * grown / limit)
    total = last.disk_total_bytes
    if math.isfinite(last.disk_free_bytes) and math.isfinite(total) and total > 0:
        out["disk_used"] = _clip(1.0 - last.disk_free_bytes / total)
        used = total - _col(samples, "disk_free_bytes")[fresh]
        disk_eta = _steps_to_limit(used, steps, total)
        out["disk_exhaustion"] = _exhaustion(disk_eta, horizon_steps)
        eta = min(eta, disk_eta)
    threads = _col(samples, "threads")
    if np.isfinite(threads).sum() >= 2 and np.isfinite(threads[0]) and threads[0] > 0:
        out["thread_growth"] = _clip(float(threads[-1] - threads[0]) / threads[0])
    if "temperature_c" in last.gpu:
        out["gpu_hot"] = _clip((last.gpu["temperature_c"] - 80.0) / 10.0)
    first_ecc = next((s.gpu["ecc_errors"] for s in samples if "ecc_errors" in s.gpu), None)
    if first_ecc is not None and last.gpu.get("ecc_errors", first_ecc) > first_ecc:
        out["gpu_errors"] = 1.0
    if math.isfinite(eta) and len(steps):
        eta = max(0.0, eta - (last.step - float(steps[-1])))
    return out, eta
