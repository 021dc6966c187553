"""Controller-side callback that appends every ``ray.train.report`` to the run's metrics.jsonl."""

from __future__ import annotations

import json
import math
import time
from typing import Any

from ray.train import UserCallback

from forgeline import storage


def read_metrics(url: str) -> list[dict[str, Any]]:
    """All records of a metrics.jsonl file; empty if it does not exist yet."""
    if not storage.exists(url):
        return []
    fs, path = storage.filesystem(url)
    return [json.loads(line) for line in fs.cat_file(path).decode().splitlines() if line.strip()]


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class MetricsLogger(UserCallback):
    """Writes rank 0's metrics, tagged with ``stage``, to ``metrics_url`` (JSON lines).

    Object stores cannot append, so the file is rewritten atomically on each report;
    records of earlier stages already in the file are kept.
    """

    def __init__(self, metrics_url: str, stage: str = "train") -> None:
        self.metrics_url, self.stage = metrics_url, stage
        self._records: list[dict[str, Any]] | None = None

    def after_report(
        self, run_context: Any, metrics: list[dict[str, Any]], checkpoint: Any
    ) -> None:
        if self._records is None:
            self._records = read_metrics(self.metrics_url)
        record = {"stage": self.stage, "wall_time_unix_s": time.time()}
        record.update({k: _jsonable(v) for k, v in metrics[0].items()})
        self._records.append(record)
        body = "".join(json.dumps(r, sort_keys=True) + "\n" for r in self._records)
        storage.write_bytes_atomic(self.metrics_url, body.encode())
