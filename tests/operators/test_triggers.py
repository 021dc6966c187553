"""``RayJobTrigger`` against a real Ray head: serialization, status, logs, on_kill."""

from __future__ import annotations

import asyncio
import json
import logging

import pytest

from forgeline.operators.triggers import RayJobTrigger, _level


def test_serialize_round_trips():
    trigger = RayJobTrigger("ray_x", "forgeline-r-train-try2", poll_interval_s=0.5)
    path, kwargs = trigger.serialize()
    assert path == "forgeline.operators.triggers.RayJobTrigger"
    again = RayJobTrigger(**kwargs)
    assert (again.ray_conn_id, again.submission_id, again.poll_interval_s) == \
        ("ray_x", "forgeline-r-train-try2", 0.5)


def test_log_lines_keep_their_level():
    assert _level("2026-12-01 22:33:07,837\tINFO job_manager.py:581 -- up") == logging.INFO
    assert _level("(Ctl pid=1) [2026-12-01 22:35:47,431 E 1 2] core_worker.cc:1: x") \
        == logging.ERROR
    assert _level("2026-12-01 22:33:07,837\tWARNING worker.py:1 -- slow") == logging.WARNING
    assert _level("(RayTrainWorker pid=1) step 10/30 loss 3.2") == logging.INFO


@pytest.fixture
def ray_conn(ray_job_cluster, monkeypatch) -> str:
    host, port = ray_job_cluster.address.rsplit("//", 1)[1].split(":")
    monkeypatch.setenv("AIRFLOW_CONN_RAY_TEST", json.dumps(
        {"conn_type": "ray", "host": host, "port": int(port), "schema": "http"}))
    return "ray_test"


async def _first_event(trigger: RayJobTrigger):
    async for event in trigger.run():
        return event.payload
    return None


@pytest.mark.slow
def test_fires_once_with_the_final_status_and_tails_the_logs(ray_job_cluster, ray_conn,
                                                             caplog):
    client = ray_job_cluster.client()
    sid = client.submit_job(entrypoint="echo forgeline-hello && exit 3")
    trigger = RayJobTrigger(ray_conn, sid, poll_interval_s=0.5)
    with caplog.at_level(logging.INFO):
        event = asyncio.run(_first_event(trigger))
    assert event["status"] == "FAILED" and event["submission_id"] == sid
    assert "exit code 3" in event["message"] or event["message"]
    assert any("forgeline-hello" in r.getMessage() for r in caplog.records)


@pytest.mark.slow
def test_on_kill_stops_the_job(ray_job_cluster, ray_conn):
    import time

    client = ray_job_cluster.client()
    sid = client.submit_job(entrypoint="sleep 300")
    deadline = time.monotonic() + 60
    while str(client.get_job_status(sid).value) != "RUNNING" and time.monotonic() < deadline:
        time.sleep(0.5)
    asyncio.run(RayJobTrigger(ray_conn, sid).on_kill())
    while str(client.get_job_status(sid).value) != "STOPPED" and time.monotonic() < deadline:
        time.sleep(0.5)
    assert str(client.get_job_status(sid).value) == "STOPPED"
