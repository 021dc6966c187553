"""Small DAGs for the operator tests (a second DAG bundle, configured in tests/conftest.py)."""

import datetime as dt

from airflow.sdk import DAG

from forgeline.operators import (
    PrepareDatasetOperator,
    ReportOperator,
    StrategySearchOperator,
    TrainOperator,
)

START = dt.datetime(2026, 1, 1)
ROOT = {"artifact_root": "{{ params.root }}", "forgeline_run_id": "{{ params.run }}"}

with DAG("forgeline_test_prepare", schedule=None, start_date=START,
         render_template_as_native_obj=True,
         params={"root": "", "run": "r1", "bytes": 20_000}):
    prepare = PrepareDatasetOperator(task_id="prepare", max_source_bytes="{{ params.bytes }}",
                                     window_tokens=32, **ROOT)
    prepare >> ReportOperator(task_id="report", **ROOT)

with DAG("forgeline_test_invalid", schedule=None, start_date=START,
         params={"root": "", "run": "bad"}):
    PrepareDatasetOperator(task_id="prepare", window_tokens="-5", retries=3, **ROOT)

with DAG("forgeline_test_noprep", schedule=None, start_date=START,
         params={"root": "", "run": "empty"}):
    TrainOperator(task_id="train", **ROOT)

with DAG("forgeline_test_disabled", schedule=None, start_date=START,
         render_template_as_native_obj=True, params={"root": "", "run": "off", "search": False}):
    prepare = PrepareDatasetOperator(task_id="prepare", max_source_bytes=20_000, window_tokens=32,
                                     **ROOT)
    search = StrategySearchOperator(task_id="search", enabled="{{ params.search }}",
                                    model_preset="tiny", **ROOT)
    prepare >> search >> ReportOperator(task_id="report", trigger_rule="none_failed", **ROOT)

with DAG("forgeline_test_report", schedule=None, start_date=START,
         render_template_as_native_obj=True, params={"artifact_root": ""}):
    root = {"artifact_root": "{{ params.artifact_root }}"}  # default run folder naming
    PrepareDatasetOperator(task_id="prepare", max_source_bytes=20_000, window_tokens=32,
                           **root) >> ReportOperator(task_id="report", **root)
