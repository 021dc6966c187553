"""Controller-side ``UserCallback``s for forgeline checkpoints: retention / garbage
collection after each reported checkpoint, and failure statistics (for the Young/Daly
interval the worker-side ``Checkpointer(adaptive=True)`` uses)."""

from __future__ import annotations

import math
import time
from typing import Any

from ray.train import UserCallback

from forgeline import storage
from forgeline.checkpoint import GCResult, RetentionPolicy, collect_garbage
from forgeline.ray.checkpointer import FAILURE_STATS_FILE, young_daly_interval_s


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
    ``{url}/failure_stats.json`` with the MTBF and the Young/Daly interval in seconds."""

    def __init__(self, url: str) -> None:
        self.url = storage.normalize_root(url)
        self.started = time.time()
        self.failures: list[float] = []
        self.save_costs_s: list[float] = []

    def after_exception(self, run_context: Any, worker_exceptions: dict[int, Exception]) -> None:
        self.failures.append(time.time())
        self._write()

    def after_report(self, run_context: Any, metrics: list[dict[str, Any]],
                     checkpoint: Any) -> None:
        costs = [m["checkpoint_blocked_s"] for m in metrics if "checkpoint_blocked_s" in m]
        if costs:
            self.save_costs_s.append(max(costs))
            self._write()

    def stats(self) -> dict[str, Any]:
        elapsed = time.time() - self.started
        mtbf = elapsed / len(self.failures) if self.failures else math.inf
        cost = sorted(self.save_costs_s)[len(self.save_costs_s) // 2] if self.save_costs_s else 0
        interval = young_daly_interval_s(cost, mtbf)
        return {
            "failures": len(self.failures),
            "elapsed_s": elapsed,
            "mtbf_s": mtbf if math.isfinite(mtbf) else None,
            "median_save_blocked_s": cost,
            "young_daly_interval_s": interval if math.isfinite(interval) else None,
        }

    def _write(self) -> None:
        storage.write_json_atomic(storage.join(self.url, FAILURE_STATS_FILE), self.stats())
