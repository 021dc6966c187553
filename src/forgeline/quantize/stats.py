"""What calibration learns per layer: activation ranges, input Hessians, SmoothQuant scales.

One calibration pass feeds the observers each layer's candidate schemes need; SmoothQuant
adds a second pass that observes activation ranges after its per-channel division. With
``smoothquant_alpha="auto"`` each layer's strength is the candidate (no smoothing
included) with the least output error on a sample of its calibration inputs.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from forgeline.quantize import calibrate
from forgeline.quantize.config import QuantizeConfig
from forgeline.quantize.observers import (
    ChannelAbsMaxObserver,
    HessianObserver,
    RangeObserver,
    RowSampler,
)
from forgeline.quantize.runtime.qtensor import (
    fake_quant_uniform,
    quantize_int8_per_channel,
    uniform_act_params,
)
from forgeline.quantize.schemes import LayerStats, smooth_scale, smoothquant_applies


def needs_of(scheme: str) -> set[str]:
    """Statistics a scheme needs: ``ranges`` (W8A8) or ``hessian`` (GPTQ)."""
    return {"w8a8": {"ranges"}, "int4_gptq": {"hessian"}}.get(scheme, set())


def gptq_capable(m: nn.Module) -> bool:
    """GPTQ needs the columns the weight sees: Linear, or ungrouped Conv with int padding."""
    if isinstance(m, nn.Linear):
        return True
    return isinstance(m, nn.Conv1d | nn.Conv2d) and m.groups == 1 and not isinstance(m.padding, str)


def _divide(m: nn.Module, s: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    if isinstance(m, nn.Linear):
        return lambda x: x / s
    return lambda x: x / s.view(1, -1, *([1] * (x.dim() - 2)))


def output_error(rows: torch.Tensor, weight: torch.Tensor, s: torch.Tensor | None,
                 qmax: int) -> float:
    """Squared error of a W8A8 Linear on ``rows`` with smoothing scale ``s`` (None = off),
    activations on a min/max grid of the smoothed sample."""
    w = weight.detach().reshape(weight.shape[0], -1).float()
    ref = rows @ w.T
    x, ws = (rows, w) if s is None else (rows / s, w * s)
    a_scale, a_zero = uniform_act_params(float(x.min()), float(x.max()), qmax)
    xq = fake_quant_uniform(x, a_scale, a_zero, qmax)
    y = xq @ quantize_int8_per_channel(ws).dequantize().T
    return float(((y - ref) ** 2).sum())


def choose_alpha(absmax: torch.Tensor, rows: torch.Tensor, weight: torch.Tensor,
                 config: QuantizeConfig) -> tuple[float | None, str]:
    """The SmoothQuant strength with the least output error on ``rows`` (None = off)."""
    qmax = 127 if config.activation.reduce_range else 255
    errors = {None: output_error(rows, weight, None, qmax)}
    for a in config.smoothquant_alphas:
        errors[a] = output_error(rows, weight, smooth_scale(absmax, weight, a), qmax)
    best = min(errors, key=lambda a: errors[a])
    base = errors[None] or 1e-30
    tried = ", ".join(f"{'off' if a is None else a}: {e / base:.3f}" for a, e in errors.items())
    return best, f"SmoothQuant alpha {best if best is not None else 'off'} chosen on " \
                 f"{len(rows)} calibration rows (output error relative to off: {tried})"


def collect_stats(
    model: nn.Module,
    layers: dict[str, nn.Module],
    needs: dict[str, set[str]],
    batches: list,
    config: QuantizeConfig,
) -> dict[str, LayerStats]:
    """Calibration passes feeding the observers the layers need; stats per layer."""
    act = config.activation
    stats = {n: LayerStats() for n in layers}
    alpha = config.smoothquant_alpha
    first: dict[str, list] = {}
    for name, need in needs.items():
        m = layers[name]
        if "hessian" in need and gptq_capable(m):
            first.setdefault(name, []).append(HessianObserver(m))
        if "ranges" in need and not isinstance(m, nn.Embedding):
            if alpha is not None and smoothquant_applies(m):
                first.setdefault(name, []).append(ChannelAbsMaxObserver(
                    -1 if isinstance(m, nn.Linear) else 1))
                if alpha == "auto" and isinstance(m, nn.Linear):
                    first[name].append(RowSampler())
            else:
                first.setdefault(name, []).append(
                    RangeObserver(act.topk, act.sample_values_per_batch))
    if first:
        calibrate.observe(model, batches, first)
    transforms, second = {}, {}
    for name, olist in first.items():
        by_type = {type(o): o for o in olist}
        if HessianObserver in by_type:
            stats[name].hessian = by_type[HessianObserver].h
        if RangeObserver in by_type:
            stats[name].ranges = by_type[RangeObserver]
        if ChannelAbsMaxObserver not in by_type:
            continue
        m, absmax = layers[name], by_type[ChannelAbsMaxObserver].absmax
        chosen = alpha
        if RowSampler in by_type:
            chosen, note = choose_alpha(absmax, by_type[RowSampler].rows, m.weight, config)
            stats[name].notes.append(note)
        elif alpha == "auto":  # conv: no row sample; the mid strength
            chosen = 0.5
            stats[name].notes.append("SmoothQuant alpha 0.5 (no strength search for convs)")
        stats[name].smoothquant_alpha = chosen
        if chosen is not None:
            s = smooth_scale(absmax, m.weight, chosen)
            stats[name].smooth_scale = s
            transforms[name] = _divide(m, s)
        second[name] = [RangeObserver(act.topk, act.sample_values_per_batch)]
    if second:  # activation ranges after SmoothQuant's division
        calibrate.observe(model, batches, second, transforms)
        for name, (o,) in second.items():
            stats[name].ranges = o
    return stats
