"""The Assets the pipeline's stages update, and the extras each event carries.

An Asset event per successful stage lets other DAGs be scheduled on a new dataset, model or
quantized model (``schedule=[QUANTIZED_MODEL]``); its extra holds the facts a consumer
needs (where the artifact is, perplexity, size, the scheme mix) without reading storage.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from airflow.sdk import Asset

from forgeline.runs import RunLayout

DATASET = Asset(name="forgeline_dataset", uri="forgeline://dataset", group="forgeline")
MODEL = Asset(name="forgeline_model", uri="forgeline://model", group="forgeline")
QUANTIZED_MODEL = Asset(name="forgeline_quantized_model", uri="forgeline://quantized-model",
                        group="forgeline")


def _dataset(result: dict[str, Any]) -> dict[str, Any]:
    keys = ("manifest_url", "fingerprint", "source", "train_samples", "validation_samples",
            "window_tokens", "bytes_written")
    return {k: result[k] for k in keys if k in result}


def _model(result: dict[str, Any]) -> dict[str, Any]:
    keys = ("model_url", "model_config_url", "num_params", "steps", "val_ppl_before",
            "val_ppl_after", "tokens_per_s")
    return {k: result[k] for k in keys if k in result}


def _quantized(result: dict[str, Any]) -> dict[str, Any]:
    keys = ("model_url", "scheme", "scheme_counts", "val_ppl_float", "val_ppl_quantized",
            "rel_ppl_increase", "budget_met", "float_bytes", "stored_bytes", "size_ratio")
    return {k: result[k] for k in keys if k in result}


STAGE_ASSETS: dict[str, tuple[Asset, Callable[[dict[str, Any]], dict[str, Any]]]] = {
    "prepare": (DATASET, _dataset),
    "train": (MODEL, _model),
    "quantize": (QUANTIZED_MODEL, _quantized),
}
"""Stage → (the Asset it updates, result → event extra)."""


def asset_extra(stage: str, result: dict[str, Any], layout: RunLayout) -> dict[str, Any]:
    """The extra of ``stage``'s Asset event for ``result`` of the run at ``layout``."""
    return {"forgeline_run_id": layout.run_id, "artifact_root": layout.root,
            **STAGE_ASSETS[stage][1](result)}
