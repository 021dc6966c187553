"""
### forgeline end to end: prepare → search → train → quantize → report

Builds a byte-token dataset (by default from the Python standard library's source),
searches the parallel strategy for it (micro-batch, gradient accumulation, recompute at the
chosen ZeRO stage and worker count), trains a small decoder LM with the chosen plan on
**Ray Train + DeepSpeed** (2 CPU workers, ZeRO-2 by default), quantizes it after training
(int8 weight-only by default; the most sensitive layers stay at higher precision so that
validation perplexity rises by at most `quantize_max_rel_ppl_increase`), and writes an HTML/Markdown
report. A `validate` task checks the whole configuration first. Every artifact lands under
`{artifact_root}/runs/{dag_id}__{run_id}/`; the Params below are the demo's defaults
and make up the trigger form in the Airflow UI.
"""

from __future__ import annotations

import os
from pathlib import Path

from airflow.sdk import DAG

from forgeline.operators import (
    PrepareDatasetOperator,
    QuantizeOperator,
    ReportOperator,
    StrategySearchOperator,
    TrainOperator,
    ValidateOperator,
    pipeline_params,
)

ARTIFACT_ROOT = os.environ.get(
    "FORGELINE_ARTIFACT_ROOT", str(Path(__file__).resolve().parents[1] / "artifacts")
)

with DAG(
    dag_id="forgeline_end_to_end",
    schedule=None,
    catchup=False,
    doc_md=__doc__,
    tags=["forgeline"],
    params=pipeline_params(artifact_root=ARTIFACT_ROOT),
) as dag:
    # validate checks the whole configuration first (every problem at once). Each stage
    # task then reads the run's Params as forgeline.pipeline.PipelineParams and takes its
    # stage's section; the search skips itself when strategy_search is off. With a Ray
    # connection (ray_default) train runs as a Ray job and defers; its retries resume.
    validate = ValidateOperator(task_id="validate")
    prepare = PrepareDatasetOperator(task_id="prepare", from_params=True)
    search = StrategySearchOperator(task_id="search", from_params=True)
    train = TrainOperator(task_id="train", from_params=True, trigger_rule="none_failed")
    quantize = QuantizeOperator(task_id="quantize", from_params=True)
    report = ReportOperator(task_id="report", from_params=True)

    validate >> prepare >> search >> train >> quantize >> report
