"""The plugin inside Airflow's real API server app: discovery, mounting, auth, root lookup."""

from pathlib import Path
from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient

TEST_DAGS = Path(__file__).parents[1] / "operators" / "dags"


def test_airflow_discovers_the_plugin_and_its_views():
    from airflow import plugins_manager

    info = {p["name"]: p for p in plugins_manager.get_plugin_info()}["forgeline"]
    assert info["fastapi_apps"][0]["url_prefix"] == "/forgeline"
    view = info["external_views"][0]
    assert view["destination"] == "dag_run" and "{RUN_ID}" in view["href"]
    assert not view["href"].startswith("/")  # relative, as the Airflow UI requires


def _api(monkeypatch, all_admins: bool) -> TestClient:
    monkeypatch.setenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS", str(all_admins))
    from airflow.api_fastapi.app import create_app

    return TestClient(create_app())


@pytest.fixture(scope="module")
def dag_run(airflow_db, tmp_path_factory):
    from airflow.dag_processing.dagbag import DagBag

    root = tmp_path_factory.mktemp("plugin-root")
    dag = DagBag(str(TEST_DAGS)).get_dag("forgeline_test_report")
    run = dag.test(run_conf={"artifact_root": str(root)})
    assert str(run.state) == "success"
    return run


def test_report_of_a_real_dag_run_is_served_under_forgeline(dag_run, monkeypatch):
    api = _api(monkeypatch, all_admins=True)
    url = f"/forgeline/dags/{dag_run.dag_id}/runs/{quote(dag_run.run_id, safe='')}"
    page = api.get(f"{url}/report")
    assert page.status_code == 200 and "20,000" in page.text  # found via the run's conf
    assert api.get(f"{url}/run.json").json()["stages"]["prepare"]["window_tokens"] == 32


def test_reports_need_airflow_credentials(dag_run, monkeypatch):
    api = _api(monkeypatch, all_admins=False)
    url = f"/forgeline/dags/{dag_run.dag_id}/runs/{quote(dag_run.run_id, safe='')}/report"
    assert api.get(url).status_code in (401, 403)


def test_unknown_runs_are_404_and_there_are_no_open_api_docs(dag_run, monkeypatch):
    api = _api(monkeypatch, all_admins=True)
    assert api.get(f"/forgeline/dags/{dag_run.dag_id}/runs/no-such-run/report") \
        .status_code == 404
    assert api.get("/forgeline/docs").status_code == 404
    assert api.get("/forgeline/openapi.json").status_code == 404
    anonymous = _api(monkeypatch, all_admins=False)
    assert anonymous.get("/forgeline/docs").status_code in (401, 403, 404)
