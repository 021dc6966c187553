"""Synthetic labelled traces: the training data of forgeline's default hazard model.

Each trace is a worker's sample sequence, healthy or ending in one failure of a kind that
real fleets report, with its precursor over a random lead time:

| kind | precursor over the lead time (steps) |
|---|---|
| ``memory_leak`` | RSS grows linearly to the memory limit (lead 10–80) |
| ``slowdown`` | step time ramps to 2–4 × (lead 8–60): throttling, a failing link or disk |
| ``nan_grad`` | gradient norm grows 10–1000 × (lead 3–15), then NaN/Inf |
| ``disk_fill`` | free disk space falls linearly to zero (lead 10–80) |
| ``sigkill`` | none (lead 0): an unannounced kill, power or network loss |
| ``healthy`` | none; hard negatives: stalls, a neighbour's load (1.2–2 × for 10–60 steps), |
| | memory that plateaus, loss spikes, checkpoint writes, new threads |

Every trace has heavy-tailed step-time noise (log-normal, σ 0.02–0.3, 2 % stalls of 2–6 ×).
A step is labelled 1 when the failure comes within ``horizon_steps``. Times are in steps, so
the traces do not depend on a machine. The fit is deterministic (fixed seed).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from forgeline.health.features import FEATURES, extract
from forgeline.health.signals import Sample

KINDS = ("healthy", "memory_leak", "slowdown", "nan_grad", "disk_fill", "sigkill")
GIB = float(2**30)


def synthetic_trace(kind: str, rng: np.random.Generator, steps: int = 120
                    ) -> tuple[list[Sample], int | None]:
    """``(samples, failure_step)``; ``failure_step`` is None for a healthy trace."""
    fail = None if kind == "healthy" else int(rng.integers(steps // 2, steps))
    lead = {"memory_leak": rng.integers(10, 81), "slowdown": rng.integers(8, 61),
            "nan_grad": rng.integers(3, 16), "disk_fill": rng.integers(10, 81)}.get(kind, 0)
    start = (fail - int(lead)) if fail is not None else steps
    sigma = rng.uniform(0.02, 0.3)
    step_s = np.exp(rng.normal(0.0, sigma, steps))
    stalls = rng.random(steps) < 0.02
    step_s[stalls] *= rng.uniform(2.0, 6.0, stalls.sum())
    wait = step_s * rng.uniform(0.0, 0.2) * np.exp(rng.normal(0, 0.3, steps))
    loss = 4.0 * np.exp(-np.arange(steps) / rng.uniform(200, 2000)) + rng.normal(0, 0.05, steps)
    grad = np.exp(rng.normal(0.0, rng.uniform(0.05, 0.4), steps))
    limit = rng.uniform(4, 64) * GIB
    mem = limit * rng.uniform(0.2, 0.7) + rng.normal(0, 0.002 * limit, steps)
    disk_total = rng.uniform(50, 2000) * GIB
    disk_used = disk_total * rng.uniform(0.1, 0.8) + np.zeros(steps)
    threads = np.full(steps, float(rng.integers(8, 200)))
    if kind == "healthy":  # hard negatives: things that look like trouble and are not
        at = int(rng.integers(0, steps))
        choice = rng.integers(0, 6)
        if choice == 0:
            step_s[at:at + 8] *= rng.uniform(1.5, 3.0)
        elif choice == 5:  # a neighbour's load: slower for a while, then back
            step_s[at:at + int(rng.integers(10, 60))] *= rng.uniform(1.2, 2.0)
        elif choice == 1:
            mem[at:] += np.minimum(np.arange(steps - at) * 0.005, 0.15) * limit
        elif choice == 2:
            loss[at] += rng.uniform(0.5, 2.0)
            grad[at] *= rng.uniform(3, 20)
        elif choice == 3:
            every = int(rng.integers(10, 50))
            disk_used += (np.arange(steps) // every) * disk_total * 0.002
        else:
            threads[at:] += rng.integers(1, 8)
    if fail is not None and kind != "sigkill":
        ramp = np.clip((np.arange(steps) - start) / max(1, fail - start), 0.0, 1.0)
        if kind == "memory_leak":
            mem += ramp * (limit * 0.999 - mem)
        elif kind == "slowdown":
            step_s *= 1.0 + ramp * rng.uniform(1.0, 3.0)
        elif kind == "nan_grad":
            grad *= 10.0 ** (ramp * rng.uniform(1.0, 3.0))
            grad[fail:] = np.nan
            loss[fail:] = np.nan
        elif kind == "disk_fill":
            disk_used += ramp * (disk_total - disk_used)
    end = steps if fail is None else fail + 1
    samples = [
        Sample(step=i, step_s=float(step_s[i]), data_wait_s=float(wait[i]),
               loss=float(loss[i]), grad_norm=float(grad[i]),
               mem_used_bytes=float(mem[i]), mem_limit_bytes=limit,
               disk_free_bytes=float(disk_total - disk_used[i]), disk_total_bytes=disk_total,
               threads=float(threads[i]))
        for i in range(end)
    ]
    return samples, fail


def labelled_windows(samples: list[Sample], fail: int | None, window: int,
                     horizon: int) -> Iterator[tuple[dict[str, float], int]]:
    """``(features, label)`` at every step of a trace (label 1: failure within horizon)."""
    for i in range(len(samples)):
        label = int(fail is not None and 0 <= fail - samples[i].step <= horizon)
        yield extract(samples[max(0, i + 1 - window): i + 1], horizon), label


def training_set(window: int = 32, horizon: int = 20, traces_per_kind: int = 8,
                 seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(X, y)`` from ``traces_per_kind`` synthetic traces of every kind."""
    rng = np.random.default_rng(seed)
    rows, labels = [], []
    for kind in KINDS:
        count = traces_per_kind * (3 if kind == "healthy" else 1)
        for _ in range(count):
            samples, fail = synthetic_trace(kind, rng)
            for features, label in labelled_windows(samples, fail, window, horizon):
                rows.append([features[name] for name in FEATURES])
                labels.append(label)
    return np.array(rows, dtype=np.float64), np.array(labels, dtype=np.float64)
