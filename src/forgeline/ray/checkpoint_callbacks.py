"""Controller-side ``UserCallback``s for forgeline checkpoints: retention / garbage
collection after each reported checkpoint, and failure statistics (for the Young/Daly
interval the worker-side ``Checkpointer(adaptive=True)`` and the health policy use)."""

from __future__ import annotations

import math
import time
from typing import Any

from ray.train import UserCallback

from forgeline import storage
from forgeline.checkpoint import GCResult, RetentionPolicy, collect_garbage
from forgeline.ray.checkpointer import FAILURE_STATS_FILE, young_daly_interval_s

# what a resumed worker reports with its first step (time.time() of each): its training
# function started, its restore started, ended, and its first step after it ended
RESUME_TIMESTAMPS = ("resume_attempt_started_unix_s", "resume_restore_started_unix_s",
                     "resume_restored_unix_s", "resume_first_step_unix_s")


class CheckpointRetention(UserCallback):
    """After each reported forgeline checkpoint, apply ``policy`` and collect garbage."""

    def __init__(self, url: str, policy: RetentionPolicy | None = None) -> None:
        self.url = storage.normalize_root(url)
        self.policy = policy or RetentionPolicy()
        self.results: list[GCResult] = []

    def after_report(self, run_context: Any, metrics: list[dict[str, Any]],
                     checkpoint: Any) -> None:
        if checkpoint is None and not any("checkpoint_step" in m for m in metrics):
            return
        self.results.append(collect_garbage(self.url, self.policy))


class FailureStatistics(UserCallback):
    """Counts worker failures and resumes, measures save cost; writes
    ``{url}/failure_stats.json`` with the MTBF and the Young/Daly interval in seconds.

    A failure counts as *predicted* when a proactive checkpoint was reported
    (``checkpoint_proactive``), or the job hazard (``health_job_hazard``) reached
    ``hazard_threshold``, within ``horizon_steps`` before it (steps as last reported: the
    controller sees the workers' reports, not their failing step); pass the run's
    ``HealthOptions`` numbers. Without worker health no report carries either: none is.
    Predicted failures are covered by proactive saves, so the interval plans for the others:
    ``unpredicted_mtbf_s`` (:func:`~forgeline.checkpoint.interval.planning_mtbf_s`).

    Time to resume, per failure (``failure_records[i]["time_to_resume"]``), from the
    timestamps the resumed workers report with their first step (``RESUME_TIMESTAMPS``; the
    slowest rank's of each) and this controller's own: ``detection_s`` from the last report
    before the failure to Ray Train's exception (the failure itself lies in between, so this
    is an upper bound), ``restart_s`` to the new workers' training function starting,
    ``setup_s`` to the start of the restore (engine, data, validation), ``restore_s``,
    ``first_step_s`` to the end of the first step after it, and ``total_s`` from that last
    report to the end of the first step. Seconds of wall-clock time (``time.time``) on the
    workers' and the controller's hosts."""

    def __init__(self, url: str, horizon_steps: int = 20, hazard_threshold: float = 0.5
                 ) -> None:
        self.url = storage.normalize_root(url)
        self.horizon_steps, self.hazard_threshold = horizon_steps, hazard_threshold
        self.started = time.time()
        self.failures: list[float] = []
        self.records: list[dict[str, Any]] = []
        self.save_costs_s: list[float] = []
        self.last_report_unix_s: float | None = None
        self._since_failure()

    def _since_failure(self) -> None:
        """Forget the attempt's hazards: a restarted attempt counts its own."""
        self.last_step: int | None = None
        self.last_hazard: float | None = None
        self.warned_step: int | None = None  # the last proactive save or hazard ≥ threshold

    def after_exception(self, run_context: Any, worker_exceptions: dict[int, Exception]) -> None:
        now = time.time()
        self.failures.append(now)
        predicted = self.warned_step is not None and self.last_step is not None \
            and self.last_step - self.warned_step <= self.horizon_steps
        self.records.append({"time_unix_s": now, "step": self.last_step,
                             "predicted": predicted, "last_hazard": self.last_hazard,
                             "last_report_unix_s": self.last_report_unix_s,
                             "time_to_resume": None})
        self._since_failure()
        self._write()

    def after_report(self, run_context: Any, metrics: list[dict[str, Any]],
                     checkpoint: Any) -> None:
        self.last_report_unix_s = time.time()
        self._watch(metrics)
        resumed = self._time_to_resume(metrics)
        costs = [m["checkpoint_blocked_s"] for m in metrics if "checkpoint_blocked_s" in m]
        if costs:
            self.save_costs_s.append(max(costs))
        if costs or resumed:
            self._write()

    def _time_to_resume(self, metrics: list[dict[str, Any]]) -> bool:
        """Fill the last failure's ``time_to_resume`` from the first report of the resumed
        workers that carries their timestamps; whether it did."""
        if not self.records or self.records[-1]["time_to_resume"] is not None:
            return False
        stamps = [m for m in metrics if all(isinstance(m.get(k), int | float)
                                            for k in RESUME_TIMESTAMPS)]
        if not stamps:
            return False
        started, restore, restored, first = (max(m[k] for m in stamps)
                                             for k in RESUME_TIMESTAMPS)
        record = self.records[-1]
        before = record["last_report_unix_s"]
        record["time_to_resume"] = {
            "detection_s": None if before is None else record["time_unix_s"] - before,
            "restart_s": started - record["time_unix_s"], "setup_s": restore - started,
            "restore_s": restored - restore, "first_step_s": first - restored,
            "total_s": None if before is None else first - before}
        return True

    def _watch(self, metrics: list[dict[str, Any]]) -> None:
        """The newest step, job hazard and warning (proactive save, hazard ≥ threshold)
        among the ranks' reports."""
        steps = [int(m["step"]) for m in metrics if isinstance(m.get("step"), int | float)]
        if not steps:
            return
        step = max(steps)
        self.last_step = step if self.last_step is None else max(self.last_step, step)
        hazards = [float(m["health_job_hazard"]) for m in metrics
                   if isinstance(m.get("health_job_hazard"), int | float)
                   and math.isfinite(m["health_job_hazard"])]
        if hazards:
            self.last_hazard = max(hazards)
        if any(m.get("checkpoint_proactive") for m in metrics) or (
                hazards and max(hazards) >= self.hazard_threshold):
            self.warned_step = step

    def stats(self) -> dict[str, Any]:
        elapsed = time.time() - self.started
        mtbf = elapsed / len(self.failures) if self.failures else math.inf
        unpredicted = sum(not r["predicted"] for r in self.records)
        unpredicted_mtbf = elapsed / unpredicted if unpredicted else math.inf
        cost = sorted(self.save_costs_s)[len(self.save_costs_s) // 2] if self.save_costs_s else 0
        interval = young_daly_interval_s(cost, unpredicted_mtbf)
        return {
            "failures": len(self.failures),
            "predicted_failures": len(self.records) - unpredicted,
            "elapsed_s": elapsed,
            "mtbf_s": mtbf if math.isfinite(mtbf) else None,
            "unpredicted_mtbf_s": unpredicted_mtbf if math.isfinite(unpredicted_mtbf) else None,
            "failure_records": list(self.records),
            "median_save_blocked_s": cost,
            "young_daly_interval_s": interval if math.isfinite(interval) else None,
        }

    def _write(self) -> None:
        storage.write_json_atomic(storage.join(self.url, FAILURE_STATS_FILE), self.stats())
