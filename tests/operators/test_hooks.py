"""The ``ray`` connection type: an ``AIRFLOW_CONN_RAY_DEFAULT``-style JSON connection read by
real Airflow into the cluster forgeline submits to."""

import json

from forgeline.operators.hooks import RayHook


def test_the_documented_json_connection_gives_the_cluster(monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_RAY_DEFAULT", json.dumps({
        "conn_type": "ray", "host": "127.0.0.1", "port": 8265, "schema": "http",
        "password": "s3cret-token",
        "extra": {"runtime_env": {"env_vars": {"DS_ACCELERATOR": "cpu"}},
                  "headers": {"X-Team": "ml"}, "verify": False}}))
    hook = RayHook.find("ray_default")
    assert hook is not None and hook.ray_conn_id == RayHook.default_conn_name
    cluster = hook.cluster()
    assert cluster.address == "http://127.0.0.1:8265"
    assert cluster.headers == {"X-Team": "ml", "Authorization": "Bearer s3cret-token"}
    assert cluster.runtime_env == {"env_vars": {"DS_ACCELERATOR": "cpu"}}
    assert cluster.verify is False
    assert cluster.job_url("j1") == "http://127.0.0.1:8265/#/jobs/j1"


def test_no_connection_means_embedded(monkeypatch):
    monkeypatch.delenv("AIRFLOW_CONN_RAY_DEFAULT", raising=False)
    assert RayHook.find("ray_default") is None
    assert RayHook.find(None) is None


def test_a_full_url_as_host_is_kept(monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_RAY_X", json.dumps(
        {"conn_type": "ray", "host": "https://ray.example.internal:443"}))
    assert RayHook("ray_x").cluster().address == "https://ray.example.internal:443"
