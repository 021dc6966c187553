"""Typed configuration of the quantization stage (pydantic v2).

Domain checks (scheme names, group sizes, the accuracy budget) raise
``forgeline.errors.ConfigError(field, value, reason)`` from construction and again
from :meth:`QuantizeConfig.check` (which ``quantize_model`` calls before any work), so
a config built through ``model_validate`` is checked too.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from forgeline.errors import ConfigError

#: Scheme name -> (weight bits, needs calibration data). ``fp32`` keeps a layer float.
SCHEMES: dict[str, tuple[int, bool]] = {
    "fp32": (32, False),
    "int8_wo": (8, False),  # int8 weights per output channel, float activations
    "int4_rtn": (4, False),  # uint4 group-wise, round to nearest
    "int4_gptq": (4, True),  # uint4 group-wise, GPTQ error compensation (Hessian of inputs)
    "w8a8": (8, True),  # int8 weights per channel + calibrated static int8 activations
}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    def check(self) -> None:
        """Raise ``ConfigError`` for values pydantic's types cannot rule out."""


class ActivationConfig(_Strict):
    """How W8A8 layers calibrate and quantize their input activations (per tensor)."""

    observer: Literal["minmax", "percentile", "topk_median"] = "minmax"
    """Range estimator. ``minmax``: the extremes seen. ``percentile``: the
    ``percentile_pct`` / ``100 - percentile_pct`` percentiles of a sample of values.
    ``topk_median``: the median of the ``topk`` largest (smallest) values seen, which
    ignores up to ``topk / 2`` outliers."""
    percentile_pct: float = Field(99.99, gt=50.0, le=100.0)
    """Upper percentile in percent for ``observer='percentile'``."""
    topk: int = Field(32, ge=1)
    """How many extreme values ``observer='topk_median'`` keeps per side."""
    quantizer: Literal["uniform", "pwlq"] = "uniform"
    """``uniform``: one affine grid. ``pwlq``: piecewise-linear (dense middle, sparse
    tails; breakpoints chosen by least squared error on the calibration sample). PWLQ
    layers run on the reference (dequantize) kernel."""
    reduce_range: bool = True
    """Use activation codes 0..127 instead of 0..255: x86 int8 kernels (fbgemm, AVX2)
    saturate 16-bit pair sums with full 8-bit activations."""
    sample_values_per_batch: int = Field(4096, ge=64)
    """Values sampled from each calibration batch per layer for percentiles and PWLQ."""


class SensitivityConfig(_Strict):
    """Per-layer sensitivity: quantize one layer at a time, measure against the float model."""

    enabled: bool = False
    schemes: list[str] = Field(default_factory=lambda: ["int4_rtn", "int8_wo"])
    """Schemes each layer is measured under."""
    kl_batches: int = Field(2, ge=0)
    """Calibration batches used for the output KL divergence column (0 = skip)."""

    def check(self) -> None:
        for i, s in enumerate(self.schemes):
            if s not in SCHEMES or s == "fp32":
                raise ConfigError(
                    f"sensitivity.schemes[{i}]",
                    s,
                    f"unknown scheme; choose from {sorted(set(SCHEMES) - {'fp32'})}",
                )


class MixedPrecisionConfig(_Strict):
    """Accuracy-aware mixed precision: the smallest model within a relative metric loss."""

    enabled: bool = False
    max_rel_metric_loss: float = Field(0.01, ge=0.0)
    """Tolerable relative metric loss versus the float model (0.01 = 1%)."""
    ladder: list[str] = Field(default_factory=lambda: ["int4_rtn", "int8_wo", "fp32"])
    """Schemes from smallest to largest; every layer starts at the first and the most
    sensitive are promoted one rung at a time until the budget holds. Must end in fp32."""

    def check(self) -> None:
        for i, s in enumerate(self.ladder):
            if s not in SCHEMES:
                raise ConfigError(
                    f"mixed_precision.ladder[{i}]",
                    s,
                    f"unknown scheme; choose from {sorted(SCHEMES)}",
                )
        if not self.ladder or self.ladder[-1] != "fp32":
            raise ConfigError(
                "mixed_precision.ladder",
                self.ladder,
                "must end with 'fp32' so the budget can always be met",
            )


class LatencyConfig(_Strict):
    """Latency objective beside the accuracy budget, measured on the backend the model runs on.

    ``not_slower`` (default): after the accuracy choice, time the float and the quantized
    model (alternating rounds, median ratio) at each of ``batch_sizes`` on inputs cut from
    the first calibration batch; while the quantized one is slower at any batch size, the
    layers whose kernels lose to their float op move to the first ``fallback`` scheme that
    is not slower, else stay float; a model still slower after that keeps every layer float.
    Every change is listed in the report. ``off``: no timing.
    """

    objective: Literal["not_slower", "off"] = "not_slower"
    batch_sizes: list[int] = Field(default_factory=lambda: [1, 32])
    """Batch sizes (first-dimension rows) the model must not be slower at."""
    repeats: int = Field(5, ge=1)
    """Alternating float/quantized timing rounds per batch size (their median ratio counts)."""
    max_repeats: int = Field(20, ge=1)
    """Rounds at most: rounds are added while the ratio is within two standard errors of
    the threshold, so a close call is decided on more evidence."""
    tolerance: float = Field(0.0, ge=0.0, le=0.5)
    """Relative slack: ``quantized <= float * (1 + tolerance)`` passes. 0: not slower at all."""
    fallback: list[str] = Field(default_factory=lambda: ["w8a8", "fp32"])
    """Schemes tried, in order, for a layer whose kernel is slower than float. ``w8a8`` is
    tried only under a mixed-precision budget and kept only if it saves time over the batch
    sizes and the budget still holds (re-measured); must end in ``fp32``."""

    def check(self) -> None:
        for i, b in enumerate(self.batch_sizes):
            if not isinstance(b, int) or b < 1:
                raise ConfigError(f"latency.batch_sizes[{i}]", b, "must be a positive integer")
        for i, s in enumerate(self.fallback):
            if s not in SCHEMES:
                raise ConfigError(f"latency.fallback[{i}]", s,
                                  f"unknown scheme; choose from {sorted(SCHEMES)}")
        if self.max_repeats < self.repeats:
            raise ConfigError("latency.max_repeats", self.max_repeats,
                              f"must be at least latency.repeats ({self.repeats})")
        if not self.fallback or self.fallback[-1] != "fp32":
            raise ConfigError("latency.fallback", self.fallback,
                              "must end with 'fp32' so a slow layer can always stay float")


class QuantizeConfig(_Strict):
    """What to quantize and how. Units: bytes, seconds, samples; losses are relative."""

    scheme: str = "int8_wo"
    """Default scheme for every Linear/Conv/Embedding layer: one of ``SCHEMES``."""
    group_size: int = Field(128, ge=2)
    """int4 group size in input columns (32/64/128); must divide each int4 layer's inputs."""
    overrides: dict[str, str] = Field(default_factory=dict)
    """Per-layer scheme by ``fnmatch`` pattern on the module name, e.g. ``{"head": "fp32"}``;
    the first matching pattern wins."""
    quantize_embeddings: bool = True
    """Quantize ``nn.Embedding`` tables (weight-only; W8A8 means int8 weights there)."""
    max_calibration_samples: int = Field(256, ge=1)
    """Calibration samples (rows: the first dimension of each batch) used at most; the last
    batch is cut to fit."""
    activation: ActivationConfig = Field(default_factory=ActivationConfig)
    smoothquant_alpha: float | Literal["auto"] | None = None
    """SmoothQuant for W8A8 Linear layers (migrate activation outliers into the weights).
    ``"auto"`` (recommended) picks the strength per layer from ``smoothquant_alphas`` by
    the least output error on calibration samples; 0 (no smoothing) is a candidate, so
    it never does worse there than plain W8A8. A number fixes it for every layer (a fixed
    0.5 can hurt: measure). ``None``: off."""
    smoothquant_alphas: list[float] = Field(
        default_factory=lambda: [0.0, 0.25, 0.5, 0.6, 0.75, 0.85])
    """Candidates of the ``auto`` search."""
    gptq_damp_ratio: float = Field(0.01, gt=0.0)
    """Damping added to the Hessian diagonal, as a fraction of its mean."""
    gptq_block_columns: int = Field(128, ge=1)
    """Columns processed per GPTQ block (lazy batch updates)."""
    sensitivity: SensitivityConfig = Field(default_factory=SensitivityConfig)
    mixed_precision: MixedPrecisionConfig = Field(default_factory=MixedPrecisionConfig)
    latency: LatencyConfig = Field(default_factory=LatencyConfig)
    metric_higher_is_better: bool = False
    """Direction of ``eval_fn``'s metric: False for loss/perplexity, True for accuracy."""
    backend: str = "auto"
    """Runtime backend the returned model runs on (see ``forgeline.quantize.runtime``)."""

    def __init__(self, **data: Any) -> None:
        if "group_size" in data and isinstance(data["group_size"], int) \
                and data["group_size"] < 2:
            raise ConfigError("group_size", data["group_size"],
                              "must be an even number >= 2 (two 4-bit codes per byte)")
        # Checked here, outside pydantic's validation, so the error stays a ConfigError.
        # (Nested configs are checked from here too: pydantic would wrap their errors.)
        super().__init__(**data)
        self.check()

    def check(self) -> None:
        if self.scheme not in SCHEMES:
            raise ConfigError(
                "scheme", self.scheme, f"unknown scheme; choose from {sorted(SCHEMES)}"
            )
        alpha = self.smoothquant_alpha
        if isinstance(alpha, float | int) and not 0.0 <= alpha <= 1.0:
            raise ConfigError("smoothquant_alpha", alpha, "must lie in [0, 1], or be 'auto'")
        if self.group_size % 2:
            raise ConfigError(
                "group_size",
                self.group_size,
                "must be even (two 4-bit codes are packed per byte per row)",
            )
        for pattern, s in self.overrides.items():
            if s not in SCHEMES:
                raise ConfigError(
                    f"overrides[{pattern!r}]", s, f"unknown scheme; choose from {sorted(SCHEMES)}"
                )
        self.sensitivity.check()
        self.mixed_precision.check()
        self.latency.check()
        for i, a in enumerate(self.smoothquant_alphas):
            if not 0.0 <= a <= 1.0:
                raise ConfigError(f"smoothquant_alphas[{i}]", a, "must lie in [0, 1]")
        from forgeline.quantize.runtime.backends import BACKENDS  # torch-only; cheap

        if self.backend != "auto" and self.backend not in BACKENDS:
            raise ConfigError(
                "backend", self.backend, f"unknown; choose one of {['auto', *BACKENDS]}"
            )
