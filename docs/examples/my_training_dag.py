"""A DAG a user writes from forgeline's operators (the README's example, tested).

Each operator's keyword arguments are its stage's options (``forgeline.stages``); nested
sections take a dict or their flat names (``checkpoint_every_steps``). Set
``FORGELINE_EXAMPLE_ROOT`` to an artifact root every Ray worker can reach (``s3://…``,
``gs://…`` or a shared folder).
"""

from __future__ import annotations

import os

from airflow.sdk import DAG

from forgeline.operators import PrepareDatasetOperator, ReportOperator, TrainOperator

ROOT = os.environ.get("FORGELINE_EXAMPLE_ROOT", "s3://my-bucket/forgeline")

with DAG("my_training", schedule=None, tags=["forgeline", "example"]):
    prepare = PrepareDatasetOperator(task_id="prepare", source="builtin:stdlib",
                                     window_tokens=256, artifact_root=ROOT)
    train = TrainOperator(task_id="train", model_preset="base", workers=4, steps=2000,
                          zero_stage=2, checkpoint_every_steps=200,
                          cache={"mode": "on", "capacity_bytes": 2 * 2**30},
                          artifact_root=ROOT)
    report = ReportOperator(task_id="report", artifact_root=ROOT)
    prepare >> train >> report
