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
    defaults = PipelineParams()
    for name in ("source", "model_size", "workers", "steps", "zero_stage"):
        assert dag.params[name] == getattr(defaults, name)
    assert dag.params["workers"] == 2 and dag.params["zero_stage"] == 2
    assert dag.params["artifact_root"].endswith("/artifacts")
    assert dag.params["strategy_search"] is True
    assert dag.get_task("train").trigger_rule == "none_failed"
