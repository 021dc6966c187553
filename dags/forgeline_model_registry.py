"""
### forgeline model registry: runs whenever a new quantized model is published

Scheduled on the `forgeline_quantized_model` Asset, which the end-to-end DAG's `quantize`
task updates. For every new quantized model it checks the artifact (its quantization map
and weights are on storage) and records it, with the event's facts — perplexity, size,
scheme mix — in `{artifact_root}/registry/{forgeline_run_id}.json`: the hand-off point for
an evaluation or serving DAG.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import DAG, task

from forgeline.operators.assets import QUANTIZED_MODEL

with DAG(
    dag_id="forgeline_model_registry",
    schedule=[QUANTIZED_MODEL],
    catchup=False,
    doc_md=__doc__,
    tags=["forgeline"],
) as dag:

    @task
    def register(triggering_asset_events: Any = None) -> list[str]:
        """Record each new quantized model in the registry; fail if its files are missing."""
        from forgeline.registry import register_quantized_model

        return [register_quantized_model(dict(event.extra))
                for event in triggering_asset_events[QUANTIZED_MODEL]]

    register()
