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
    # Airflow's generated secret is 16 random bytes; PyJWT warns below 64 for HS512
    AIRFLOW__API_AUTH__JWT_SECRET="forgeline-tests-" + "0123456789abcdef" * 4,
    DS_ACCELERATOR="cpu",
    RAY_USAGE_STATS_ENABLED="0",
    # Ray Train's controller polls its workers every 2 s and takes a report only at a poll;
    # the tests' runs last seconds, so poll more often (Ray passes it on to the controller)
    RAY_TRAIN_HEALTH_CHECK_INTERVAL_S="0.5",
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


@dataclass
class TwoWorkerRun:
    """An uninterrupted 2-worker ZeRO-2 run with forgeline checkpoints."""

    options: object
    result: object
    folder: Path
    metrics_url: str


@pytest.fixture(scope="session")
def two_worker_run(ray_cluster, tiny_dataset, tmp_path_factory) -> TwoWorkerRun:
    """24 steps of the tiny model on 2 Ray Train workers (ZeRO-2), a checkpoint every 8:
    the training test's subject and the killed-worker test's uninterrupted reference."""
    from forgeline.train import TrainOptions, run_training

    options = TrainOptions(model_size="tiny", workers=2, zero_stage=2, steps=24,
                           micro_batch_size=8, lr=3e-3, eval_samples=32,
                           checkpoint_every_steps=8, checkpoint_keep_last=2, max_failures=1)
    tmp = tmp_path_factory.mktemp("two-worker-run")
    metrics_url = f"file://{tmp}/metrics.jsonl"
    result = run_training(options.to_config(tiny_dataset.manifest_url), f"file://{tmp}/train",
                          metrics_url)
    return TwoWorkerRun(options, result, tmp / "train", metrics_url)


@dataclass
class TinyDagRun:
    """One tiny run of the end-to-end DAG (``dag.test()``), exported afterwards."""

    dag_run: object
    run_dir: Path

    @property
    def layout(self):
        from forgeline.runs import RunLayout

        return RunLayout(f"file://{self.run_dir.parent.parent}", self.run_dir.name)

    @property
    def run(self) -> dict:
        return json.loads((self.run_dir / "run.json").read_text())


TINY_DAG_CONF = {
    "data_max_source_bytes": 200_000, "data_window_tokens": 64, "train_model_preset": "tiny",
    "train_steps": 12, "train_micro_batch_size": 8, "train_eval_samples": 32,
    "train_lr": 3e-3, "train_checkpoint_every_steps": 6, "train_cache_mode": "on",
    "quantize_calibration_samples": 16, "quantize_eval_samples": 16,
}
"""Every stage on, the cache and checkpoints too, as small as still says something."""


@pytest.fixture(scope="session")
def tiny_dag_run(airflow_db, ray_cluster, tmp_path_factory) -> TinyDagRun:
    """The end-to-end DAG through real Airflow, Ray and DeepSpeed on a tiny model, then the
    export stage; shared by the DAG, report and export tests (one run, several readers)."""
    from airflow.dag_processing.dagbag import DagBag

    from forgeline.stages import run_stage

    root = tmp_path_factory.mktemp("tiny-dag-run")
    dag = DagBag().get_dag("forgeline_end_to_end")
    dag_run = dag.test(run_conf={**TINY_DAG_CONF, "artifact_root": str(root)})
    assert str(dag_run.state) == "success"
    done = TinyDagRun(dag_run, next((root / "runs").iterdir()))
    run_stage("export", done.layout, {})
    return done


def free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _kill_tree(*procs: psutil.Process) -> None:
    """Terminate these processes and all their children at once; kill what is left after
    10 s."""
    family: list[psutil.Process] = []
    for proc in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            family += [*proc.children(recursive=True), proc]
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
        tries = 3  # Ray waits only 30 s for its raylet to register: retry on a busy machine
        for _ in range(tries):
            done = subprocess.run(self._command(), env=env, capture_output=True, text=True,
                                  timeout=300)
            if done.returncode == 0:
                return
            self.stop()
        raise RuntimeError(f"ray start failed {tries} times: {done.stderr[-2000:]}")

    def _command(self) -> list[str]:
        """``ray start`` on fresh free ports. The workers' 100 ports lie below 32,000, outside
        the kernel's ephemeral range that the free ports come from, so they cannot collide."""
        (self.gcs_port, self.dashboard_port, client, node, obj, agent, agent_grpc, metrics,
         runtime) = free_ports(9)
        worker_lo = 20000 + (os.getpid() % 120) * 100
        ray = str(Path(sys.executable).with_name("ray"))
        return [ray, "start", "--head", "--node-ip-address", "127.0.0.1",
               "--port", str(self.gcs_port), "--dashboard-host", "127.0.0.1",
               "--dashboard-port", str(self.dashboard_port), "--include-dashboard", "true",
               "--ray-client-server-port", str(client), "--node-manager-port", str(node),
               "--object-manager-port", str(obj), "--dashboard-agent-listen-port", str(agent),
               "--dashboard-agent-grpc-port", str(agent_grpc),
               "--metrics-export-port", str(metrics), "--runtime-env-agent-port", str(runtime),
               "--min-worker-port", str(worker_lo), "--max-worker-port", str(worker_lo + 99),
               "--num-cpus", "4", "--temp-dir", str(self.temp_dir), "--disable-usage-stats"]

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
        _kill_tree(*self.processes())
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
