"""The export stage: a run's artifacts in standard formats under ``{run}/export/``.

``model``: the trained model as a Hugging Face GPT-2 checkpoint (``hf/``); ``checkpoint``: the
newest (or a chosen) committed training checkpoint as an fp32 safetensors state dict and a
torch DCP folder (``checkpoint/``); ``plan``: the search plan as ``ds_config.json`` +
``launch.sh`` (``plan/``); ``quantized``: the quantized model in the compressed-tensors
layout (``quantized/``).
"""

from __future__ import annotations

import posixpath
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from forgeline.options import Options

ExportTarget = Literal["model", "checkpoint", "plan", "quantized"]
EXPORT_TARGETS: tuple[str, ...] = ("model", "checkpoint", "plan", "quantized")


class ExportOptions(Options):
    """What to export; by default everything the run has."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=(), title="Export")

    targets: list[ExportTarget] | None = Field(
        None, description="model (Hugging Face GPT-2), checkpoint (fp32 safetensors + torch "
        "DCP), plan (ds_config.json + launch.sh), quantized (compressed-tensors); default: "
        "each one the run has. A target named here that the run lacks is an error.")
    checkpoint_step: int | None = Field(
        None, ge=0, description="Committed checkpoint step to export; default: the newest.")
    checkpoint_url: str | None = Field(
        None, description="Checkpoint store URL; default: the run's train stage store.")


class ExportResult(BaseModel):
    """Where each export landed (None: not exported; ``skipped`` says why)."""

    model_config = ConfigDict(protected_namespaces=())

    out_url: str
    hf_model_url: str | None = Field(None, description="config.json + model.safetensors.")
    state_dict_url: str | None = Field(None, description="fp32 safetensors state dict.")
    dcp_url: str | None = Field(None, description="torch.distributed.checkpoint folder.")
    checkpoint_step: int | None = None
    ds_config_url: str | None = None
    launch_url: str | None = None
    quantized_url: str | None = Field(None, description="compressed-tensors config.json + "
                                      "model.safetensors.")
    quantized_mapped_layers: list[str] = Field(
        default_factory=list, description="Layers stored quantized there (the others are "
        "decoded float and in the config's ignore list).")
    skipped: dict[str, str] = Field(default_factory=dict,
                                    description="Targets not exported, with the reason.")


def model_source(train: dict[str, Any]) -> tuple[Any, str]:
    """``("decoder", model_url, shape)`` for a built-in DecoderLM, ``("hf", folder_url)`` for
    a Hugging Face model the train stage saved as such; else None and the reason."""
    if "model_url" not in train:
        return None, "the run has no train result"
    arch = train.get("architecture") or {}
    if arch.get("kind", "preset") == "preset":
        shape = dict(arch.get("shape") or arch)  # older runs: the ModelConfig itself
        shape.update({k: arch[k] for k in ("seq_len", "vocab_size") if k in arch})
        return ("decoder", train["model_url"], shape), ""
    if arch.get("hf_folder_url"):
        return ("hf", arch["hf_folder_url"]), ""
    return None, f"a {arch.get('kind')} model has no standard layout to export"


def sources(stages: dict[str, Any],
            options: ExportOptions) -> tuple[dict[str, Any], dict[str, str]]:
    """Each target's source in the run, and why a target has none."""
    from forgeline import storage
    from forgeline.checkpoint import committed_steps
    from forgeline.train import MODEL_CONFIG_FILE

    train = stages.get("train") or {}
    store = options.checkpoint_url or train.get("checkpoint_url")
    model, model_why = model_source(train)
    found = {
        "model": model,
        "checkpoint": store if store and committed_steps(store) else None,
        "plan": stages.get("search"),
        "quantized": None,
    }
    quantized = (stages.get("quantize") or {}).get("model_url")
    if quantized and "model_url" in train:
        model_json = posixpath.join(posixpath.dirname(train["model_url"]), MODEL_CONFIG_FILE)
        found["quantized"] = (quantized, model_json) if storage.exists(model_json) else None
    why = {"model": model_why,
           "checkpoint": "the run has no committed training checkpoint",
           "plan": "the run has no search result",
           "quantized": "the run has no quantized model (and trained model.json)"}
    return found, {t: why[t] for t, source in found.items() if source is None}


def export_run(stages: dict[str, Any], options: ExportOptions, out_url: str) -> ExportResult:
    """Export the run whose stage results are ``stages`` under ``out_url``."""
    from forgeline import storage
    from forgeline.errors import ConfigError
    from forgeline.export.checkpoint import export_checkpoint
    from forgeline.export.hf_model import export_hf_model
    from forgeline.export.plan import export_plan
    from forgeline.export.quantized import export_quantized

    found, lacking = sources(stages, options)
    wanted = options.targets or list(EXPORT_TARGETS)
    missing = {t: lacking[t] for t in wanted if t in lacking}
    if options.targets and missing:
        raise ConfigError("targets", options.targets,
                          "; ".join(f"{t}: {why}" for t, why in missing.items()))
    result = ExportResult(out_url=out_url, skipped=missing)
    todo = [t for t in wanted if t not in missing]
    if "model" in todo:
        hf_url = storage.join(out_url, "hf")
        if found["model"][0] == "decoder":
            _, model_url, shape = found["model"]
            result.hf_model_url = export_hf_model(model_url, shape, hf_url)
        else:  # trained as a Hugging Face model already: publish its folder as is
            from forgeline.train.models import copy_hf_folder

            result.hf_model_url = copy_hf_folder(found["model"][1], hf_url)
    if "checkpoint" in todo:
        done = export_checkpoint(found["checkpoint"], storage.join(out_url, "checkpoint"),
                                 options.checkpoint_step)
        result.state_dict_url, result.dcp_url = done.state_dict_url, done.dcp_url
        result.checkpoint_step = done.step
    if "plan" in todo:
        plan = export_plan(found["plan"], storage.join(out_url, "plan"))
        result.ds_config_url, result.launch_url = plan.ds_config_url, plan.launch_url
    if "quantized" in todo:
        done = export_quantized(*found["quantized"], storage.join(out_url, "quantized"))
        result.quantized_url, result.quantized_mapped_layers = done["url"], done["mapped_layers"]
    return result
