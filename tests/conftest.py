"""Shared fixtures: one real local Ray cluster and one real Airflow metastore per session.

Airflow reads its configuration at import time, so its environment is set here, before any
test module imports it: a throwaway AIRFLOW_HOME (SQLite metastore) and this repo's dags/.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

REPO = Path(__file__).resolve().parents[1]
_AIRFLOW_HOME = tempfile.mkdtemp(prefix="forgeline-airflow-")
_BUNDLES = [
    {"name": "dags-folder", "classpath": "airflow.dag_processing.bundles.local.LocalDagBundle",
     "kwargs": {}},
    {"name": "forgeline-tests", "classpath": "airflow.dag_processing.bundles.local.LocalDagBundle",
     "kwargs": {"path": str(REPO / "tests" / "operators" / "dags")}},
]
os.environ.update(
    AIRFLOW_HOME=_AIRFLOW_HOME,
    AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST=json.dumps(_BUNDLES),
    AIRFLOW__CORE__DAGS_FOLDER=str(REPO / "dags"),
    AIRFLOW__CORE__LOAD_EXAMPLES="False",
    AIRFLOW__CORE__UNIT_TEST_MODE="False",
    DS_ACCELERATOR="cpu",
    RAY_USAGE_STATS_ENABLED="0",
)
os.environ.pop("FORGELINE_ARTIFACT_ROOT", None)


@pytest.fixture(scope="session")
def airflow_db() -> str:
    """A migrated Airflow metastore (SQLite) for ``dag.test()``."""
    airflow = Path(sys.executable).with_name("airflow")
    subprocess.run([str(airflow), "db", "migrate"], check=True, capture_output=True)
    return _AIRFLOW_HOME


@pytest.fixture(scope="session")
def ray_cluster():
    """A real local Ray cluster of its own (never one already running here) with 2 CPUs."""
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory):
    """A small real dataset built from the built-in corpus (first 300 kB of the stdlib)."""
    from forgeline.datasets import DatasetConfig, build_dataset

    out = tmp_path_factory.mktemp("tiny-dataset")
    config = DatasetConfig(max_source_bytes=300_000, window_tokens=64, samples_per_shard=1500,
                           rows_per_group=64)
    return build_dataset(config, f"file://{out}")


def free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _kill_tree(proc: psutil.Process) -> None:
    try:
        family = [*proc.children(recursive=True), proc]
    except psutil.NoSuchProcess:
        return
    for p in family:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.terminate()
    _, alive = psutil.wait_procs(family, timeout=10)
    for p in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill()


@dataclass
class RayHead:
    """``ray start --head`` on loopback with its own temp dir; stopped by killing exactly the
    processes that run under that temp dir (``ray stop`` would stop every Ray on the box)."""

    temp_dir: Path
    gcs_port: int = 0
    dashboard_port: int = 0

    def start(self, env: dict[str, str]) -> None:
        (self.gcs_port, self.dashboard_port, client, node, obj, agent, agent_grpc, metrics,
         runtime) = free_ports(9)
        worker_lo = 20000 + (os.getpid() % 200) * 100
        ray = str(Path(sys.executable).with_name("ray"))
        cmd = [ray, "start", "--head", "--node-ip-address", "127.0.0.1",
               "--port", str(self.gcs_port), "--dashboard-host", "127.0.0.1",
               "--dashboard-port", str(self.dashboard_port), "--include-dashboard", "true",
               "--ray-client-server-port", str(client), "--node-manager-port", str(node),
               "--object-manager-port", str(obj), "--dashboard-agent-listen-port", str(agent),
               "--dashboard-agent-grpc-port", str(agent_grpc),
               "--metrics-export-port", str(metrics), "--runtime-env-agent-port", str(runtime),
               "--min-worker-port", str(worker_lo), "--max-worker-port", str(worker_lo + 99),
               "--num-cpus", "4", "--temp-dir", str(self.temp_dir), "--disable-usage-stats"]
        try:
            subprocess.run(cmd, env=env, check=True, capture_output=True, timeout=180)
        except BaseException:
            self.stop()
            raise

    @property
    def address(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    def processes(self) -> list[psutil.Process]:
        mine = []
        for p in psutil.process_iter(["cmdline"]):
            if str(self.temp_dir) in " ".join(p.info["cmdline"] or []):
                mine.append(p)
        return mine

    def stop(self) -> None:
        for p in self.processes():
            _kill_tree(p)
        shutil.rmtree(self.temp_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def deployment_tools():
    """(free_ports, kill_tree) for fixtures that start processes."""
    return free_ports, _kill_tree


@pytest.fixture(scope="session")
def ray_head():
    """A real Ray head (``ray start --head``) with the dashboard's job-submission API, on
    127.0.0.1 with free ports and its own temp dir; shared by the session."""
    head = RayHead(Path(f"/tmp/airflow-ray-{os.getpid()}"))
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    head.start({**os.environ, "PATH": path, "RAY_AUTH_MODE": "disabled"})
    yield head
    head.stop()


@pytest.fixture(scope="session")
def ray_job_cluster(ray_head):
    """``forgeline.ray.jobs.RayCluster`` of the session's Ray head."""
    from forgeline.ray.jobs import RayCluster

    os.environ["RAY_AUTH_MODE"] = "disabled"
    return RayCluster(ray_head.address)
