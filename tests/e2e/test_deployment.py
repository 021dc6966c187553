"""The end-to-end DAG on a running deployment (api-server, scheduler, dag-processor and
triggerer as separate processes; a real Ray head as the ``ray_default`` connection), driven
through the REST API as a user would."""

from __future__ import annotations

import json
import re
import time
from datetime import datetime

import psutil
import pytest

from forgeline.checkpoint import committed_steps
from forgeline.operators import run_name
from forgeline.ray.jobs import StageJob
from forgeline.runs import RunLayout
from forgeline.train.config import TrainOptions

pytestmark = pytest.mark.slow

def _submission_id(deployment, run_id: str, attempt: int, stage: str = "train") -> str:
    layout = RunLayout(str(deployment.artifacts), run_name("forgeline_end_to_end", run_id))
    return StageJob(stage, layout, TrainOptions(), attempt).submission_id()


def _trigger(deployment, conf: dict) -> str:
    response = deployment.trigger(conf)
    assert response.status_code == 200, response.text
    return response.json()["dag_run_id"]


def _job_status(client, sid: str) -> str | None:
    try:
        return str(client.get_job_status(sid).value)
    except RuntimeError:
        return None


def _wait_deferred_and_running(deployment, client, run_id: str, sid: str) -> None:
    deployment.wait_for("train deferred", lambda: deployment.task_states(run_id)
                        .get("train") == "deferred", 600, every_s=2)
    deployment.wait_for("its Ray job RUNNING", lambda: _job_status(client, sid) == "RUNNING",
                        300, every_s=1)


def _print_timeline(deployment, run_id: str) -> None:
    """Each task's try, state and seconds (measured, not gated): where a run's time went."""
    tis = deployment.get(f"/api/v2/dags/forgeline_end_to_end/dagRuns/{run_id}/taskInstances")
    for ti in sorted(tis["task_instances"], key=lambda t: t.get("start_date") or ""):
        took = ti.get("duration")
        print(f"  {ti['task_id']:<9} try {ti['try_number']} {ti['state']:<8} "
              f"{ti.get('start_date') or '-':<34} {took if took is None else round(took, 1)} s")


def _ancestors(pid: int) -> set[int]:
    return {p.pid for p in psutil.Process(pid).parents()}


def test_bad_conf_fails_fast_naming_every_bad_field(deployment):
    # a value outside a Param's schema (an enum, a bound) is refused by Airflow at trigger
    for field, value in (("train_model_preset", "huge"), ("quantize_scheme", "int3_magic")):
        refused = deployment.trigger({field: value})
        assert refused.status_code == 400 and field in refused.text
    # the rest is caught by the validate task, all at once, before any stage runs
    bad = {"stepz": 3, "quantize_schem": "int4_rtn", "data_source": "/nonexistent/*.txt",
           "artifact_root": "/proc/forgeline-cannot-write"}
    run_id = _trigger(deployment, bad)
    assert deployment.wait_run(run_id, 120) == "failed"
    run = deployment.get(f"/api/v2/dags/forgeline_end_to_end/dagRuns/{run_id}")
    took_s = (datetime.fromisoformat(run["end_date"])
              - datetime.fromisoformat(run["queued_at"])).total_seconds()
    print(f"bad trigger → failed in {took_s:.1f} s")  # measured, not gated (shared machine)
    states = deployment.task_states(run_id)
    assert states["validate"] == "failed"
    assert states["prepare"] == "upstream_failed" and states["train"] == "upstream_failed"
    log = deployment.task_log(run_id, "validate")
    for field in bad:
        assert re.search(rf"invalid: {field}\b", log), field


def test_mark_failed_stops_the_ray_job(deployment):
    client = deployment.ray_cluster().client()
    run_id = _trigger(deployment, {**deployment.TINY, "train_steps": 5000})
    sid = _submission_id(deployment, run_id, 1)
    _wait_deferred_and_running(deployment, client, run_id, sid)
    patch = deployment.request(
        "PATCH", f"/api/v2/dags/forgeline_end_to_end/dagRuns/{run_id}/taskInstances/train",
        {"new_state": "failed"})
    assert patch.status_code == 200, patch.text
    deployment.wait_for("the Ray job STOPPED", lambda: _job_status(client, sid) == "STOPPED",
                        120, every_s=1)
    assert deployment.wait_run(run_id, 120) == "failed"
    assert _job_status(client, _submission_id(deployment, run_id, 2)) is None  # no retry


def test_deferred_train_on_ray_resumes_after_a_kill_and_the_run_publishes(deployment):
    client = deployment.ray_cluster().client()
    started = time.monotonic()
    run_id = _trigger(deployment, deployment.TINY)
    first = _submission_id(deployment, run_id, 1)
    _wait_deferred_and_running(deployment, client, run_id, first)
    print(f"train deferred, its job RUNNING after {time.monotonic() - started:.1f} s")

    # the job's driver runs under Ray, not under an Airflow process
    driver = deployment.wait_for("the job's driver", lambda: client.get_job_info(first)
                                 .driver_info, 120, every_s=1)
    assert driver.pid
    airflow_pids = set().union(*(deployment.pids(n) for n in deployment.processes))
    assert int(driver.pid) not in airflow_pids
    assert not _ancestors(int(driver.pid)) & airflow_pids
    assert _ancestors(int(driver.pid)) & {p.pid for p in deployment.ray.processes()}

    # kill the job once it committed a checkpoint; the retry resumes from that step
    layout = RunLayout(str(deployment.artifacts), run_name("forgeline_end_to_end", run_id))
    checkpoints = f"{layout.stage_url('train')}/checkpoints"
    steps = deployment.wait_for("a committed checkpoint", lambda: committed_steps(checkpoints)
                                if _exists(checkpoints) else None, 600, every_s=1)
    client.stop_job(first)
    killed_at = max(steps)
    print(f"killed after {time.monotonic() - started:.1f} s")
    assert deployment.wait_run(run_id, 1200) == "success", deployment.task_states(run_id)
    print(f"run succeeded after {time.monotonic() - started:.1f} s")
    _print_timeline(deployment, run_id)
    retry = _submission_id(deployment, run_id, 2)
    assert _job_status(client, first) == "STOPPED"
    assert _job_status(client, retry) == "SUCCEEDED"
    # the search stage's trials ran on Ray too, as a job of their own
    assert _job_status(client, _submission_id(deployment, run_id, 1, "search")) == "SUCCEEDED"
    resumed = layout.load()["stages"]["train"]["resumed_from_step"]  # the retry's result
    print(f"killed after committed step {killed_at}; retry resumed from {resumed}")
    assert resumed is not None and resumed >= killed_at

    _check_train_log(deployment, run_id)
    _check_assets(deployment, run_id)
    _check_report_tab(deployment, run_id)


def _exists(url: str) -> bool:
    from forgeline import storage

    return storage.exists(url)


def _check_train_log(deployment, run_id: str) -> None:
    """The Ray job's log is tailed into the train task's log; count its lines and errors."""
    log = deployment.task_log(run_id, "train", 2)
    lines = [line for line in log.splitlines() if line.strip()]
    errors = [line for line in lines if '"level": "error"' in line or '"level":"error"' in line]
    print(f"train task log (try 2): {len(lines)} lines, {len(errors)} at ERROR")
    assert any("[ray job]" in line for line in lines)
    assert any(re.search(r"step \d+/\d+", line) for line in lines)
    assert "\x1b[" not in log


def _check_assets(deployment, run_id: str) -> None:
    events = deployment.get("/api/v2/assets/events", source_dag_id="forgeline_end_to_end",
                            source_run_id=run_id)["asset_events"]
    by_name = {}
    for event in events:
        asset = deployment.get(f"/api/v2/assets/{event['asset_id']}")
        by_name[asset["name"]] = event["extra"]
    assert set(by_name) == {"forgeline_dataset", "forgeline_model", "forgeline_quantized_model"}
    quantized = by_name["forgeline_quantized_model"]
    assert quantized["val_ppl_quantized"] > 0 and quantized["stored_bytes"] > 0
    assert sum(quantized["scheme_counts"].values()) > 0 and quantized["size_ratio"] > 1
    assert by_name["forgeline_model"]["val_ppl_after"] > 0
    assert by_name["forgeline_dataset"]["train_samples"] > 0
    # the registry DAG is scheduled on the quantized model and records it
    record = deployment.artifacts / "registry" / f"{quantized['forgeline_run_id']}.json"
    deployment.wait_for("the registry DAG's record", record.exists, 300, every_s=2)
    assert json.loads(record.read_text())["scheme_counts"] == quantized["scheme_counts"]


def _check_report_tab(deployment, run_id: str) -> None:
    path = f"/forgeline/dags/forgeline_end_to_end/runs/{run_id}/report"
    with deployment.client() as c:
        page = c.get(path)
    assert page.status_code == 200 and "forgeline" in page.text.lower()
    with deployment.client(auth=False) as c:
        assert c.get(path).status_code == 401
        assert c.get("/forgeline/docs").status_code in (401, 404)
        assert c.get("/forgeline/openapi.json").status_code in (401, 404)
    with deployment.client() as c:
        assert c.get("/forgeline/dags/forgeline_end_to_end/runs/no-such-run/report") \
            .status_code == 404
