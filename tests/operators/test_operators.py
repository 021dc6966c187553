"""Operators run by real Airflow (``dag.test()``): validation, layout, XCom results."""

from pathlib import Path

import pytest

from forgeline.operators import PrepareDatasetOperator, ReportOperator, TrainOperator
from forgeline.runs import RunLayout


def test_every_option_is_a_templated_field():
    assert {"source", "window_tokens", "artifact_root"} <= set(
        PrepareDatasetOperator.template_fields)
    assert {"steps", "zero_stage", "deepspeed_config"} <= set(TrainOperator.template_fields)
    assert ReportOperator.template_fields == ("artifact_root", "forgeline_run_id", "enabled")


def test_unknown_kwarg_is_rejected_at_dag_parse_time():
    with pytest.raises(TypeError, match="window_tokenz"):
        PrepareDatasetOperator(task_id="p", window_tokenz=3)


def _dag(dag_id: str):
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(str(Path(__file__).parent / "dags"))
    assert bag.import_errors == {}
    return bag.get_dag(dag_id)


def test_prepare_then_report_through_dag_test(airflow_db, tmp_path):
    dag_run = _dag("forgeline_test_prepare").test(run_conf={"root": str(tmp_path)})
    assert str(dag_run.state) == "success"
    run = RunLayout(str(tmp_path), "r1").load()
    assert run["stages"]["prepare"]["source_bytes"] == 20_000
    assert run["stages"]["prepare"]["window_tokens"] == 32
    assert run["stages"]["report"]["html_url"].endswith("report/report.html")
    assert (tmp_path / "runs" / "r1" / "report" / "report.html").exists()
    xcom = dag_run.get_task_instance("prepare").xcom_pull(task_ids="prepare")
    assert xcom == run["stages"]["prepare"]


def test_invalid_option_fails_the_task_once_before_any_work(airflow_db, tmp_path):
    dag_run = _dag("forgeline_test_invalid").test(run_conf={"root": str(tmp_path)})
    assert str(dag_run.state) == "failed"
    ti = dag_run.get_task_instance("prepare")
    assert str(ti.state) == "failed" and ti.try_number == 1
    assert not (tmp_path / "runs").exists()


def test_train_without_a_prepared_dataset_says_so(airflow_db, tmp_path):
    dag_run = _dag("forgeline_test_noprep").test(run_conf={"root": str(tmp_path)})
    assert str(dag_run.state) == "failed"
    assert not (tmp_path / "runs" / "empty" / "train").exists()


def test_a_disabled_stage_skips_and_train_falls_back_to_its_options(airflow_db, tmp_path):
    dag_run = _dag("forgeline_test_disabled").test(run_conf={"root": str(tmp_path)})
    assert str(dag_run.state) == "success"
    assert str(dag_run.get_task_instance("search").state) == "skipped"
    assert "search" not in RunLayout(str(tmp_path), "off").load()["stages"]


def test_section_options_take_nested_or_flat_kwargs():
    op = TrainOperator(task_id="t", checkpoint_every_steps=5, cache={"mode": "on"},
                       cache_capacity_bytes=4096, steps=3)
    assert op.checkpoint == {"every_steps": 5}
    assert op.cache == {"mode": "on", "capacity_bytes": 4096}
    assert {"checkpoint", "cache", "throttle"} <= set(TrainOperator.template_fields)
    options = op._options({})
    assert options.checkpoint.every_steps == 5 and options.cache.capacity_bytes == 4096
