"""``RayJobTrigger``: follow a Ray job from Airflow's triggerer until it ends.

Polls the job's status asynchronously, tails its logs into the task's log (ANSI colour
codes stripped; a line's level is the one it names, else INFO), and fires one event with
the final status. A user action on the deferred task ("mark failed", clear) stops the job
(``on_kill``).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
_LEVEL = re.compile(r"\b(ERROR|WARNING|WARN|CRITICAL)\b|\[\d{4}-\d\d-\d\d [\d:,.]+ ([EW]) ")
"""A Ray/Python log line's level near its start (``… ERROR …``, glog's ``[… E …]``)."""


def _level(line: str) -> int:
    import logging

    match = _LEVEL.search(line[:80])
    if match is None:
        return logging.INFO
    word = match.group(1) or match.group(2)
    return logging.ERROR if word in ("ERROR", "CRITICAL", "E") else logging.WARNING


def _status(value: Any) -> str:
    return str(getattr(value, "value", value))


class RayJobTrigger(BaseTrigger):
    """Wait for Ray job ``submission_id`` on the cluster of connection ``ray_conn_id``."""

    def __init__(self, ray_conn_id: str, submission_id: str, poll_interval_s: float = 2.0):
        super().__init__()
        self.ray_conn_id, self.submission_id = ray_conn_id, submission_id
        self.poll_interval_s = poll_interval_s

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (f"{type(self).__module__}.{type(self).__qualname__}",
                {"ray_conn_id": self.ray_conn_id, "submission_id": self.submission_id,
                 "poll_interval_s": self.poll_interval_s})

    async def _cluster(self) -> Any:
        from forgeline.operators.hooks import RayHook, cluster_from

        return cluster_from(await RayHook.aget_connection(self.ray_conn_id))

    async def _tail(self, client: Any) -> None:
        async for chunk in client.tail_job_logs(self.submission_id):
            for line in _ANSI.sub("", chunk).splitlines():
                if line.strip():
                    self.log.log(_level(line), "[ray job] %s", line)

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from forgeline.ray.jobs import TERMINAL

        cluster = await self._cluster()
        client = await asyncio.to_thread(cluster.client)
        tail = asyncio.create_task(self._tail(client))
        try:
            while True:
                status = _status(await asyncio.to_thread(client.get_job_status,
                                                         self.submission_id))
                if status in TERMINAL:
                    break
                await asyncio.sleep(self.poll_interval_s)
            with contextlib.suppress(Exception):  # the log stream ends with the job
                await asyncio.wait_for(asyncio.shield(tail), timeout=10)
            info = await asyncio.to_thread(client.get_job_info, self.submission_id)
            yield TriggerEvent({"status": status, "submission_id": self.submission_id,
                                "message": info.message or ""})
        finally:
            tail.cancel()

    async def on_kill(self) -> None:
        """The user acted on the task: stop its Ray job."""
        from forgeline.ray.jobs import stop_job

        cluster = await self._cluster()
        stopped = await asyncio.to_thread(stop_job, cluster, self.submission_id)
        self.log.info("stopped Ray job %s (%s)", self.submission_id,
                      "was running" if stopped else "had already ended")
