"""The stage's typed result: sizes, metric delta, timing, per-layer table (JSON-serializable)."""

from __future__ import annotations

from pydantic import BaseModel, Field


class SensitivityEntry(BaseModel):
    """One layer quantized alone under one scheme, everything else float."""

    metric: float | None = None
    rel_metric_loss: float | None = None
    """Relative metric loss versus the float model (positive = worse)."""
    kl: float | None = None
    """Mean KL(float || quantized) of output distributions on calibration batches (nats),
    when the divergence is the default KL."""
    divergence: float | None = None
    """The report's ``divergence_metric`` (KL by default, else the user's function)."""


class LayerReport(BaseModel):
    name: str
    type: str
    scheme: str
    bits: int
    group_size: int | None = None
    params: int
    float_bytes: int
    """fp32 bytes of the layer's weight."""
    stored_bytes: int
    """Bytes of codes + scales + zero-points (or the float weight when kept fp32)."""
    kernel: str | None = None
    smoothquant_alpha: float | None = None
    sensitivity: dict[str, SensitivityEntry] = Field(default_factory=dict)
    notes: list[str] = Field(default_factory=list)


class MixedPrecisionStep(BaseModel):
    promoted: str | None
    """Layer promoted one rung before this evaluation (None for the starting point)."""
    to_scheme: str | None
    metric: float
    rel_metric_loss: float
    weight_bytes: int


class MixedPrecisionReport(BaseModel):
    max_rel_metric_loss: float
    met: bool
    """The final assignment's measured loss is within the budget."""
    assignment: dict[str, str]
    steps: list[MixedPrecisionStep]


class LatencyReport(BaseModel):
    """The latency objective: float vs quantized model, measured here, and what it changed."""

    objective: str
    checked: bool
    """False when there was nothing to time on (no calibration batches)."""
    met: bool | None = None
    """Quantized <= float × (1 + tolerance) at every batch size after the changes, or every
    layer float (the model then runs the float model's ops)."""
    tolerance: float = 0.0
    float_ms: dict[str, float] = Field(default_factory=dict)
    """Median forward time of the float model per batch size (``b1``, ``b32`` …)."""
    quantized_ms: dict[str, float] = Field(default_factory=dict)
    ratio: dict[str, float] = Field(default_factory=dict)
    """quantized ÷ float, per batch size (median of paired rounds)."""
    rounds: dict[str, int] = Field(default_factory=dict)
    """Paired timing rounds behind each ratio (more where it was close to the threshold)."""
    first_ratio: dict[str, float] = Field(default_factory=dict)
    """The same for the accuracy-only assignment, before any latency change."""
    changes: dict[str, str] = Field(default_factory=dict)
    """Layer → ``"int4_rtn → fp32: …why…"`` for each layer the objective moved."""
    notes: list[str] = Field(default_factory=list)


class QuantizeReport(BaseModel):
    scheme: str
    backend: str
    """What really runs: kernels and how many layers each (e.g. ``fbgemm_int8_static×5 +
    dequant×14``); ``float`` when no layer stayed quantized."""
    backend_requested: str = "auto"
    quantize_s: float
    """Wall seconds of calibration + quantization (evaluations excluded)."""
    eval_s: float
    """Wall seconds spent measuring: ``eval_fn`` calls (baseline, sensitivity, mixed
    precision, final) and the sensitivity KL forward passes."""
    calibration_samples: int
    calibration_batches: int
    metric_higher_is_better: bool
    metric_float: float | None = None
    metric_quantized: float | None = None
    rel_metric_loss: float | None = None
    float_bytes: int
    """Bytes of the float model's parameters and buffers."""
    stored_bytes: int
    """Bytes of every tensor in the quantized artifact."""
    size_ratio: float
    linear_float_bytes: int
    linear_stored_bytes: int
    linear_size_ratio: float | None
    """fp32 bytes / stored bytes over quantized ``nn.Linear`` weights."""
    layers: list[LayerReport]
    mixed_precision: MixedPrecisionReport | None = None
    latency: LatencyReport | None = None
    skipped: dict[str, str] = Field(default_factory=dict)
    """Weight layers left float, with the reason (e.g. inside nn.MultiheadAttention)."""
    divergence_metric: str | None = None
    """Name of the per-layer output divergence in the sensitivity entries."""
    resident_bytes: int | None = None
    """Bytes the returned model holds in memory (parameters, buffers, kernel state)."""
    float_resident_bytes: int | None = None
    notes: list[str] = Field(default_factory=list)

    def sensitivity_table(self) -> list[dict[str, object]]:
        """Flat rows (layer, scheme, rel loss, KL), most sensitive first, for reports."""
        rows = [
            {"layer": lr.name, "scheme": s, "rel_metric_loss": e.rel_metric_loss, "kl": e.kl}
            for lr in self.layers
            for s, e in lr.sensitivity.items()
        ]
        return sorted(rows, key=lambda r: -(r["rel_metric_loss"] or 0.0))
