"""The report app on its own (no Airflow), over a real run folder."""

import re

from fastapi.testclient import TestClient

from forgeline import stages
from forgeline.datasets import DatasetConfig
from forgeline.operators import run_name
from forgeline.plugins import create_app
from forgeline.plugins.app import TAB_BUNDLE_ROUTE
from forgeline.runs import RunLayout


def _client(root: str) -> TestClient:
    return TestClient(create_app(lambda dag_id, run_id: root))


def test_serves_the_report_once_built_and_progress_before(tmp_path):
    root = str(tmp_path)
    layout = RunLayout(root, run_name("my_dag", "manual__2026-01-01T00:00:00+00:00"))
    client = _client(root)
    url = "/dags/my_dag/runs/manual__2026-01-01T00:00:00+00:00"

    pending = client.get(f"{url}/report")
    assert pending.status_code == 200 and "Finished stages: none" in pending.text
    assert client.get(f"{url}/run.json").status_code == 404

    stages.prepare(layout, DatasetConfig(max_source_bytes=20_000, window_tokens=32))
    assert "Finished stages: prepare" in client.get(f"{url}/report").text
    stages.report(layout)
    page = client.get(f"{url}/report")
    assert page.status_code == 200 and "<html" in page.text.lower()
    assert "20,000" in page.text  # the dataset summary's source size
    record = client.get(f"{url}/run.json").json()
    assert record["stages"]["prepare"]["source_bytes"] == 20_000


def test_hostile_ids_are_rejected_or_kept_inside_the_root(tmp_path):
    client = _client(str(tmp_path))
    dots = client.get("/dags/../runs/../report")  # normalised away by the HTTP client
    assert dots.status_code == 404
    escaped = client.get("/dags/%2e%2e/runs/%2e%2e/report")
    assert escaped.status_code == 400 and "run_id='..__..'" in escaped.json()["detail"]
    nested = client.get("/dags/a/runs/x%2F..%2F..%2Fetc/report")
    assert nested.status_code in (200, 404)  # 200 only for a folder under the root
    if nested.status_code == 200:
        assert "a__x_.._.._etc" in nested.text


def test_unknown_runs_are_404_and_pending_pages_say_the_real_state(tmp_path):
    def root_for(dag_id: str, run_id: str) -> str:
        if run_id == "nope":
            raise LookupError(run_id)
        return str(tmp_path)

    states = {"r-failed": "failed", "r-running": "running"}
    client = TestClient(create_app(root_for, state_for=lambda d, r: states.get(r)))
    assert client.get("/dags/d/runs/nope/report").status_code == 404
    assert client.get("/dags/d/runs/nope/artifacts/run.json").status_code == 404
    assert "failed</b> before its <code>report</code>" in \
        client.get("/dags/d/runs/r-failed/report").text
    assert "is <b>running</b>" in client.get("/dags/d/runs/r-running/report").text
    assert client.get("/docs").status_code == 404
    assert client.get("/openapi.json").status_code == 404


def test_the_report_links_every_artifact_and_serves_it_inline(tmp_path):
    root = str(tmp_path)
    layout = RunLayout(root, run_name("d", "r"))
    stages.prepare(layout, DatasetConfig(max_source_bytes=20_000, window_tokens=32))
    stages.report(layout)
    client = _client(root)
    page = client.get("/dags/d/runs/r/report").text
    assert '<a href="artifacts/prepare/manifest.json">' in page
    manifest = client.get("/dags/d/runs/r/artifacts/prepare/manifest.json")
    assert manifest.status_code == 200 and manifest.json()["window_tokens"] == 32
    assert manifest.headers["content-disposition"].startswith("inline")
    assert client.get("/dags/d/runs/r/artifacts/prepare/nothing.bin").status_code == 404
    escaped = client.get("/dags/d/runs/r/artifacts/..%2F..%2Fetc%2Fpasswd")
    assert escaped.status_code in (400, 404)


def test_serves_the_report_tab_as_a_self_contained_es_module(tmp_path):
    bundle = _client(str(tmp_path)).get(TAB_BUNDLE_ROUTE)
    assert bundle.status_code == 200
    assert bundle.headers["content-type"].startswith("text/javascript")  # modules need it
    code = bundle.text
    assert "globalThis.AirflowPlugin = ForgelineReport;" in code  # what Airflow's loader reads
    assert "globalThis.React" in code  # Airflow's own React, nothing bundled
    assert re.findall(r"https?:|//[\w-]+\.[\w.-]+", code) == []  # no external URLs
    assert re.findall(r"^\s*(?:import|export)\b|\bimport\(", code, re.M) == []
