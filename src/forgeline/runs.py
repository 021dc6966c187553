"""The run layout on storage: ``{root}/runs/{run_id}/{stage}/…`` plus ``run.json``.

Each stage publishes ``{stage}/result.json`` atomically; ``run.json`` is the merged
view of those results, rebuilt after every stage, so concurrent stages never lose
each other's results (the per-stage files stay the source of truth).
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from forgeline import storage
from forgeline.errors import ConfigError

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def default_artifact_root() -> str:
    """``$FORGELINE_ARTIFACT_ROOT``, else ``./artifacts`` under the current folder."""
    return storage.normalize_root(os.environ.get("FORGELINE_ARTIFACT_ROOT", "artifacts"))


def safe_run_id(run_id: str) -> str:
    """Make an id (e.g. Airflow's ``manual__2026-01-01T00:00:00+00:00``) path-safe."""
    cleaned = _UNSAFE.sub("_", run_id).strip("._")
    if not cleaned:
        raise ConfigError("run_id", run_id, "must contain letters or digits")
    return cleaned


def new_run_id(prefix: str = "run") -> str:
    return f"{prefix}-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}"


@dataclass(frozen=True)
class RunLayout:
    """Where one run's artifacts live."""

    root: str
    run_id: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", storage.normalize_root(self.root))
        object.__setattr__(self, "run_id", safe_run_id(self.run_id))

    @property
    def url(self) -> str:
        return storage.join(self.root, "runs", self.run_id)

    @property
    def run_json_url(self) -> str:
        return storage.join(self.url, "run.json")

    @property
    def metrics_url(self) -> str:
        return storage.join(self.url, "metrics.jsonl")

    def stage_url(self, stage: str) -> str:
        return storage.join(self.url, stage)

    def record(self, stage: str, result: dict[str, Any]) -> None:
        """Publish one stage's result, then rebuild ``run.json`` from all stages' results."""
        storage.write_json_atomic(storage.join(self.stage_url(stage), "result.json"), result)
        storage.write_json_atomic(self.run_json_url, self.load())

    def load(self) -> dict[str, Any]:
        """The run's merged record: every published stage result, by stage name."""
        fs, path = storage.filesystem(self.url)
        stages: dict[str, Any] = {}
        for result_path in sorted(fs.glob(f"{path}/*/result.json")):
            stage = Path(result_path).parent.name
            with fs.open(result_path, "rb") as f:
                stages[stage] = json.load(f)
        return {"run_id": self.run_id, "root": self.root, "stages": stages}
