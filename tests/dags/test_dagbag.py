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
    order = ["prepare", "search", "train", "quantize", "report"]
    assert [t.task_id for t in dag.topological_sort()] == order
    defaults = flatten(PipelineParams())
    for name in ("data_source", "train_model_preset", "train_workers", "train_steps",
                 "train_zero_stage", "train_checkpoint_every_steps", "quantize_scheme"):
        assert dag.params[name] == defaults[name]
    assert dag.params["train_workers"] == 2 and dag.params["train_zero_stage"] == 2
    assert dag.params["artifact_root"].endswith("/artifacts")
    assert dag.params["strategy_search"] is True
    assert dag.get_task("train").trigger_rule == "none_failed"
