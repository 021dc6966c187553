"""Predictive checkpoint policy: proactive saves, an adaptive interval, drain reports.

Every rank evaluates the policy on the same inputs (the job's gathered hazards and step
times), so every rank takes the same decision at the same step.

- **Proactive checkpoint**: the job hazard reaches ``threshold``, the state is finite (a
  NaN/Inf state is never saved) and, after the first one, ``cooldown_steps`` have passed
  since the last checkpoint of any kind.
- **Imminent checkpoint**: memory or disk is forecast to run out (``eta_steps``: the
  nearest over ranks, at the growth the features measure) within ``imminent_steps`` after
  the next evaluation (``sample_every_steps`` on: the last one that can still save),
  cooldown or not. A hazard that such a forecast explains (without the memory and disk
  features, ``FORECAST_FEATURES``, the job hazard — ``residual_hazards`` — is below
  ``threshold``) waits for it: a failure with a forecast is saved for once, just before it,
  not at every cooldown. The next imminent save needs the forecast to clear (beyond
  ``horizon_steps``) or to move later than the step the last one covered by more than
  that window (the growth slowed); a worker at its limit that does not fail
  (forecast 0: the limit is wrong) is not saved again and again.
- **Adaptive interval**: Young/Daly ``sqrt(2 · C · M)`` with the measured save cost ``C``
  and ``M`` = the smaller of the observed MTBF and the MTBF the residual hazard implies
  (``horizon / −ln(1 − h')``, ``h'`` the hazard above the model's healthy baseline
  ``h0``, its output on all-zero features), clamped to ``[min_interval_steps, longest]``
  (``longest``: ``max_interval_steps``, else the fixed base). So it is never longer than
  that nor than Young/Daly on the observed MTBF, and it shrinks as the hazard grows (not
  for what a forecast explains: its imminent save covers that failure). ``M`` is the MTBF
  of the failures the hazard does not predict: the observed one of all failures when that
  split is unknown.
- **Drain**: a worker whose hazard stays ≥ ``drain_threshold`` for ``drain_after_samples``
  evaluations is reported (rank, host, node, hazard, reasons) once.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from forgeline.checkpoint.interval import young_daly_interval_s
from forgeline.health.config import HealthOptions


def implied_mtbf_steps(hazard: float, horizon_steps: int) -> float:
    """MTBF (steps) of a constant failure rate with P(failure within horizon) = hazard."""
    if hazard <= 0:
        return math.inf
    if hazard >= 1:
        return horizon_steps / 50.0
    return horizon_steps / -math.log1p(-hazard)


PROACTIVE_REASONS = ("hazard", "imminent")


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
    reason: str  # "interval", "hazard", "imminent", "skip-nonfinite" or ""
    interval_steps: int
    job_hazard: float
    drain: list[DrainReport] = field(default_factory=list)

    @property
    def proactive(self) -> bool:
        """A save ahead of a predicted failure (not one of the interval)."""
        return self.save and self.reason in PROACTIVE_REASONS


class PredictivePolicy:
    """The decisions of one job, from the hazards and step times each step."""

    def __init__(self, options: HealthOptions, base_every_steps: int,
                 mtbf_s: float | None = None, baseline_hazard: float = 0.0) -> None:
        self.options, self.base = options, base_every_steps
        self.baseline_hazard = baseline_hazard
        self.mtbf_s = options.mtbf_s if options.mtbf_s is not None else mtbf_s
        self.last_save_step = 0
        self.last_proactive_step: int | None = None
        self.imminent_until: float | None = None  # failure step the last imminent save covered
        self.longest = options.max_interval_steps or base_every_steps
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
            return min(self.base, self.longest)
        excess = max(0.0, job_hazard - self.baseline_hazard) / (1.0 - self.baseline_hazard)
        mtbf_s = min(self.mtbf_s or math.inf,
                     implied_mtbf_steps(excess, self.options.horizon_steps) * step_s)
        interval_s = young_daly_interval_s(self.save_cost_s, mtbf_s)
        if not math.isfinite(interval_s):
            return min(self.base, self.longest)
        steps = round(interval_s / step_s)
        return int(min(self.longest, max(self.options.min_interval_steps, steps)))

    def decide(self, step: int, hazards: list[float], step_s: float, finite: bool = True,
               reasons: dict[int, list[str]] | None = None, *,
               eta_steps: float = math.inf,
               residual_hazards: list[float] | None = None) -> Decision:
        """The decision at ``step`` from every rank's hazard, the job's step time, the
        nearest forecast resource exhaustion (``eta_steps``; inf: none) and every rank's
        hazard without the features that forecast comes from (None: ``hazards``)."""
        from forgeline.health.hazard import job_hazard

        h = job_hazard(hazards)
        opts = self.options
        residual = h if residual_hazards is None or not math.isfinite(eta_steps) \
            else job_hazard(residual_hazards)
        forecast = residual < opts.threshold <= h  # the imminent save will cover it
        window = opts.imminent_steps + opts.sample_every_steps
        if eta_steps > opts.horizon_steps:
            self.imminent_until = None
        elif self.imminent_until is not None and eta_steps > 0 \
                and step + eta_steps > self.imminent_until + window:
            self.imminent_until = None  # the growth slowed: the failure comes later
        # a forecast failure is covered by its imminent save: the interval plans for the rest
        self.interval_steps = self.interval(residual, step_s)
        drain = self._drain(step, hazards, reasons or {})
        if not finite:
            return Decision(step, False, "skip-nonfinite", self.interval_steps, h, drain)
        if eta_steps <= window and step > self.last_save_step \
                and self.imminent_until is None:
            self.imminent_until = step + eta_steps
            return self._proactive(step, "imminent", h, drain)
        if step - self.last_save_step >= self.interval_steps:
            self.last_save_step = step  # the caller saves (and reports the cost to saved())
            return Decision(step, True, "interval", self.interval_steps, h, drain)
        cooled = step - self.last_save_step >= opts.cooldown_steps \
            or self.last_proactive_step is None
        if h >= opts.threshold and cooled and step > self.last_save_step and not forecast:
            return self._proactive(step, "hazard", h, drain)
        return Decision(step, False, "", self.interval_steps, h, drain)

    def _proactive(self, step: int, reason: str, h: float,
                   drain: list[DrainReport]) -> Decision:
        self.last_proactive_step = self.last_save_step = step
        self.proactive_saves += 1
        return Decision(step, True, reason, self.interval_steps, h, drain)

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
