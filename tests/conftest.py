"""Shared fixtures: one real local Ray cluster and one real Airflow metastore per session.

Airflow reads its configuration at import time, so its environment is set here, before any
test module imports it: a throwaway AIRFLOW_HOME (SQLite metastore) and this repo's dags/.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

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
