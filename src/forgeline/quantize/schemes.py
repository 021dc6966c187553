"""Schemes: turn one float layer (plus its calibration statistics) into a QuantModule.

- ``int8_wo``: symmetric int8 per output channel; activations stay float.
- ``int4_rtn``: asymmetric uint4 per group of ``group_size`` inputs, round to nearest.
- ``int4_gptq``: the same format, codes chosen by GPTQ from the input Hessian.
- ``w8a8``: ``int8_wo`` weights plus static per-tensor activation quantization from
  calibrated ranges (uniform or piecewise-linear), optionally SmoothQuant-ed first.
Embeddings are weight-only whatever the scheme (their input is indices). A transformers
``Conv1D`` (GPT-2) arrives here as a Linear (see ``runtime.conv1d``) and is one.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from forgeline.errors import ConfigError
from forgeline.quantize.config import SCHEMES, QuantizeConfig
from forgeline.quantize.gptq import gptq_int4
from forgeline.quantize.observers import RangeObserver
from forgeline.quantize.runtime.architecture import constructor_args, type_name
from forgeline.quantize.runtime.conv1d import float_identity
from forgeline.quantize.runtime.qmodules import KIND_OF, QuantModule, layer_kind
from forgeline.quantize.runtime.qtensor import (
    QuantizedWeight,
    fake_quant_pwlq,
    pwlq_levels,
    quantize_int4_groupwise,
    quantize_int8_per_channel,
    uniform_act_params,
)

PWLQ_BITS = 8
_PWLQ_TAIL_FRACTIONS = (0.0005, 0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2)


@dataclass
class LayerStats:
    """What calibration learned about one layer's inputs."""

    ranges: RangeObserver | None = None
    channel_absmax: torch.Tensor | None = None
    smooth_scale: torch.Tensor | None = None
    hessian: torch.Tensor | None = None
    smoothquant_alpha: float | None = None
    notes: list[str] = field(default_factory=list)


def quantizable_layers(model: nn.Module, config: QuantizeConfig) -> dict[str, nn.Module]:
    """Linear / Conv1d / Conv2d / Embedding layers (or subclasses) that have a quantized
    counterpart; :func:`skipped_layers` says why the others are left float."""
    skipped = skipped_layers(model, config)
    return {name: m for name, m in model.named_modules()
            if layer_kind(m) is not None and name not in skipped}


def skipped_layers(model: nn.Module, config: QuantizeConfig) -> dict[str, str]:
    """Weight layers left float, each with the reason (listed in the report)."""
    out: dict[str, str] = {}
    parents = {name: m for name, m in model.named_modules()}
    for name, m in model.named_modules():
        if not isinstance(m, tuple(KIND_OF)):
            continue
        parent = parents.get(name.rpartition(".")[0]) if name else None
        if isinstance(parent, nn.MultiheadAttention):
            out[name] = ("inside nn.MultiheadAttention, which reads its .weight directly "
                         "(the layer's forward is never called), so it stays float")
        elif layer_kind(m) is None:
            out[name] = (f"{type(m).__name__} overrides forward(); a quantized stand-in "
                         "could not reproduce it, so it stays float")
        elif isinstance(m, nn.Embedding) and not config.quantize_embeddings:
            out[name] = "quantize_embeddings is False"
        elif isinstance(m, nn.Embedding) and m.max_norm:
            out[name] = "max_norm renormalizes the float table in place on lookup"
        elif isinstance(m, nn.Conv1d | nn.Conv2d) and m.padding_mode != "zeros":
            out[name] = f"padding_mode={m.padding_mode!r} (only 'zeros' is supported)"
    return out


def scheme_for(name: str, config: QuantizeConfig) -> str:
    """The scheme a layer gets: the first matching override, else ``config.scheme``."""
    for pattern, scheme in config.overrides.items():
        if fnmatch.fnmatchcase(name, pattern):
            return scheme
    return config.scheme


def weight_columns(m: nn.Module) -> int:
    return m.weight[0].numel()


def check_layer(name: str, m: nn.Module, scheme: str, config: QuantizeConfig) -> None:
    """Raise ``ConfigError`` when ``scheme`` cannot apply to layer ``name``."""
    if scheme not in SCHEMES:
        raise ConfigError("scheme", scheme, f"unknown scheme; choose from {sorted(SCHEMES)}")
    if SCHEMES[scheme][0] == 4 and weight_columns(m) % config.group_size:
        raise ConfigError(
            "group_size",
            config.group_size,
            f"does not divide the {weight_columns(m)} input columns of layer '{name}' "
            f"({type(m).__name__}); pick a divisor or override that layer's scheme",
        )


def _spec(
    m: nn.Module,
    scheme: str,
    bits: int,
    config: QuantizeConfig,
    activation: dict[str, Any] | None,
    smooth: bool,
) -> dict[str, Any]:
    identity = float_identity(m)  # a transformers Conv1D quantized as the Linear it is
    return {
        **({"float_args": identity[1]} if identity else {}),
        "kind": layer_kind(m),
        "float_type": type_name(m),
        "args": constructor_args(m),
        "scheme": scheme,
        "bits": bits,
        "group_size": config.group_size if bits == 4 else None,
        "has_bias": getattr(m, "bias", None) is not None,
        "activation": activation,
        "smooth": smooth,
        "dtype": str(m.weight.dtype).removeprefix("torch."),
    }


def smooth_scale(channel_absmax: torch.Tensor, weight: torch.Tensor, alpha: float) -> torch.Tensor:
    """SmoothQuant's ``s_j = max|X_j|^a / max|W_j|^(1-a)`` per input column ``j``."""
    w_absmax = weight.detach().reshape(weight.shape[0], -1).abs().amax(dim=0).float()
    s = channel_absmax.float().clamp_min(1e-5) ** alpha / w_absmax.clamp_min(1e-5) ** (1 - alpha)
    s = torch.where((channel_absmax > 0) & (w_absmax > 0), s, torch.ones_like(s))
    return s.clamp(1e-4, 1e4)


def smoothquant_applies(m: nn.Module) -> bool:
    """SmoothQuant needs weight columns = input channels: Linear, or 1x1 ungrouped Conv."""
    if isinstance(m, nn.Linear):
        return True
    return (
        isinstance(m, nn.Conv1d | nn.Conv2d)
        and m.groups == 1
        and weight_columns(m) == m.in_channels
    )


def choose_pwlq(
    sample: torch.Tensor, lo: float, hi: float, bits: int = PWLQ_BITS
) -> tuple[torch.Tensor, torch.Tensor]:
    """PWLQ knots ``[lo, a, b, hi]`` and level split minimizing squared error on ``sample``."""
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    s = sample.clamp(lo, hi)
    best: tuple[float, torch.Tensor, torch.Tensor] | None = None
    for frac in _PWLQ_TAIL_FRACTIONS:
        a, b = torch.quantile(s, torch.tensor([frac, 1.0 - frac])).tolist()
        a, b = min(a, 0.0), max(b, 0.0)  # keep zero in the dense middle
        if b - a <= 0:
            continue
        knots = torch.tensor([lo, a, b, hi], dtype=torch.float32)
        levels = pwlq_levels(lo, a, b, hi, bits)
        err = float(((fake_quant_pwlq(s, knots, levels) - s) ** 2).mean())
        if best is None or err < best[0]:
            best = (err, knots, levels)
    if best is None:  # all-zero activations
        return torch.tensor([lo, lo, hi, hi], dtype=torch.float32), pwlq_levels(
            lo, lo, hi, hi, bits
        )
    return best[1], best[2]


@torch.no_grad()
def build_layer(
    m: nn.Module, scheme: str, config: QuantizeConfig, stats: LayerStats | None
) -> tuple[QuantModule, list[str]]:
    """The quantized stand-in of float layer ``m`` under ``scheme``, plus notes."""
    notes: list[str] = []
    stats = stats or LayerStats()
    w = m.weight.detach().to(torch.float32)
    is_embedding = isinstance(m, nn.Embedding)
    activation, smooth = None, None
    if scheme == "w8a8" and not is_embedding:
        notes.extend(stats.notes)
        if stats.smooth_scale is not None:
            smooth = stats.smooth_scale
            w = w * smooth.view(1, -1, *([1] * (w.dim() - 2)))
        act = config.activation
        lo, hi = stats.ranges.range(act.observer, act.percentile_pct)
        if act.quantizer == "pwlq":
            knots, levels = choose_pwlq(stats.ranges.sample(), lo, hi)
            activation = {"kind": "pwlq", "bits": PWLQ_BITS}
        else:
            qmax = 127 if act.reduce_range else 255
            a_scale, a_zero = uniform_act_params(lo, hi, qmax)
            activation = {"kind": "uniform", "qmax": qmax}
    qw: QuantizedWeight
    if scheme in ("int8_wo", "w8a8"):
        bits = 8
        qw = quantize_int8_per_channel(w)
    elif scheme == "int4_gptq" and stats.hessian is not None:
        bits = 4
        qw = gptq_int4(
            w, stats.hessian, config.group_size, config.gptq_damp_ratio, config.gptq_block_columns
        )
    elif scheme in ("int4_rtn", "int4_gptq"):
        if scheme == "int4_gptq":
            notes.append("no input Hessian for this layer type: int4 round-to-nearest used")
        bits = 4
        qw = quantize_int4_groupwise(w, config.group_size)
    else:
        raise ConfigError("scheme", scheme, "has no quantized layer (fp32 keeps the float layer)")
    spec = _spec(m, scheme, bits, config, activation, smooth is not None)
    q = QuantModule(spec)
    q.set_weight(qw)
    if q.bias is not None:
        q.bias.copy_(m.bias.detach().float())
    if smooth is not None:
        q.smooth_scale.copy_(smooth)
    if activation and activation["kind"] == "uniform":
        q.act_scale.copy_(a_scale)
        q.act_zero_point.copy_(a_zero)
    elif activation:
        q.act_knots.copy_(knots)
        q.act_levels.copy_(levels)
    return q, notes
