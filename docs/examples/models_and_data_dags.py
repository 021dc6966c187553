"""Bring your own model, tokenizer and data: one small DAG per model kind (docs/models-and-
data.md shows each block between its START/END markers; the docs tests check they match and
that every task's options validate).

Set ``FORGELINE_EXAMPLE_ROOT`` to an artifact root every Ray worker can reach.
"""

from __future__ import annotations

import os

from airflow.sdk import DAG

from forgeline.operators import PrepareDatasetOperator, ReportOperator, TrainOperator

ROOT = os.environ.get("FORGELINE_EXAMPLE_ROOT", "s3://my-bucket/forgeline")

# [START preset]
with DAG("byo_preset", schedule=None, tags=["forgeline", "example"]):
    prepare = PrepareDatasetOperator(task_id="prepare", source="s3://my-bucket/corpus/*.txt",
                                     tokenizer={"kind": "bpe", "vocab_size": 8192},
                                     window_tokens=256, artifact_root=ROOT)
    train = TrainOperator(task_id="train", model={"kind": "preset", "preset": "base"},
                          steps=2000, artifact_root=ROOT)
    prepare >> train >> ReportOperator(task_id="report", artifact_root=ROOT)
# [END preset]

# [START hf_config]
with DAG("byo_hf_config", schedule=None, tags=["forgeline", "example"]):
    prepare = PrepareDatasetOperator(task_id="prepare", source="s3://my-bucket/docs.jsonl",
                                     format="jsonl", text_column="content",
                                     tokenizer={"kind": "bpe", "vocab_size": 16384},
                                     split_by="document", window_tokens=512,
                                     artifact_root=ROOT)
    train = TrainOperator(task_id="train", model={
        "kind": "hf_config",
        "hf_config": {"model_type": "gpt2", "n_layer": 6, "n_embd": 384, "n_head": 6,
                      "n_positions": 512, "vocab_size": 16384},
    }, zero_stage=2, activation_checkpointing=True, steps=5000, artifact_root=ROOT)
    prepare >> train >> ReportOperator(task_id="report", artifact_root=ROOT)
# [END hf_config]

# [START pretrained]
with DAG("byo_pretrained", schedule=None, tags=["forgeline", "example"]):
    prepare = PrepareDatasetOperator(
        task_id="prepare", source="gs://my-bucket/support-tickets/", format="parquet",
        text_column="body", tokenizer={"kind": "pretrained",
                                       "url": "s3://my-bucket/models/my-gpt2"},
        window_tokens=512, artifact_root=ROOT)
    train = TrainOperator(task_id="train", model_kind="pretrained",
                          model_pretrained_url="s3://my-bucket/models/my-gpt2",
                          lr=1e-4, steps=500, zero_stage=3, artifact_root=ROOT)
    prepare >> train >> ReportOperator(task_id="report", artifact_root=ROOT)
# [END pretrained]

# [START factory]
with DAG("byo_factory", schedule=None, tags=["forgeline", "example"]):
    prepare = PrepareDatasetOperator(task_id="prepare", source="s3://my-bucket/hf/wiki",
                                     format="hf_dataset", text_column="text",
                                     window_tokens=256, artifact_root=ROOT)
    train = TrainOperator(task_id="train", model={
        "kind": "factory", "factory": "my_models.rnn:build",
        "factory_kwargs": {"hidden": 512, "layers": 2},
    }, steps=3000, artifact_root=ROOT)
    prepare >> train >> ReportOperator(task_id="report", artifact_root=ROOT)
# [END factory]
