"""
### forgeline end to end: prepare → search → train → quantize → report

Builds a byte-token dataset (by default from the Python standard library's source),
searches the parallel strategy for it (micro-batch, gradient accumulation, recompute at the
chosen ZeRO stage and worker count), trains a small decoder LM with the chosen plan on
**Ray Train + DeepSpeed** (2 CPU workers, ZeRO-2 by default), quantizes it after training
(int8 weight-only by default; the most sensitive layers stay at higher precision so that
validation perplexity rises by at most `max_rel_ppl_increase`), and writes an HTML/Markdown
report. Every artifact lands under
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
    params_from,
    templated,
)
from forgeline.pipeline import PipelineParams, TrainStageOptions

ARTIFACT_ROOT = os.environ.get(
    "FORGELINE_ARTIFACT_ROOT", str(Path(__file__).resolve().parents[1] / "artifacts")
)

with DAG(
    dag_id="forgeline_end_to_end",
    schedule=None,
    catchup=False,
    doc_md=__doc__,
    tags=["forgeline"],
    params=params_from(
        PipelineParams, exclude=frozenset({"manifest_url"}), artifact_root=ARTIFACT_ROOT
    ),
    render_template_as_native_obj=True,
) as dag:
    root = templated("artifact_root")
    prepare = PrepareDatasetOperator(
        task_id="prepare",
        **templated("source", "window_tokens", "val_fraction", "seed", "max_source_bytes"),
        **root,
    )
    train = TrainOperator(
        task_id="train",
        trigger_rule="none_failed",
        # every training knob, data access included (cache: on when the data is remote)
        **templated(*(name for name in TrainStageOptions.model_fields if name != "manifest_url")),
        **root,
    )
    search = StrategySearchOperator(
        task_id="search",
        enabled="{{ params.strategy_search and params.deepspeed_config is none }}",
        devices_per_node="{{ params.workers }}",
        workers="{{ params.workers }}",
        model_size="{{ params.model_size }}",
        global_batch_size=(
            "{{ params.workers * params.micro_batch_size * params.grad_accum_steps }}"
        ),
        zero_stages="{{ [params.zero_stage] }}",
        lr="{{ params.lr }}",
        **root,
    )
    quantize = QuantizeOperator(
        task_id="quantize",
        scheme="{{ params.quantize_scheme }}",
        **templated("max_rel_ppl_increase"),
        **root,
    )
    report = ReportOperator(task_id="report", **root)

    prepare >> search >> train >> quantize >> report
