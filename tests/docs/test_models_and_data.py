"""docs/models-and-data.md: every DAG snippet is a block of a real, parsed example file and
every task's options validate to what the docs say."""

import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[2] / "docs"
EXAMPLE = DOCS / "examples" / "models_and_data_dags.py"


def _blocks() -> dict[str, str]:
    text = EXAMPLE.read_text()
    return {m[1]: m[2].strip() for m in re.finditer(
        r"# \[START (\w+)\]\n(.*?)# \[END \1\]", text, re.S)}


def test_the_doc_shows_every_block_verbatim():
    doc = (DOCS / "models-and-data.md").read_text()
    blocks = _blocks()
    assert set(blocks) == {"preset", "hf_config", "pretrained", "factory"}
    for name, block in blocks.items():
        assert block in doc, name


@pytest.fixture(scope="module")
def bag(airflow_db):
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(str(EXAMPLE))
    assert bag.import_errors == {}
    return bag


@pytest.mark.parametrize(("dag_id", "kind", "data_format", "tokenizer"), [
    ("byo_preset", "preset", "text", "bpe"),
    ("byo_hf_config", "hf_config", "jsonl", "bpe"),
    ("byo_pretrained", "pretrained", "parquet", "pretrained"),
    ("byo_factory", "factory", "hf_dataset", "bytes"),
])
def test_each_example_dag_validates(bag, dag_id, kind, data_format, tokenizer):
    dag = bag.get_dag(dag_id)
    train, prepare = dag.get_task("train")._options({}), dag.get_task("prepare")._options({})
    assert train.model.kind == kind
    assert prepare.format == data_format and prepare.tokenizer.kind == tokenizer
    if kind == "hf_config":
        assert train.model.hf_config["vocab_size"] == prepare.tokenizer.vocab_size
        assert prepare.split_by == "document"
    if kind == "pretrained":
        assert train.model.pretrained_url == prepare.tokenizer.url
