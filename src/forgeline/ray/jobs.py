"""Run a forgeline stage as a Ray job (Ray Jobs API), so that its driver lives on the Ray
cluster and not in the process that asked for it (an Airflow worker, a script).

The job's entrypoint is the forgeline CLI for the stage (``forgeline train --root R
--run-id RUN <flags>``), its flags the stage's options as the CLI spells them. The
submission id is derived from the run, the stage and the attempt, so asking again for the
same attempt — or for a later attempt while an earlier one still runs — re-attaches to
the job that exists instead of starting a second one. Works without Airflow.
"""

from __future__ import annotations

import json
import logging
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from forgeline.errors import ConfigError
from forgeline.options import flat_fields, flatten
from forgeline.runs import RunLayout

if TYPE_CHECKING:
    from ray.job_submission import JobSubmissionClient

log = logging.getLogger(__name__)

LIVE = frozenset({"PENDING", "RUNNING"})
"""Job states in which the job may still do work."""
TERMINAL = frozenset({"SUCCEEDED", "FAILED", "STOPPED"})

_ID_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")


@dataclass(frozen=True)
class RayCluster:
    """Where and how to submit jobs: the Ray dashboard (job-submission) address, extra
    HTTP headers (e.g. an auth token) and the runtime env every job gets."""

    address: str
    headers: Mapping[str, str] = field(default_factory=dict)
    runtime_env: Mapping[str, Any] = field(default_factory=dict)
    verify: bool = True

    def client(self) -> JobSubmissionClient:
        from ray.job_submission import JobSubmissionClient

        return JobSubmissionClient(self.address, headers=dict(self.headers) or None,
                                   verify=self.verify)

    def job_url(self, submission_id: str) -> str:
        """The job's page on the Ray dashboard."""
        return f"{self.address.rstrip('/')}/#/jobs/{submission_id}"


@dataclass(frozen=True)
class StageJob:
    """One attempt at running one stage of one run as a Ray job."""

    stage: str
    layout: RunLayout
    options: BaseModel
    attempt: int = 1

    def submission_id(self, attempt: int | None = None) -> str:
        """``forgeline-{run}-{stage}-try{n}``: stable for a given run, stage and attempt."""
        run = _ID_UNSAFE.sub("_", self.layout.run_id)
        return f"forgeline-{run}-{self.stage}-try{attempt or self.attempt}"

    def entrypoint(self) -> str:
        """The shell command the job runs: the forgeline CLI for this stage."""
        argv = ["forgeline", self.stage, "--root", self.layout.root,
                "--run-id", self.layout.run_id, *option_flags(self.options)]
        return shlex.join(argv)


def option_flags(options: BaseModel) -> list[str]:
    """The CLI flags that give ``options`` (only values that differ from the defaults).

    The inverse of ``forgeline.cli``'s flag generation: ``--section-field value``,
    ``--flag/--no-flag`` for booleans, several values for a list, JSON for a dict, ``none``
    for a cleared optional value.
    """
    values = flatten(options)
    argv: list[str] = []
    for f in flat_fields(type(options)):
        value = values[f.name]
        if value == _json_default(f.default):
            continue
        flag = "--" + f.name.replace("_", "-")
        if f.kind == "bool" and value is not None:
            argv.append(flag if value else "--no-" + flag[2:])
        elif value is None:
            argv += [flag, "none"]
        elif f.kind == "list":
            if not value:
                raise ConfigError(f.name, value, "an empty list cannot be passed as CLI flags")
            argv += [flag, *(str(v) for v in value)]
        elif f.kind == "dict":
            argv += [flag, json.dumps(value, sort_keys=True)]
        else:
            argv += [flag, str(value)]
    return argv


def _json_default(default: Any) -> Any:
    if isinstance(default, BaseModel):
        return default.model_dump(mode="json")
    if isinstance(default, tuple):
        return list(default)
    return getattr(default, "value", default)


def job_info(client: JobSubmissionClient, submission_id: str) -> Any | None:
    """The job's details, or None when the cluster has no job of that id."""
    try:
        return client.get_job_info(submission_id)
    except RuntimeError as exc:  # the SDK's answer to HTTP 404
        if "does not exist" in str(exc) or "404" in str(exc):
            return None
        raise


def submit_stage(cluster: RayCluster, job: StageJob) -> str:
    """Submit ``job`` unless a job for it exists; return the submission id to follow.

    Re-attaches to this attempt's job if the cluster has it (whatever its state), else to
    an earlier attempt's job that is still live (an attempt whose worker died while Ray
    kept training), else submits this attempt's job.
    """
    client = cluster.client()
    for attempt in range(job.attempt, 0, -1):
        sid = job.submission_id(attempt)
        info = job_info(client, sid)
        if info is not None and (attempt == job.attempt or info.status in LIVE):
            log.info("re-attaching to Ray job %s (%s)", sid, info.status)
            return sid
    sid = job.submission_id()
    client.submit_job(
        entrypoint=job.entrypoint(), submission_id=sid,
        runtime_env=dict(cluster.runtime_env) or None,
        metadata={"forgeline_run_id": job.layout.run_id, "forgeline_stage": job.stage,
                  "forgeline_root": job.layout.root, "attempt": str(job.attempt)},
    )
    log.info("submitted Ray job %s: %s", sid, job.entrypoint())
    return sid


def stop_job(cluster: RayCluster, submission_id: str) -> bool:
    """Ask Ray to stop the job; True when it was still running."""
    return bool(cluster.client().stop_job(submission_id))
