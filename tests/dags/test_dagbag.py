from forgeline.options import flatten
from forgeline.pipeline import PipelineParams


def test_dags_import_without_errors(airflow_db):
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag()
    assert bag.import_errors == {}
    assert "forgeline_end_to_end" in bag.dag_ids


def test_end_to_end_dag_shape_and_defaults(airflow_db):
    from airflow.dag_processing.dagbag import DagBag

    dag = DagBag().get_dag("forgeline_end_to_end")
    order = ["validate", "prepare", "search", "train", "quantize", "report"]
    assert [t.task_id for t in dag.topological_sort()] == order
    defaults = flatten(PipelineParams())
    for name in ("data_source", "train_model_preset", "train_workers", "train_steps",
                 "train_zero_stage", "train_checkpoint_every_steps", "quantize_scheme"):
        assert dag.params[name] == defaults[name]
    assert dag.params["train_workers"] == 2 and dag.params["train_zero_stage"] == 2
    assert dag.params["artifact_root"].endswith("/artifacts")
    assert dag.params["strategy_search"] is True
    train = dag.get_task("train")
    assert train.trigger_rule == "none_failed"
    assert train.retries == 2 and dag.get_task("validate").retries == 0
    assert dag.params["train_checkpoint_resume"] is True
    assert train.ray_conn_id == "ray_default"
    outlets = {t: [a.name for a in dag.get_task(t).outlets] for t in ("prepare", "train",
                                                                       "quantize", "report")}
    assert outlets == {"prepare": ["forgeline_dataset"], "train": ["forgeline_model"],
                       "quantize": ["forgeline_quantized_model"], "report": []}
    for ray_stage in ("search", "train"):  # the stages that run as Ray jobs
        links = dag.get_task(ray_stage).operator_extra_links
        assert {link.name for link in links} == {"forgeline report", "Ray job"}
    assert {link.name for link in dag.get_task("quantize").operator_extra_links} == {
        "forgeline report"}


def test_the_registry_dag_is_scheduled_on_the_quantized_model(airflow_db):
    from airflow.dag_processing.dagbag import DagBag

    dag = DagBag().get_dag("forgeline_model_registry")
    condition = dag.timetable.asset_condition
    assert [a.name for a in condition.objects] == ["forgeline_quantized_model"]


def test_the_registry_records_a_quantized_model_and_refuses_a_missing_one(tmp_path):
    import json

    import pytest

    from forgeline.errors import StorageError
    from forgeline.registry import register_quantized_model

    model = tmp_path / "runs" / "r" / "quantize" / "model"
    model.mkdir(parents=True)
    extra = {"model_url": f"file://{model}", "artifact_root": f"file://{tmp_path}",
             "forgeline_run_id": "r", "scheme_counts": {"int8_wo": 9}}
    with pytest.raises(StorageError, match="incomplete"):
        register_quantized_model(extra)
    (model / "quantization.json").write_text("{}")
    (model / "model.safetensors").write_bytes(b"x" * 10)
    url = register_quantized_model(extra)
    record = json.loads((tmp_path / "registry" / "r.json").read_text())
    assert url.endswith("registry/r.json") and record["scheme_counts"] == {"int8_wo": 9}
    assert record["files"] == {"quantization.json": 2, "model.safetensors": 10}
