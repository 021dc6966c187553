"""The export stage: a run's artifacts in standard formats under ``{run}/export/``.

``model``: the trained model as a Hugging Face GPT-2 checkpoint (``hf/``); ``checkpoint``: the
newest (or a chosen) committed training checkpoint as an fp32 safetensors state dict and a
torch DCP folder (``checkpoint/``); ``plan``: the search plan as ``ds_config.json`` +
``launch.sh`` (``plan/``).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from forgeline.options import Options

ExportTarget = Literal["model", "checkpoint", "plan"]
EXPORT_TARGETS: tuple[str, ...] = ("model", "checkpoint", "plan")


class ExportOptions(Options):
    """What to export; by default everything the run has."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=(), title="Export")

    targets: list[ExportTarget] | None = Field(
        None, description="model (Hugging Face GPT-2), checkpoint (fp32 safetensors + torch "
        "DCP), plan (ds_config.json + launch.sh); default: each one the run has. A target "
        "named here that the run lacks is an error.")
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
    skipped: dict[str, str] = Field(default_factory=dict,
                                    description="Targets not exported, with the reason.")


def sources(stages: dict[str, Any],
            options: ExportOptions) -> tuple[dict[str, Any], dict[str, str]]:
    """Each target's source in the run, and why a target has none."""
    from forgeline.checkpoint import committed_steps

    train = stages.get("train") or {}
    store = options.checkpoint_url or train.get("checkpoint_url")
    found = {
        "model": (train["model_url"], train["architecture"]) if "model_url" in train else None,
        "checkpoint": store if store and committed_steps(store) else None,
        "plan": stages.get("search"),
    }
    why = {"model": "the run has no train result",
           "checkpoint": "the run has no committed training checkpoint",
           "plan": "the run has no search result"}
    return found, {t: why[t] for t, source in found.items() if source is None}


def export_run(stages: dict[str, Any], options: ExportOptions, out_url: str) -> ExportResult:
    """Export the run whose stage results are ``stages`` under ``out_url``."""
    from forgeline import storage
    from forgeline.errors import ConfigError
    from forgeline.export.checkpoint import export_checkpoint
    from forgeline.export.hf_model import export_hf_model
    from forgeline.export.plan import export_plan

    found, lacking = sources(stages, options)
    wanted = options.targets or list(EXPORT_TARGETS)
    missing = {t: lacking[t] for t in wanted if t in lacking}
    if options.targets and missing:
        raise ConfigError("targets", options.targets,
                          "; ".join(f"{t}: {why}" for t, why in missing.items()))
    result = ExportResult(out_url=out_url, skipped=missing)
    todo = [t for t in wanted if t not in missing]
    if "model" in todo:
        model_url, architecture = found["model"]
        result.hf_model_url = export_hf_model(model_url, architecture,
                                              storage.join(out_url, "hf"))
    if "checkpoint" in todo:
        done = export_checkpoint(found["checkpoint"], storage.join(out_url, "checkpoint"),
                                 options.checkpoint_step)
        result.state_dict_url, result.dcp_url = done.state_dict_url, done.dcp_url
        result.checkpoint_step = done.step
    if "plan" in todo:
        plan = export_plan(found["plan"], storage.join(out_url, "plan"))
        result.ds_config_url, result.launch_url = plan.ds_config_url, plan.launch_url
    return result
