"""``RayHook``: the Airflow connection type ``ray`` — where forgeline submits Ray jobs.

A connection holds the Ray dashboard (job-submission) address as schema/host/port, an
optional token (the password, sent as ``Authorization: Bearer …``) and, in its extra,
``headers`` (more HTTP headers), ``runtime_env`` (the default runtime env of every job) and
``verify`` (TLS). The default connection id is ``ray_default``, e.g. from the environment::

    AIRFLOW_CONN_RAY_DEFAULT='{"conn_type": "ray", "host": "127.0.0.1", "port": 8265,
                              "schema": "http", "extra": {"runtime_env": {...}}}'
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseHook

if TYPE_CHECKING:
    from forgeline.ray.jobs import RayCluster


def _extra(conn: Any) -> dict[str, Any]:
    extra = conn.extra_dejson if hasattr(conn, "extra_dejson") else {}
    return extra if isinstance(extra, dict) else {}


def cluster_from(conn: Any) -> RayCluster:
    """The :class:`~forgeline.ray.jobs.RayCluster` an Airflow connection describes."""
    from forgeline.ray.jobs import RayCluster

    extra = _extra(conn)
    host = conn.host or "127.0.0.1"
    address = host if "://" in host else f"{conn.schema or 'http'}://{host}:{conn.port or 8265}"
    headers = dict(extra.get("headers") or {})
    if conn.password:
        headers.setdefault("Authorization", f"Bearer {conn.password}")
    runtime_env = extra.get("runtime_env") or {}
    if isinstance(runtime_env, str):
        runtime_env = json.loads(runtime_env)
    return RayCluster(address=address, headers=headers, runtime_env=runtime_env,
                      verify=bool(extra.get("verify", True)))


class RayHook(BaseHook):
    """The Ray cluster of a ``ray`` connection; :meth:`cluster` is what forgeline submits to."""

    conn_name_attr = "ray_conn_id"
    default_conn_name = "ray_default"
    conn_type = "ray"
    hook_name = "Ray"

    def __init__(self, ray_conn_id: str = default_conn_name, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.ray_conn_id = ray_conn_id

    def cluster(self) -> RayCluster:
        return cluster_from(self.get_connection(self.ray_conn_id))

    def get_conn(self) -> Any:
        """A ``ray.job_submission.JobSubmissionClient`` for the cluster."""
        return self.cluster().client()

    @classmethod
    def find(cls, ray_conn_id: str | None) -> RayHook | None:
        """The hook of ``ray_conn_id``, or None when no such connection is defined."""
        from airflow.sdk.exceptions import AirflowNotFoundException

        if not ray_conn_id:
            return None
        try:
            cls.get_connection(ray_conn_id)
        except AirflowNotFoundException:
            return None
        return cls(ray_conn_id)

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        return {
            "hidden-fields": ["login"],
            "relabeling": {"host": "Ray dashboard host", "port": "Dashboard port",
                           "schema": "Scheme (http/https)", "password": "Token"},
            "placeholders": {
                "host": "127.0.0.1", "port": "8265", "schema": "http",
                "extra": json.dumps({"runtime_env": {"env_vars": {"DS_ACCELERATOR": "cpu"}},
                                     "headers": {}}),
            },
        }
