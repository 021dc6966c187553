"""Input formats (text, JSONL, Parquet, saved Hugging Face datasets) on fsspec URLs, packing
with end-of-document tokens, and the document-level split."""

import json

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from forgeline.datasets import (
    DatasetConfig,
    TokenDataset,
    build_dataset,
    load_manifest,
    read_documents,
    split_documents,
)
from forgeline.errors import ConfigError

DOCS = [f"document {i}: " + "lorem ipsum dolor sit amet " * (20 + i) for i in range(12)]


def _jsonl(url: str, column: str = "text") -> None:
    with fsspec.open(url, "w") as f:
        for i, doc in enumerate(DOCS):
            f.write(json.dumps({"id": i, column: doc}) + "\n")


def _parquet(url: str) -> None:
    with fsspec.open(url, "wb") as f:
        pq.write_table(pa.table({"id": list(range(len(DOCS))), "body": DOCS}), f)


def test_jsonl_and_parquet_rows_are_documents_on_memory_storage():
    _jsonl("memory://fmt/a/docs.jsonl")
    _parquet("memory://fmt/b/docs.parquet")
    jsonl = read_documents(DatasetConfig(source="memory://fmt/a", format="jsonl"))
    parquet = read_documents(DatasetConfig(source="memory://fmt/b/docs.parquet",
                                           format="parquet", text_column="body"))
    assert jsonl.documents == parquet.documents == [d.encode() for d in DOCS]
    assert jsonl.info.documents == 12 and jsonl.info.format == "jsonl"
    assert jsonl.info.sha256 == parquet.info.sha256


def test_a_saved_hugging_face_dataset_is_read_with_every_split(tmp_path):
    datasets = pytest.importorskip("datasets")
    folder = tmp_path / "hf"
    datasets.DatasetDict({
        "train": datasets.Dataset.from_dict({"text": DOCS[:8]}),
        "test": datasets.Dataset.from_dict({"text": DOCS[8:]}),
    }).save_to_disk(str(folder))
    corpus = read_documents(DatasetConfig(source=f"file://{folder}", format="hf_dataset"))
    assert sorted(corpus.documents) == sorted(d.encode() for d in DOCS)


def test_a_missing_text_column_names_the_field_before_any_work(tmp_path):
    _jsonl("memory://fmt/c/docs.jsonl", column="content")
    _parquet("memory://fmt/d/docs.parquet")
    out = tmp_path / "out"
    with pytest.raises(ConfigError, match=r"text_column='text'.*\['content', 'id'\]"):
        build_dataset(DatasetConfig(source="memory://fmt/c", format="jsonl"), f"file://{out}")
    with pytest.raises(ConfigError, match=r"text_column='text'.*\['id', 'body'\]"):
        build_dataset(DatasetConfig(source="memory://fmt/d", format="parquet"),
                      f"file://{out}")
    with pytest.raises(ConfigError, match="text_column='nope'"):
        datasets = pytest.importorskip("datasets")
        datasets.Dataset.from_dict({"text": DOCS}).save_to_disk(str(tmp_path / "hf"))
        build_dataset(DatasetConfig(source=str(tmp_path / "hf"), format="hf_dataset",
                                    text_column="nope"), f"file://{out}")
    assert not any(out.rglob("*.parquet"))


def test_windows_pack_documents_with_an_end_of_document_token(tmp_path):
    _jsonl("memory://fmt/e/docs.jsonl")
    config = DatasetConfig(source="memory://fmt/e", format="jsonl", window_tokens=16,
                           tokenizer={"kind": "bpe", "vocab_size": 300})
    manifest = load_manifest(build_dataset(config, f"file://{tmp_path}").manifest_url)
    eod = manifest.tokenizer.eod_token_id
    windows = [TokenDataset(f"file://{tmp_path}/manifest.json", s) for s in
               ("train", "validation")]
    count = sum(int((w.get_many(range(len(w)))[:, 1:] == eod).sum()) for w in windows)
    assert 8 <= count <= 12  # one per document (some fall on the windows' shared token)


def test_document_split_keeps_each_document_on_one_side():
    lengths = [100] * 20
    a = split_documents(lengths, 0.1, seed=3)
    assert len(a["validation"]) == 2 and not set(a["validation"]) & set(a["train"])
    assert not np.array_equal(a["validation"], split_documents(lengths, 0.1, 4)["validation"])
    assert len(split_documents([5, 1000], 0.5, 0)["validation"]) == 1  # one doc each side
    with pytest.raises(ConfigError, match="split_by='document'"):
        split_documents([10], 0.1, 0)


def test_document_split_windows_come_from_their_own_documents(tmp_path):
    _jsonl("memory://fmt/f/docs.jsonl")
    config = DatasetConfig(source="memory://fmt/f", format="jsonl", window_tokens=32,
                           split_by="document", val_fraction=0.2)
    result = build_dataset(config, f"file://{tmp_path}")
    validation = TokenDataset(result.manifest_url, "validation")
    text = bytes(validation.get_many(range(len(validation)))[:, :-1].reshape(-1)).decode()
    held_out = {int(part.split(":")[0]) for part in text.split("document ")[1:]
                if part[:2].rstrip(":").isdigit()}
    train = TokenDataset(result.manifest_url, "train")
    train_text = bytes(train.get_many(range(len(train)))[:, :-1].reshape(-1)).decode()
    assert held_out and all(f"document {i}:" not in train_text for i in held_out)
    assert load_manifest(result.manifest_url).split_by == "document"
