"""Pipeline-parallel schedule arithmetic: bubble and in-flight micro-batches (1F1B and
interleaved, Narayanan et al. SC'21 §2.2; Korthikanti et al. §4.2.3)."""

from __future__ import annotations

from typing import Any

import numpy as np


def bubble_fraction(p: Any, m: Any, v: Any = 1) -> Any:
    """Idle time over ideal time: ``(p - 1) / (v m)`` for p stages, m micro-batches,
    v model chunks per device (v = 1 is plain 1F1B)."""
    return (p - 1) / (v * m)


def inflight_microbatches(p: Any, m: Any, v: Any = 1) -> Any:
    """Micro-batches whose activations the first stage holds at its peak, in units of a
    whole stage (L/p layers).

    1F1B: ``min(p, m)``. Interleaved: Megatron's warm-up runs ``2(p-1) + (v-1)p`` chunk
    forwards then one more before the first backward; each chunk is L/(pv) layers, so the
    peak is ``(vp + p - 1)/v`` stages = ``p (1 + (p-1)/(pv))`` (Korthikanti's factor).
    """
    p, m, v = np.asarray(p), np.asarray(m), np.asarray(v)
    chunks = np.minimum(m * v, 2 * (p - 1) + (v - 1) * p + 1)
    interleaved = chunks / v
    return np.where(v > 1, interleaved, np.minimum(p, m))
