"""``HealthGuard``: monitor + hazard model + policy for one worker's training loop.

Usable from any training loop (forgeline's Ray Train loop switches it on with
``TrainOptions(health={"enabled": True})``)::

    guard = HealthGuard(options, base_every_steps=100, rank=rank, world_size=world,
                        gather=all_gather_floats)        # None on one worker
    for step in ...:
        decision = guard.step(step, step_s, data_wait_s, loss, grad_norm)
        if decision.save:
            info = checkpointer.save(state, step)
            guard.saved(step, info.blocked_s)
        metrics.update(guard.metrics())

``gather(values) -> list[list[float]]`` exchanges a few floats per rank each evaluation (the
loop passes one over ``torch.distributed``), so every rank decides on the same numbers: one
collective per evaluation, none per save.
"""

from __future__ import annotations

import math
import socket
import sys
from collections.abc import Callable, Sequence
from typing import Any

from forgeline import storage
from forgeline.health.config import HealthOptions
from forgeline.health.features import FEATURES, FORECAST_FEATURES, extract_forecast
from forgeline.health.hazard import HazardModel, load_hazard_model
from forgeline.health.monitor import HealthMonitor
from forgeline.health.policy import Decision, DrainReport, PredictivePolicy
from forgeline.health.signals import Source, default_sources

Gather = Callable[[list[float]], list[list[float]]]
DRAIN_FILE = "drain.json"


class HealthGuard:
    """One worker's health guard; every rank builds one with the same options."""

    def __init__(self, options: HealthOptions, base_every_steps: int, *, rank: int = 0,
                 world_size: int = 1, gather: Gather | None = None,
                 sources: Sequence[Source] | None = None, mtbf_s: float | None = None,
                 report_url: str | None = None, model: HazardModel | None = None) -> None:
        self.options, self.rank, self.world_size = options, rank, world_size
        self.gather = gather
        if sources is None:
            sources = default_sources(options.memory_limit_bytes, options.disk_path,
                                      options.disk_quota_bytes, options.nvml)
        self.monitor = HealthMonitor(sources, options.window_steps, options.sample_every_steps,
                                     options.sample_interval_s)
        self.model = model or load_hazard_model(options.model, options.window_steps,
                                                options.horizon_steps)
        baseline = self.model.predict(dict.fromkeys(FEATURES, 0.0))
        self.policy = PredictivePolicy(options, base_every_steps, mtbf_s, baseline)
        self.report_url = report_url
        self.host = socket.gethostname()
        self.hazard = 0.0
        self.features: dict[str, float] = {}
        self.eta_steps = math.inf  # steps to the nearest forecast memory/disk exhaustion
        self._unplanned_cost_s = 0.0  # blocking cost of saves since the last evaluation
        self.last: Decision | None = None
        self.drains: list[DrainReport] = []

    def step(self, step: int, step_s: float, data_wait_s: float = 0.0,
             loss: float | None = None, grad_norm: float | None = None) -> Decision:
        """Record this step's signals and return the job's decision (the same on all ranks).
        The hazard is evaluated (and ranks exchange numbers) every ``sample_every_steps``
        steps; between evaluations only the interval applies, on the last evaluation's
        numbers (the same on every rank; a NaN appearing in between is seen at the next
        evaluation)."""
        self.monitor.record(step, step_s, data_wait_s, loss, grad_norm)
        if step % self.options.sample_every_steps and self.last is not None:
            return self.policy.carry(step, self.last)
        self.features, self.eta_steps = extract_forecast(self.monitor.samples,
                                                         self.options.horizon_steps)
        self.hazard = float(self.model.predict(self.features))
        residual = self.hazard if not math.isfinite(self.eta_steps) else float(
            self.model.predict({**self.features, **dict.fromkeys(FORECAST_FEATURES, 0.0)}))
        finite = self.features["nonfinite"] == 0
        mine = [self.hazard, step_s, float(finite), self.eta_steps, residual,
                self._unplanned_cost_s]
        rows = self.gather(mine) if self.gather and self.world_size > 1 else [mine]
        cost_s = max(r[5] for r in rows)
        if cost_s > 0:  # the saves since the last evaluation, at the slowest rank's cost
            self.policy.saved(self.policy.last_save_step, cost_s)
            self._unplanned_cost_s = 0.0
        hazards = [r[0] for r in rows]
        job_step_s = max(r[1] for r in rows)
        all_finite = all(r[2] > 0 for r in rows)
        reasons = {self.rank: self._reasons()}
        decision = self.policy.decide(step, hazards, job_step_s, all_finite, reasons,
                                      eta_steps=min(r[3] for r in rows),
                                      residual_hazards=[r[4] for r in rows])
        for report in decision.drain:
            report.host = self.host if report.rank == self.rank else report.host
            report.node_id = _node_id() if report.rank == self.rank else None
        if decision.drain:
            self.drains += decision.drain
            self._write_drains(decision.drain)
        self.last = decision
        return decision

    def saved(self, step: int, blocked_s: float) -> None:
        """A checkpoint of ``step`` was taken; ``blocked_s``: how long training waited.
        The cost travels with the next evaluation's exchange (no collective of its own), and
        the slowest rank's is what the interval plans with, the same on every rank."""
        self.policy.last_save_step = max(self.policy.last_save_step, step)
        self._unplanned_cost_s = max(self._unplanned_cost_s, blocked_s)

    def _reasons(self) -> list[str]:
        reasons = getattr(self.model, "reasons", None)
        return list(reasons(self.features)) if callable(reasons) else []

    def _write_drains(self, reports: list[DrainReport]) -> None:
        """Each worker writes its own report (``{report_url}/drain-rank{r}.json``)."""
        if self.report_url is None:
            return
        for report in reports:
            if report.rank == self.rank:
                storage.write_json_atomic(
                    storage.join(self.report_url, f"drain-rank{self.rank}.json"),
                    report.to_dict())

    def save_metrics(self, decision: Decision) -> dict[str, Any]:
        """What a checkpoint's report says about why it was taken."""
        return {"health_save_reason": decision.reason, "health_job_hazard": decision.job_hazard}

    def metrics(self) -> dict[str, Any]:
        """The hazard and the decisions, for ``ray.train.report``."""
        d = self.last
        return {
            "health_hazard": self.hazard,
            "health_job_hazard": d.job_hazard if d else math.nan,
            "health_interval_steps": d.interval_steps if d else self.policy.base,
            "health_forecast_steps": self.eta_steps if math.isfinite(self.eta_steps)
            else math.nan,
            "health_proactive_saves": self.policy.proactive_saves,
            "health_drained": len(self.policy.drained),
            "health_sources": ",".join(self.monitor.source_names),
            "health_read_s": self.monitor.read_s,
        }


def _node_id() -> str | None:
    """This worker's Ray node, when it runs in Ray (never imports Ray: ~0.8 s outside it)."""
    ray = sys.modules.get("ray")
    try:
        return ray.get_runtime_context().get_node_id() if ray and ray.is_initialized() else None
    except Exception:  # noqa: BLE001 - outside Ray there is no node id
        return None


def torch_gather(values: list[float]) -> list[list[float]]:
    """All ranks' ``values`` over ``torch.distributed`` (rows in rank order)."""
    import torch
    import torch.distributed as dist

    mine = torch.tensor(values, dtype=torch.float64)
    rows = [torch.empty_like(mine) for _ in range(dist.get_world_size())]
    dist.all_gather(rows, mine)
    return [r.tolist() for r in rows]
