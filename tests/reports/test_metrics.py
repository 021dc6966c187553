"""Parsing metrics.jsonl into the loss curves the report plots."""

from __future__ import annotations

import json

from forgeline.reports.metrics import parse_metrics
from forgeline.reports.plots import loss_figure, loss_plot_png


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


def test_the_job_hazard_is_drawn_on_a_second_axis_when_health_was_on() -> None:
    lines = [json.dumps({"stage": "train", "step": s, "loss": 3.0 - s / 100,
                         "health_job_hazard": 0.05 + s / 100}) for s in range(1, 41)]
    lines.append(json.dumps({"stage": "train", "step": 40, "checkpoint_step": 40,
                             "health_job_hazard": 0.45}))  # a save's report: same step
    curve = parse_metrics(lines)
    assert len(curve.hazard) == 40 and curve.hazard[-1] == (40.0, 0.45)
    fig = loss_figure(curve)
    loss_ax, hazard_ax = fig.axes
    assert hazard_ax.get_ylim() == (0.0, 1.0) and "hazard" in hazard_ax.get_ylabel()
    assert [t.get_text() for t in loss_ax.get_legend().get_texts()] == ["train loss",
                                                                      "job hazard"]
    assert loss_plot_png(curve).startswith(b"\x89PNG\r\n\x1a\n")
    off = parse_metrics(lines[:-1])
    off.hazard.clear()
    assert len(loss_figure(off).axes) == 1  # health off: no second axis
