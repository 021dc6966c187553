"""The README's example DAG is a real file: it parses, and every task's options validate."""

from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[2] / "docs" / "examples"


def test_the_readme_example_dag_parses_and_its_options_validate(airflow_db):
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(str(EXAMPLES))
    assert bag.import_errors == {}
    dag = bag.get_dag("my_training")
    assert [t.task_id for t in dag.topological_sort()] == ["prepare", "train", "report"]
    train = dag.get_task("train")._options({})
    assert (train.model.preset, train.workers, train.steps, train.zero_stage) == (
        "base", 4, 2000, 2)
    assert train.checkpoint.every_steps == 200
    assert train.cache.mode == "on" and train.cache.capacity_bytes == 2 * 2**30
    assert dag.get_task("prepare")._options({}).window_tokens == 256


def test_the_readme_shows_the_example_file():
    readme = (EXAMPLES.parents[1] / "README.md").read_text()
    example = (EXAMPLES / "my_training_dag.py").read_text()
    body = example[example.index("with DAG("):].strip()
    assert body in readme
