"""PNG plots, drawn with matplotlib's object API (no pyplot global state) on Agg."""

from __future__ import annotations

import io

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from forgeline.reports.metrics import LossCurve

LOSS_PLOT_NAME = "train_loss.png"
_LOG_Y_SPREAD = 10.0
"""Use a log y-axis once the largest loss is this many times the smallest."""


def _wants_log_y(values: list[float]) -> bool:
    return bool(values) and min(values) > 0 and max(values) / min(values) >= _LOG_Y_SPREAD


def loss_figure(curve: LossCurve, title: str = "Training loss") -> Figure:
    """Training loss vs step (line), validation loss as points if any; the job hazard (0–1)
    on a second y-axis when worker health was on."""
    fig = Figure(figsize=(7.0, 4.0), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    if curve.train:
        steps, losses = zip(*curve.train, strict=True)
        few = len(steps) <= 20  # mark the logged points when there are only a few
        ax.plot(steps, losses, color="#2563eb", linewidth=1.4, label="train loss",
                marker="." if few else None)
    if curve.validation:
        steps, losses = zip(*curve.validation, strict=True)
        # measured points, not a trend: no line between them
        ax.scatter(steps, losses, color="#dc2626", marker="o", s=36, zorder=3,
                   label="validation loss")
    if _wants_log_y([loss for _, loss in curve.train + curve.validation]):
        ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    if curve.hazard:
        hazard_ax = ax.twinx()
        steps, hazards = zip(*curve.hazard, strict=True)
        hazard_ax.step(steps, hazards, where="post", color="#ea580c", linewidth=1.0,
                       alpha=0.8, label="job hazard")
        hazard_ax.set_ylim(0.0, 1.0)
        hazard_ax.set_ylabel("job hazard (P(failure within the horizon))")
        more_handles, more_labels = hazard_ax.get_legend_handles_labels()
        handles, labels = handles + more_handles, labels + more_labels
    ax.legend(handles, labels, loc="upper right")
    return fig


def loss_plot_png(curve: LossCurve, title: str = "Training loss") -> bytes:
    """:func:`loss_figure` as PNG bytes."""
    fig = loss_figure(curve, title)
    try:
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png")
        return buffer.getvalue()
    finally:
        fig.clear()
