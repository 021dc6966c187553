"""Extra links on forgeline's tasks: the run's report page, and the stage's Ray job."""

from __future__ import annotations

from typing import Any

from airflow.sdk import BaseOperatorLink


def report_url(dag_id: str, run_id: str) -> str:
    """The forgeline report page of a DAG run (served by the forgeline plugin)."""
    from urllib.parse import quote

    from airflow.configuration import conf

    base = conf.get("api", "base_url", fallback="") or ""
    return f"{base.rstrip('/')}/forgeline/dags/{quote(dag_id)}/runs/{quote(run_id)}/report"


class ReportLink(BaseOperatorLink):
    """The forgeline report of the task's DAG run."""

    name = "forgeline report"

    def get_link(self, operator: Any, *, ti_key: Any) -> str:
        return report_url(ti_key.dag_id, ti_key.run_id)


class RayJobLink(BaseOperatorLink):
    """The task's Ray job on the Ray dashboard (empty when it ran embedded)."""

    name = "Ray job"

    def get_link(self, operator: Any, *, ti_key: Any) -> str:
        return getattr(operator, "ray_job_url", None) or ""
