"""The plugin inside Airflow's real API server app: discovery, mounting, auth, root lookup."""

from pathlib import Path
from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient

TEST_DAGS = Path(__file__).parents[1] / "operators" / "dags"


def _plugin_info() -> dict:
    from airflow import plugins_manager

    return {p["name"]: p for p in plugins_manager.get_plugin_info()}["forgeline"]


def test_airflow_discovers_the_plugin_and_its_tab():
    info = _plugin_info()
    assert info["fastapi_apps"][0]["url_prefix"] == "/forgeline"
    (tab,) = info["react_apps"]
    assert (tab["name"], tab["destination"], tab["url_route"]) == \
        ("forgeline report", "dag_run", "forgeline-report")
    assert not tab["bundle_url"].startswith("/")  # relative to the UI's base URL
    # external views with a url_route are iframes, which is what the React tab replaces
    assert [v for v in info["external_views"] if v.get("url_route")] == []


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
    bundle = api.get("/" + _plugin_info()["react_apps"][0]["bundle_url"])  # the tab's module
    assert bundle.status_code == 200 and "globalThis.AirflowPlugin" in bundle.text


def test_reports_need_airflow_credentials(dag_run, monkeypatch):
    api = _api(monkeypatch, all_admins=False)
    url = f"/forgeline/dags/{dag_run.dag_id}/runs/{quote(dag_run.run_id, safe='')}/report"
    assert api.get(url).status_code in (401, 403)
    assert api.get("/" + _plugin_info()["react_apps"][0]["bundle_url"]).status_code in (401, 403)


def test_unknown_runs_are_404_and_there_are_no_open_api_docs(dag_run, monkeypatch):
    api = _api(monkeypatch, all_admins=True)
    assert api.get(f"/forgeline/dags/{dag_run.dag_id}/runs/no-such-run/report") \
        .status_code == 404
    assert api.get("/forgeline/docs").status_code == 404
    assert api.get("/forgeline/openapi.json").status_code == 404
    anonymous = _api(monkeypatch, all_admins=False)
    assert anonymous.get("/forgeline/docs").status_code in (401, 403, 404)
