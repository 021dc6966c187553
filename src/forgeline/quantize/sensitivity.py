"""Per-layer sensitivity and accuracy-budget mixed precision.

Sensitivity: quantize one layer at a time (all others float) and measure the metric
loss relative to the float model, plus the KL divergence of the outputs.
Mixed precision (after Intel Neural Compressor's accuracy-aware tuning): start with
every layer at the smallest scheme of a ladder, then promote the most sensitive layer
one rung at a time, re-measuring, until the relative loss is within the budget. Every
step is a real evaluation, so the returned assignment's loss is measured, not predicted.
"""

from __future__ import annotations

import logging
import math
import numbers
import sys
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from forgeline.errors import ConfigError
from forgeline.quantize.calibrate import Batch, run_model
from forgeline.quantize.config import QuantizeConfig
from forgeline.quantize.report import (
    MixedPrecisionReport,
    MixedPrecisionStep,
    SensitivityEntry,
)
from forgeline.quantize.runtime.backends import DequantBackend
from forgeline.quantize.runtime.qmodel import replace_submodule
from forgeline.quantize.runtime.qmodules import QuantModule
from forgeline.quantize.schemes import LayerStats, build_layer

log = logging.getLogger(__name__)


def as_metric(value: Any, field_name: str = "eval_fn") -> float:
    """``value`` as a float, or a ``ConfigError`` naming ``field_name``: the evaluator
    contract is a real, finite number (a Python number or a one-element tensor)."""
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ConfigError(field_name, value, "must return a real number (float), e.g. "
                          "accuracy or perplexity; got " + type(value).__name__)
    if not math.isfinite(float(value)):
        raise ConfigError(field_name, value, "returned a non-finite number")
    return float(value)


def rel_metric_loss(metric: float, base: float, higher_is_better: bool) -> float:
    """Relative loss versus ``base`` (positive = worse); absolute when ``base`` is 0."""
    delta = (base - metric) if higher_is_better else (metric - base)
    return delta / abs(base) if base != 0 else delta


class LayerBank:
    """Quantized versions of each layer, built once and swapped into a working copy."""

    def __init__(
        self,
        work: nn.Module,
        floats: dict[str, nn.Module],
        config: QuantizeConfig,
        stats: dict[str, LayerStats],
    ) -> None:
        self.work, self.floats, self.config, self.stats = work, floats, config, stats
        self._built: dict[tuple[str, str], QuantModule] = {}
        self.notes: dict[tuple[str, str], list[str]] = {}

    def get(self, name: str, scheme: str) -> nn.Module:
        if scheme == "fp32":
            return self.floats[name]
        key = (name, scheme)
        if key not in self._built:
            q, notes = build_layer(self.floats[name], scheme, self.config, self.stats.get(name))
            q.kernel_name = DequantBackend(cache=True).install(q)  # fast trial evaluations
            self._built[key] = q
            self.notes[key] = notes
        return self._built[key]

    def apply(self, assignment: dict[str, str]) -> None:
        for name, scheme in assignment.items():
            if name == "":  # the model itself is one quantizable layer
                self.work = self.get(name, scheme)
            else:
                replace_submodule(self.work, name, self.get(name, scheme))

    def weight_bytes(self, name: str, scheme: str) -> int:
        m = self.get(name, scheme)
        if isinstance(m, QuantModule):
            return m.quantized_nbytes()
        return m.weight.numel() * 4


Divergence = Callable[[Any, Any], float]
"""``divergence(float_output, quantized_output) -> float``: how far one batch's quantized
output is from the float one (larger = worse), e.g. ``1 - cosine`` of embeddings."""


def _logits(out: Any) -> torch.Tensor | None:
    if isinstance(out, tuple | list) and out:
        out = out[0]
    if (
        isinstance(out, torch.Tensor)
        and out.is_floating_point()
        and out.dim() >= 1
        and out.shape[-1] > 1
    ):
        return out.detach()
    return None


def kl_divergence(ref: Any, out: Any) -> float | None:
    """Mean KL(float || quantized) over positions of softmax outputs (nats); ``None`` when
    the outputs are not logits (a float tensor with more than one class)."""
    p, q = _logits(ref), _logits(out)
    if p is None or q is None:
        return None
    p_log = F.log_softmax(p.float(), dim=-1)
    q_log = F.log_softmax(q.float(), dim=-1)
    return float((p_log.exp() * (p_log - q_log)).sum(-1).mean())


class OutputDivergence:
    """Mean ``divergence(float, quantized)`` of outputs over a few cached calibration
    batches; KL of softmax outputs by default (language models, classifiers)."""

    def __init__(self, model: nn.Module, batches: list[Batch],
                 divergence: Divergence | None = None) -> None:
        self.batches, self.fn = batches, divergence or kl_divergence
        self.name = "kl" if divergence is None else getattr(divergence, "__name__", "custom")
        with torch.no_grad():
            self.ref = [run_model(model, b) for b in batches]
        self.usable = bool(batches) and (
            divergence is not None or all(_logits(r) is not None for r in self.ref))

    @torch.no_grad()
    def __call__(self, model: nn.Module) -> float | None:
        if not self.usable:
            return None
        values = [self.fn(ref, run_model(model, b))
                  for b, ref in zip(self.batches, self.ref, strict=True)]
        if self.fn is kl_divergence and None in values:
            return None
        values = [as_metric(v, "divergence_fn") for v in values]
        return sum(values) / len(values)


def measure_sensitivity(
    bank: LayerBank,
    names: list[str],
    schemes: list[str],
    evaluate: Callable[[], float],
    base: float,
    higher_is_better: bool,
    divergence: Callable[[nn.Module], float | None] | None,
    divergence_name: str = "kl",
) -> dict[str, dict[str, SensitivityEntry]]:
    """``{layer: {scheme: entry}}``: each layer quantized alone, the rest float."""
    out: dict[str, dict[str, SensitivityEntry]] = {}
    bar = tqdm(names, desc="sensitivity", unit="layer", disable=not sys.stderr.isatty())
    for i, name in enumerate(bar):
        if bar.disable:
            log.info("sensitivity: layer %d/%d %s", i + 1, len(names), name)
        out[name] = {}
        for scheme in schemes:
            bank.apply({name: scheme})
            try:
                metric = evaluate()
                value = divergence(bank.work) if divergence is not None else None
                out[name][scheme] = SensitivityEntry(
                    metric=metric,
                    rel_metric_loss=rel_metric_loss(metric, base, higher_is_better),
                    kl=value if divergence_name == "kl" else None,
                    divergence=value,
                )
            finally:
                bank.apply({name: "fp32"})
    return out


def choose_mixed_precision(
    bank: LayerBank,
    names: list[str],
    ladder: list[str],
    sensitivity: dict[str, dict[str, SensitivityEntry]],
    evaluate: Callable[[], float],
    base: float,
    higher_is_better: bool,
    budget: float,
) -> MixedPrecisionReport:
    """Smallest assignment found within ``budget`` by promoting the most sensitive layers."""
    rung = dict.fromkeys(names, 0)

    def sens(name: str) -> tuple[float, int]:
        scheme = ladder[rung[name]]
        entry = sensitivity.get(name, {}).get(scheme)
        loss = entry.rel_metric_loss if entry and entry.rel_metric_loss is not None else math.inf
        return loss, bank.weight_bytes(name, scheme)

    steps: list[MixedPrecisionStep] = []
    promoted: str | None = None
    while True:
        assignment = {n: ladder[rung[n]] for n in names}
        bank.apply(assignment)
        metric = evaluate()
        loss = rel_metric_loss(metric, base, higher_is_better)
        log.info("mixed precision step %d: promoted %s, rel loss %.5f (budget %.5f)",
                 len(steps), promoted, loss, budget)
        steps.append(
            MixedPrecisionStep(
                promoted=promoted,
                to_scheme=assignment.get(promoted) if promoted else None,
                metric=metric,
                rel_metric_loss=loss,
                weight_bytes=sum(bank.weight_bytes(n, s) for n, s in assignment.items()),
            )
        )
        if loss <= budget:
            return MixedPrecisionReport(
                max_rel_metric_loss=budget, met=True, assignment=assignment, steps=steps
            )
        candidates = [n for n in names if rung[n] < len(ladder) - 1]
        if not candidates:
            return MixedPrecisionReport(
                max_rel_metric_loss=budget, met=False, assignment=assignment, steps=steps
            )
        promoted = max(candidates, key=sens)
        rung[promoted] += 1


def plot_sensitivity(rows: list[dict[str, Any]], title: str = "per-layer sensitivity") -> bytes:
    """PNG bytes of a bar chart of relative metric loss per layer and scheme."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layers = sorted({r["layer"] for r in rows})
    schemes = sorted({r["scheme"] for r in rows})
    width = 0.8 / max(len(schemes), 1)
    fig, ax = plt.subplots(figsize=(max(6, 0.5 * len(layers) + 2), 4))
    for i, s in enumerate(schemes):
        vals = {r["layer"]: r["rel_metric_loss"] or 0.0 for r in rows if r["scheme"] == s}
        ax.bar(
            [j + i * width for j in range(len(layers))],
            [vals.get(x, 0.0) for x in layers],
            width=width,
            label=s,
        )
    ax.set_xticks(
        [j + 0.4 - width / 2 for j in range(len(layers))],
        layers,
        rotation=60,
        ha="right",
        fontsize=7,
    )
    ax.set_ylabel("relative metric loss")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()
