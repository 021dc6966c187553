"""Parse ``metrics.jsonl`` into the training and validation loss curves (and the job hazard,
when worker health was on)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

from forgeline import storage

_TRAIN_STAGE = "train"
_VALIDATION = "validation"


@dataclass
class LossCurve:
    """Loss points by step; ``note`` says why the curve is empty, when it is."""

    train: list[tuple[float, float]] = field(default_factory=list)
    validation: list[tuple[float, float]] = field(default_factory=list)
    hazard: list[tuple[float, float]] = field(default_factory=list)
    """The job hazard by step (``health_job_hazard``); empty when worker health was off."""
    bad_lines: int = 0
    note: str | None = None

    @property
    def empty(self) -> bool:
        return not self.train and not self.validation


def _number(value: Any) -> float | None:
    """A finite float, or None (bools, strings, NaN and inf are not plot points)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def parse_metrics(lines: list[str]) -> LossCurve:
    """Pick train-loss and validation-loss points out of metrics lines; skip the rest."""
    curve = LossCurve()
    hazards: dict[float, float] = {}  # a save's report repeats its step's hazard
    for line in lines:
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            curve.bad_lines += 1
            continue
        if not isinstance(record, dict) or record.get("stage", _TRAIN_STAGE) != _TRAIN_STAGE:
            continue
        step = _number(record.get("step"))
        if step is None:
            continue
        if (hazard := _number(record.get("health_job_hazard"))) is not None:
            hazards[step] = hazard
        if record.get("split") == _VALIDATION:
            loss = _number(record.get("val_loss", record.get("loss")))
            if loss is not None:
                curve.validation.append((step, loss))
        elif record.get("split") in (None, "train"):
            loss = _number(record.get("loss"))
            if loss is not None:
                curve.train.append((step, loss))
    curve.train.sort()
    curve.validation.sort()
    curve.hazard = sorted(hazards.items())
    return curve


def read_records(metrics_url: str, stage: str = _TRAIN_STAGE) -> list[dict[str, Any]]:
    """The readable ``metrics.jsonl`` records of ``stage`` (none if the file is missing)."""
    fs, path = storage.filesystem(metrics_url, "metrics_url")
    if not fs.exists(path):
        return []
    records = []
    for line in fs.cat_file(path).decode("utf-8", errors="replace").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and record.get("stage", _TRAIN_STAGE) == stage:
            records.append(record)
    return records


def load_loss_curve(metrics_url: str) -> LossCurve:
    """Read ``metrics_url``; a missing or empty file gives an empty curve with a note."""
    fs, path = storage.filesystem(metrics_url, "metrics_url")
    if not fs.exists(path):
        return LossCurve(note="No metrics.jsonl was recorded for this run, so there is no plot.")
    with fs.open(path, "rb") as f:
        text = f.read().decode("utf-8", errors="replace")
    curve = parse_metrics(text.splitlines())
    if curve.empty:
        curve.note = "metrics.jsonl holds no training-loss points, so there is no plot."
    if curve.bad_lines:
        skipped = f"{curve.bad_lines} unreadable line(s) in metrics.jsonl were skipped."
        curve.note = f"{curve.note} {skipped}" if curve.note else skipped
    return curve
