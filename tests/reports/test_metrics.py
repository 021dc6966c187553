"""Parsing metrics.jsonl into the loss curves the report plots."""

from __future__ import annotations

import json

from forgeline.reports.metrics import parse_metrics
from forgeline.reports.plots import loss_plot_png


def test_train_and_validation_points_are_separated() -> None:
    lines = [
        json.dumps({"stage": "train", "step": 2, "loss": 2.0}),
        json.dumps({"stage": "train", "step": 1, "loss": 3.0, "split": "train"}),
        json.dumps({"stage": "train", "split": "validation", "step": 2, "val_loss": 2.5}),
        json.dumps({"stage": "checkpoint", "step": 2, "loss": 9.0}),
        json.dumps({"stage": "train", "step": 3, "loss": float("nan")}),
        json.dumps({"stage": "train", "loss": 1.0}),
        json.dumps([1, 2]),
        "{broken",
        "",
    ]
    curve = parse_metrics(lines)
    assert curve.train == [(1.0, 3.0), (2.0, 2.0)]
    assert curve.validation == [(2.0, 2.5)]
    assert curve.bad_lines == 1
    assert not curve.empty


def test_plot_with_only_validation_points_and_log_scale() -> None:
    curve = parse_metrics(
        [json.dumps({"stage": "train", "step": s, "loss": 100.0 / (s + 1)}) for s in range(50)]
        + [json.dumps({"stage": "train", "split": "validation", "step": 0, "val_loss": 90.0})]
    )
    assert loss_plot_png(curve).startswith(b"\x89PNG\r\n\x1a\n")
    curve.train.clear()
    assert loss_plot_png(curve).startswith(b"\x89PNG\r\n\x1a\n")
