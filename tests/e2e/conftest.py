"""A running Airflow deployment and a real Ray head, as a new user would start them.

``airflow db migrate``, then ``api-server``, ``scheduler``, ``dag-processor`` and
``triggerer`` as separate processes on 127.0.0.1 (free ports, a project-local temporary
AIRFLOW_HOME, SQLite + LocalExecutor), and ``ray start --head`` on 127.0.0.1 with free
ports and its own temp dir, registered as the ``ray_default`` connection. ``Deployment``
wraps the REST API calls the tests make.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import httpx
import psutil
import pytest

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
DAG_ID = "forgeline_end_to_end"


def wait_for(what: str, check: Callable[[], Any], timeout_s: float, every_s: float = 1.0) -> Any:
    """Poll ``check`` until it returns something truthy; fail naming ``what``."""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except (httpx.HTTPError, OSError, RuntimeError) as exc:
            last = exc
        if last and not isinstance(last, Exception):
            return last
        time.sleep(every_s)
    raise TimeoutError(f"{what}: not within {timeout_s:.0f} s (last: {last!r})")


@dataclass
class Deployment:
    """The running deployment: REST calls with a JWT, and where things are."""

    home: Path
    api: str
    artifacts: Path
    ray: Any
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)
    token: str = ""
    TINY: ClassVar[dict[str, Any]] = {
        "data_max_source_bytes": 150_000, "data_window_tokens": 64,
        "train_model_preset": "tiny", "train_workers": 1, "train_steps": 30,
        "train_micro_batch_size": 8, "train_eval_samples": 32, "train_lr": 3e-3,
        "train_checkpoint_every_steps": 5, "quantize_calibration_samples": 16,
        "quantize_eval_samples": 32, "quantize_sensitivity": False,
        "quantize_latency_objective": "off"}
    """The conf of a run of a few minutes: tiny model, one Ray Train worker, a checkpoint
    every 5 steps. The latency objective is off: on the tiny model every quantized kernel
    loses to the float op, so it would keep every layer float (the end-to-end DAG test runs
    it on the small model)."""

    def client(self, auth: bool = True) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.token}"} if auth else {}
        return httpx.Client(base_url=self.api, headers=headers, timeout=30)

    def get(self, path: str, **params: Any) -> Any:
        with self.client() as c:
            response = c.get(path, params=params)
        response.raise_for_status()
        return response.json()

    def request(self, method: str, path: str, body: Any) -> httpx.Response:
        with self.client() as c:
            return c.request(method, path, json=body)

    def trigger(self, conf: dict[str, Any], dag_id: str = DAG_ID) -> httpx.Response:
        return self.request("POST", f"/api/v2/dags/{dag_id}/dagRuns",
                            {"logical_date": None, "conf": conf})

    def task_states(self, run_id: str, dag_id: str = DAG_ID) -> dict[str, str | None]:
        tis = self.get(f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances")
        return {ti["task_id"]: ti["state"] for ti in tis["task_instances"]}

    def run_state(self, run_id: str, dag_id: str = DAG_ID) -> str:
        return self.get(f"/api/v2/dags/{dag_id}/dagRuns/{run_id}")["state"]

    def wait_run(self, run_id: str, timeout_s: float, dag_id: str = DAG_ID) -> str:
        return wait_for(f"run {run_id} to end",
                        lambda: (s := self.run_state(run_id, dag_id)) in ("success", "failed")
                        and s, timeout_s, every_s=2)

    def task_log(self, run_id: str, task_id: str, try_number: int = 1) -> str:
        path = (f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/{task_id}/logs/"
                f"{try_number}")
        with self.client() as c:
            response = c.get(path, params={"full_content": True},
                             headers={"Accept": "application/json"})
        response.raise_for_status()
        content = response.json()["content"]
        if isinstance(content, str):
            return content
        return "\n".join(json.dumps(e) if not isinstance(e, str) else e for e in content)

    wait_for = staticmethod(wait_for)

    def ray_cluster(self) -> Any:
        from forgeline.ray.jobs import RayCluster

        return RayCluster(self.ray.address)

    def pids(self, name: str) -> set[int]:
        """The pid of deployment process ``name`` and all its descendants."""
        proc = psutil.Process(self.processes[name].pid)
        return {proc.pid, *(c.pid for c in proc.children(recursive=True))}


def _env(home: Path, api_port: int, ray_address: str, artifacts: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("AIRFLOW", "FORGELINE_", "RAY_ADDRESS"))}
    host, port = ray_address.rsplit("//", 1)[1].split(":")
    ray_conn = {"conn_type": "ray", "host": host, "port": int(port), "schema": "http",
                "extra": {"runtime_env": {"env_vars": {"DS_ACCELERATOR": "cpu"}}}}
    env.update(
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        PYTHONPATH=os.pathsep.join([str(REPO / "src"), env.get("PYTHONPATH", "")]).rstrip(
            os.pathsep),
        AIRFLOW_HOME=str(home),
        AIRFLOW__CORE__DAGS_FOLDER=str(REPO / "dags"),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__CORE__EXECUTOR="LocalExecutor",
        AIRFLOW__CORE__PARALLELISM="4",
        AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=f"sqlite:///{home}/airflow.db",
        AIRFLOW__API__HOST="127.0.0.1",
        AIRFLOW__API__PORT=str(api_port),
        AIRFLOW__API__BASE_URL=f"http://127.0.0.1:{api_port}",
        AIRFLOW__API__WORKERS="1",
        # the API server's first execution-API answers can take long on a busy machine
        AIRFLOW__WORKERS__EXECUTION_API_TIMEOUT="120",
        AIRFLOW__CORE__EXECUTION_API_SERVER_URL=f"http://127.0.0.1:{api_port}/execution/",
        AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS="admin:admin",
        AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE=str(home / "passwords.json"),
        AIRFLOW__API_AUTH__JWT_SECRET="forgeline-deployment-test-" + "0123456789abcdef" * 3,
        AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL="5",
        AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL="600",
        AIRFLOW__DAG_PROCESSOR__DAG_FILE_PROCESSOR_TIMEOUT="120",
        AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT="120",
        AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC="2",
        AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT="600",
        AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC="2",
        AIRFLOW__LOGGING__LOGGING_LEVEL="INFO",
        AIRFLOW_CONN_RAY_DEFAULT=json.dumps(ray_conn),
        FORGELINE_ARTIFACT_ROOT=str(artifacts),
        DS_ACCELERATOR="cpu",
        RAY_USAGE_STATS_ENABLED="0",
        RAY_AUTH_MODE="disabled",  # this test head runs without token auth
    )
    return env


def start(base: Path, ray: Any, free_ports: Callable[[int], list[int]],
          kill_tree: Callable[..., None]) -> Deployment:
    """Start Ray and the four Airflow processes; return once the API answers with a token
    and the end-to-end DAG is parsed and unpaused."""
    home, artifacts = base / "airflow", base / "artifacts"
    home.mkdir(parents=True)
    artifacts.mkdir()
    (api_port,) = free_ports(1)
    deployment = Deployment(home=home, api=f"http://127.0.0.1:{api_port}",
                            artifacts=artifacts, ray=ray)
    try:
        env = _env(home, api_port, ray.address, artifacts)
        airflow = str(BIN / "airflow")
        subprocess.run([airflow, "db", "migrate"], env=env, check=True, capture_output=True,
                       timeout=300)
        for name in ("api-server", "scheduler", "dag-processor", "triggerer"):
            out = open(home / f"{name}.log", "wb")  # noqa: SIM115 — open while it runs
            deployment.processes[name] = subprocess.Popen(
                [airflow, name], env=env, stdout=out, stderr=subprocess.STDOUT)
        _ready(deployment)
    except BaseException:
        stop(deployment, kill_tree)
        raise
    return deployment


def _ready(deployment: Deployment) -> None:
    home = deployment.home
    wait_for("the API server", lambda: httpx.get(f"{deployment.api}/api/v2/monitor/health",
                                                 timeout=5).status_code == 200, 600)
    password = json.loads((home / "passwords.json").read_text())["admin"]
    response = httpx.post(f"{deployment.api}/auth/token",
                          json={"username": "admin", "password": password}, timeout=30)
    response.raise_for_status()
    deployment.token = response.json()["access_token"]
    for dag_id in (DAG_ID, "forgeline_model_registry"):
        wait_for(f"DAG {dag_id} parsed", lambda d=dag_id: deployment.request(
            "GET", f"/api/v2/dags/{d}", None).status_code == 200, 240, every_s=3)
        deployment.request("PATCH", f"/api/v2/dags/{dag_id}", {"is_paused": False}) \
            .raise_for_status()


def stop(deployment: Deployment, kill_tree: Callable[..., None]) -> None:
    """Stop the Airflow processes (and their children: task workers, parse processes)."""
    alive = []
    for proc in deployment.processes.values():
        if proc.poll() is None:
            with contextlib.suppress(psutil.NoSuchProcess):
                alive.append(psutil.Process(proc.pid))
    kill_tree(*alive)


@pytest.fixture(scope="session")
def deployment(ray_head, deployment_tools) -> Deployment:
    """One running Airflow deployment on the session's Ray head, shared by the deployment
    and browser tests."""
    free_ports, kill_tree = deployment_tools
    os.environ["RAY_AUTH_MODE"] = "disabled"  # for this process's job client too
    base = REPO / ".forgeline" / f"test-deployment-{os.getpid()}"
    shutil.rmtree(base, ignore_errors=True)
    running = start(base, ray_head, free_ports, kill_tree)
    try:
        yield running
    finally:
        stop(running, kill_tree)
        if os.environ.get("FORGELINE_KEEP_DEPLOYMENT") != "1":
            shutil.rmtree(base, ignore_errors=True)


def _has_report(deployment: Deployment, run_id: str) -> bool:
    from forgeline.operators import run_name
    from forgeline.runs import RunLayout

    layout = RunLayout(str(deployment.artifacts), run_name(DAG_ID, run_id))
    with contextlib.suppress(Exception):  # no run record yet
        return "report" in layout.load()["stages"]
    return False


@pytest.fixture(scope="session")
def successful_run(deployment) -> str:
    """A successful run of the end-to-end DAG that wrote its report: the newest one, else a
    tiny one run now. (The trigger-form test's run, marked failed right after it appeared,
    was once seen ending "success" with no stage run, and its tab has no report.)"""
    runs = deployment.get(f"/api/v2/dags/{DAG_ID}/dagRuns", state=["success"])["dag_runs"]
    for run in sorted(runs, key=lambda r: r.get("queued_at") or "", reverse=True):
        if _has_report(deployment, run["dag_run_id"]):
            return run["dag_run_id"]
    response = deployment.trigger(Deployment.TINY)
    response.raise_for_status()
    run_id = response.json()["dag_run_id"]
    assert deployment.wait_run(run_id, 1200) == "success", deployment.task_states(run_id)
    return run_id
