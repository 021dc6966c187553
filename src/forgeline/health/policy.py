"""Predictive checkpoint policy: proactive saves, an adaptive interval, drain reports.

Every rank evaluates the policy on the same inputs (the job's gathered hazards and step
times), so every rank takes the same decision at the same step.

- **Proactive checkpoint**: the job hazard reaches ``threshold``, the state is finite (a
  NaN/Inf state is never saved) and, after the first one, ``cooldown_steps`` have passed
  since the last checkpoint of any kind.
- **Adaptive interval**: Young/Daly ``sqrt(2 · C · M)`` with the measured save cost ``C``
  and ``M`` = the smaller of the observed MTBF and the MTBF the hazard implies
  (``horizon / −ln(1 − h')``, ``h'`` the hazard above the model's healthy baseline
  ``h0``, its output on all-zero features), clamped to ``[min_interval_steps, base]``. So
  it is never longer than the fixed base nor than Young/Daly on the observed MTBF, and it
  shrinks as the hazard grows. ``M`` is the MTBF of the failures the hazard does not
  predict: the observed one of all failures when that split is unknown.
- **Drain**: a worker whose hazard stays ≥ ``drain_threshold`` for ``drain_after_samples``
  evaluations is reported (rank, host, node, hazard, reasons) once.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from forgeline.health.config import HealthOptions


def young_daly_interval_s(save_cost_s: float, mtbf_s: float) -> float:
    """forgeline's Young/Daly interval (``forgeline.ray.checkpointer``), imported on use."""
    from forgeline.ray.checkpointer import young_daly_interval_s as interval

    return interval(save_cost_s, mtbf_s)


def implied_mtbf_steps(hazard: float, horizon_steps: int) -> float:
    """MTBF (steps) of a constant failure rate with P(failure within horizon) = hazard."""
    if hazard <= 0:
        return math.inf
    if hazard >= 1:
        return horizon_steps / 50.0
    return horizon_steps / -math.log1p(-hazard)


@dataclass
class DrainReport:
    """A suspect worker's node, for the user (or an autoscaler) to replace."""

    rank: int
    step: int
    hazard: float
    reasons: list[str]
    host: str | None = None
    node_id: str | None = None
    time_unix_s: float = field(default_factory=time.time)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Decision:
    """What the policy decided at one step."""

    step: int
    save: bool
    reason: str  # "interval", "hazard", "skip-nonfinite" or ""
    interval_steps: int
    job_hazard: float
    drain: list[DrainReport] = field(default_factory=list)


class PredictivePolicy:
    """The decisions of one job, from the hazards and step times each step."""

    def __init__(self, options: HealthOptions, base_every_steps: int,
                 mtbf_s: float | None = None, baseline_hazard: float = 0.0) -> None:
        self.options, self.base = options, base_every_steps
        self.baseline_hazard = baseline_hazard
        self.mtbf_s = options.mtbf_s if options.mtbf_s is not None else mtbf_s
        self.last_save_step = 0
        self.last_proactive_step: int | None = None
        self.save_cost_s = 0.0
        self.proactive_saves = 0
        self.interval_steps = base_every_steps
        self._above: dict[int, int] = {}
        self.drained: dict[int, DrainReport] = {}

    def saved(self, step: int, cost_s: float) -> None:
        """A checkpoint of ``step`` was taken and blocked training for ``cost_s``."""
        self.last_save_step = step
        self.save_cost_s = cost_s if self.save_cost_s == 0 else 0.7 * self.save_cost_s \
            + 0.3 * cost_s

    def interval(self, job_hazard: float, step_s: float) -> int:
        """The adaptive interval in steps (see the module docstring)."""
        if step_s <= 0 or self.save_cost_s <= 0:
            return self.base
        excess = max(0.0, job_hazard - self.baseline_hazard) / (1.0 - self.baseline_hazard)
        mtbf_s = min(self.mtbf_s or math.inf,
                     implied_mtbf_steps(excess, self.options.horizon_steps) * step_s)
        interval_s = young_daly_interval_s(self.save_cost_s, mtbf_s)
        if not math.isfinite(interval_s):
            return self.base
        steps = round(interval_s / step_s)
        return int(min(self.base, max(self.options.min_interval_steps, steps)))

    def decide(self, step: int, hazards: list[float], step_s: float, finite: bool = True,
               reasons: dict[int, list[str]] | None = None) -> Decision:
        """The decision at ``step`` from every rank's hazard and the job's step time."""
        from forgeline.health.hazard import job_hazard

        h = job_hazard(hazards)
        self.interval_steps = self.interval(h, step_s)
        drain = self._drain(step, hazards, reasons or {})
        if not finite:
            return Decision(step, False, "skip-nonfinite", self.interval_steps, h, drain)
        if step - self.last_save_step >= self.interval_steps:
            self.last_save_step = step  # the caller saves (and reports the cost to saved())
            return Decision(step, True, "interval", self.interval_steps, h, drain)
        cooled = step - self.last_save_step >= self.options.cooldown_steps \
            or self.last_proactive_step is None
        if h >= self.options.threshold and cooled and step > self.last_save_step:
            self.last_proactive_step = self.last_save_step = step
            self.proactive_saves += 1
            return Decision(step, True, "hazard", self.interval_steps, h, drain)
        return Decision(step, False, "", self.interval_steps, h, drain)

    def carry(self, step: int, last: Decision) -> Decision:
        """A step between hazard evaluations: the interval only, on ``last``'s numbers."""
        due = last.reason != "skip-nonfinite" and step - self.last_save_step >= last.interval_steps
        if due:
            self.last_save_step = step
        return Decision(step, due, "interval" if due else "", last.interval_steps,
                        last.job_hazard)

    def _drain(self, step: int, hazards: list[float],
               reasons: dict[int, list[str]]) -> list[DrainReport]:
        new = []
        for rank, p in enumerate(hazards):
            self._above[rank] = self._above.get(rank, 0) + 1 \
                if p >= self.options.drain_threshold else 0
            if self._above[rank] >= self.options.drain_after_samples and rank not in self.drained:
                self.drained[rank] = DrainReport(rank, step, float(p), reasons.get(rank, []))
                new.append(self.drained[rank])
        return new
