"""The quantize stage's options and result models: pydantic only, no torch.

The stage table, the CLI and the Airflow forms import these to describe the stage
without loading the quantization runtime.
"""

from __future__ import annotations

from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field

from forgeline.errors import ConfigError

SchemeName = Literal["int8_wo", "int4_rtn", "int4_gptq", "w8a8", "fp32"]
"""The quantization schemes a layer (or the whole model) can use."""


class QuantizeOptions(BaseModel):
    """How to quantize the run's trained model."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    model_url: str | None = Field(None, description="model.safetensors; default: the run's.")
    manifest_url: str | None = Field(None, description="Calibration/eval data; default: run's.")
    scheme: SchemeName = Field("int8_wo", description="Scheme of every quantizable layer.")
    group_size: int = Field(64, ge=2, description="int4 group size (must divide layer inputs).")
    mixed_precision: bool = Field(
        True, description="Keep the most sensitive layers at higher precision to meet the budget."
    )
    max_rel_ppl_increase: float = Field(
        0.01, ge=0.0, description="Tolerable relative validation-perplexity increase."
    )
    latency_objective: Literal["not_slower", "off"] = Field(
        "not_slower", description="not_slower: layers whose quantized kernel is slower than "
        "float here move to a faster scheme or stay float; off: accuracy and size only.")
    sensitivity: bool = Field(True, description="Measure per-layer sensitivity (table + plot).")
    calibration_samples: int = Field(64, ge=1, description="Validation windows to calibrate on.")
    eval_samples: int = Field(128, ge=1, description="Other validation windows to score on.")
    batch_size: int = Field(32, ge=1)

    def __init__(self, **data: Any) -> None:
        # An unknown scheme is a ConfigError naming the choices (pydantic's message for a
        # Literal is harder to read); model_validate still rejects it as a ValidationError.
        scheme, known = data.get("scheme", "int8_wo"), get_args(SchemeName)
        if scheme not in known:
            raise ConfigError("scheme", scheme, f"unknown scheme; choose from {list(known)}")
        super().__init__(**data)


class QuantizeResult(BaseModel):
    """The small result of the quantize stage (XCom-sized)."""

    model_config = ConfigDict(protected_namespaces=())

    model_url: str
    map_url: str
    report_url: str
    sensitivity_plot_url: str | None
    scheme: str
    assignment: dict[str, str]
    scheme_counts: dict[str, int] = Field(description="Layers per scheme in the final model.")
    budget_met: bool | None
    val_ppl_float: float
    val_ppl_quantized: float
    rel_ppl_increase: float
    float_bytes: int
    stored_bytes: int
    size_ratio: float
    linear_size_ratio: float | None
    latency_ms: dict[str, float]
    latency_ratio: dict[str, float] = Field(
        default_factory=dict, description="Quantized ÷ float time per batch size (b1, b32): "
        "the median of interleaved per-round ratios, as the benchmark measures it.")
    backend: str = Field("", description="Kernels that really run, e.g. 'dequant×5 + ...'.")
    latency_met: bool | None = Field(
        None, description="Not slower than float at batch 1 and 32 (None: not checked).")
    latency_changes: dict[str, str] = Field(
        default_factory=dict, description="Layers the latency objective moved, and why.")
    skipped_layers: dict[str, str] = Field(
        default_factory=dict, description="Weight layers left float, and why.")
    resident_bytes: int | None = Field(None, description="Quantized model's bytes after a forward.")
    quantize_s: float
    wall_s: float
