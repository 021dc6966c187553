"""Options and result of the strategy-search stage, importable without torch, Ray or numpy.

``StrategyOptions`` is what a user (CLI flag, DAG Param, Python) sets; ``StrategyResult`` is
what the training stage consumes. Singular names are one configuration's values
(``micro_batch_size``); plural names are the sets the search may choose from
(``micro_batch_sizes``, ``zero_stages``).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from forgeline.search.presets import PRESET_NAMES

THIS_MACHINE = "this-machine"
PLAN_FILE = "plan.json"

ClusterName = Literal["this-machine", "v100-32gb", "a100-40gb", "a100-80gb", "h100", "h200",
                      "b200"]
"""``this-machine`` (CPU workers, rates measured when the stage runs) or a GPU preset."""

ModelSize = Literal["tiny", "small", "base"]
"""The training stage's ``DecoderLM`` presets."""


class StrategyOptions(BaseModel):
    """What to plan for. Fixed choices (``zero_stages``, ``micro_batch_sizes``) constrain the
    search; ``None`` lets it choose."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    cluster: ClusterName = Field(THIS_MACHINE, description=f"'{THIS_MACHINE}' (CPU workers, "
                                 f"measured now) or a preset: {', '.join(PRESET_NAMES)}.")
    nodes: int = Field(1, ge=1, description="Nodes of the cluster.")
    devices_per_node: int = Field(2, ge=1, description="Devices (or CPU workers) per node.")
    model_size: ModelSize = Field("small", description="The DecoderLM preset to train.")
    model: dict[str, Any] | None = Field(
        None, description="The training stage's model section (forgeline.train.ModelOptions); "
        "None: the model_size preset.")
    seq_len: int | None = Field(None, ge=1, description="Default: the run's dataset window.")
    vocab_size: int | None = Field(None, ge=2, description="Default: the run's dataset "
                                   "vocabulary (256, byte-level, without a prepared dataset).")
    workers: int | None = Field(
        None, ge=1, description="Fix the data-parallel size; None lets the search choose."
    )
    activation_checkpointing_allowed: bool = Field(True, description="May the plan recompute?")
    global_batch_size: int = Field(32, ge=1, description="Sequences per optimizer step.")
    zero_stages: list[int] | None = Field(
        None, description="ZeRO stages the search may choose from (0-3); None = all."
    )
    micro_batch_sizes: list[int] | None = Field(
        None, description="Micro-batch sizes the search may choose from; None = all divisors."
    )
    lr: float = Field(2e-3, gt=0, description="Learning rate written into the plan.")
    top_k: int = Field(5, ge=1, description="Ranked plans to keep.")

    @field_validator("zero_stages")
    @classmethod
    def _stages(cls, value: list[int] | None) -> list[int] | None:
        if value is not None and (not value or any(s not in (0, 1, 2, 3) for s in value)):
            raise ValueError(f"zero_stages={value!r}: each must be 0, 1, 2 or 3 (at least one)")
        return value

    @field_validator("micro_batch_sizes")
    @classmethod
    def _micro(cls, value: list[int] | None) -> list[int] | None:
        if value is not None and (not value or any(b < 1 for b in value)):
            raise ValueError(f"micro_batch_sizes={value!r}: each must be at least 1")
        return value


class StrategyResult(BaseModel):
    """The chosen plan in the form the training stage consumes, plus why it won."""

    plan_url: str = Field(description="plan.json with every ranked plan and the emitted config")
    cluster: str = Field(description="name of the cluster spec searched")
    devices: int = Field(description="devices of that cluster")
    num_workers: int = Field(description="training processes the plan uses")
    deepspeed_config: dict[str, Any]
    activation_checkpointing: bool
    zero_stage: int
    micro_batch_size: int
    grad_accum_steps: int
    predicted_step_s: float
    predicted_memory_bytes: int
    bound_by: str = Field(description="largest term of the predicted step time")
    candidates_evaluated: int
    search_s: float
    ranking: list[dict[str, Any]]
