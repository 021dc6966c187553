"""The latency objective: a quantized model that is not slower than the float one, here.

Quantized kernels do not always win: a weight-only layer that decodes its weight on every
call, or a small int8 GEMM whose overhead exceeds its savings, can be slower than the float
op on a given CPU. So after the accuracy choice the float and quantized models are timed
(interleaved rounds, medians) on inputs cut from a calibration batch at each configured
batch size. While the quantized model is slower, each layer whose kernel loses to its
float op (timed alone on its own captured inputs) moves to the first fallback scheme whose
kernel wins (a W8A8 move is kept only if the accuracy budget still holds), else stays
float. Every move and every timing lands in the report.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from forgeline.quantize.calibrate import Batch, resize, run_model
from forgeline.quantize.config import LatencyConfig
from forgeline.quantize.report import LatencyReport
from forgeline.quantize.runtime.backends import Backend
from forgeline.quantize.runtime.qmodules import QuantModule
from forgeline.quantize.sensitivity import LayerBank

log = logging.getLogger(__name__)


@dataclass
class LatencyTask:
    """What the objective works on: the float model, the working copy's layer bank, the
    backend to time, one example batch, and how to check the accuracy budget again."""

    float_model: nn.Module
    bank: LayerBank
    backend: Backend
    example: Batch
    config: LatencyConfig
    within_budget: Callable[[], bool] | None = None
    """Re-measures the metric of ``bank.work`` against the budget (None: no budget)."""
    stats_for: Callable[[str, str], bool] = lambda name, scheme: True
    """Whether layer ``name`` has what ``scheme`` needs (e.g. W8A8 activation ranges)."""
    report: LatencyReport = field(init=False)

    def __post_init__(self) -> None:
        self.report = LatencyReport(objective=self.config.objective, checked=True,
                                    tolerance=self.config.tolerance)


def _median_ms(fn: Callable[[], Any], iters: int) -> float:
    times = []
    for _ in range(iters):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return 1e3 * statistics.median(times)


@torch.inference_mode()
def paired_ms(a: Callable[[], Any], b: Callable[[], Any], repeats: int,
              iters: int = 3) -> tuple[float, float, float]:
    """``(median ms of a, median ms of b, median of per-round b/a)``, rounds interleaved."""
    a(), b()  # warm-up (kernel selection, allocator)
    ta, tb = [], []
    for _ in range(repeats):
        ta.append(_median_ms(a, iters))
        tb.append(_median_ms(b, iters))
    ratio = statistics.median(y / x for x, y in zip(ta, tb, strict=True))
    return statistics.median(ta), statistics.median(tb), ratio


def _install(layer: nn.Module, backend: Backend) -> None:
    if isinstance(layer, QuantModule):
        layer.kernel_name = backend.install(layer)


def _apply(task: LatencyTask, assignment: dict[str, str]) -> None:
    task.bank.apply(assignment)
    for name in assignment:
        _install(task.bank.work.get_submodule(name) if name else task.bank.work, task.backend)


def measure_models(task: LatencyTask) -> dict[str, tuple[float, float, float]]:
    """Per batch size ``b{n}``: float ms, quantized ms, quantized ÷ float."""
    out = {}
    for b in task.config.batch_sizes:
        x = resize(task.example, b)
        out[f"b{b}"] = paired_ms(lambda x=x: run_model(task.float_model, x),
                                 lambda x=x: run_model(task.bank.work, x), task.config.repeats)
    return out


@torch.inference_mode()
def _layer_inputs(model: nn.Module, names: list[str], batch: Batch) -> dict[str, torch.Tensor]:
    captured: dict[str, torch.Tensor] = {}
    handles = [model.get_submodule(n).register_forward_pre_hook(
        lambda _m, args, n=n: captured.setdefault(n, args[0])) for n in names]
    try:
        run_model(model, batch)
    finally:
        for h in handles:
            h.remove()
    return captured


def layer_excess_ms(task: LatencyTask, names: list[str],
                    candidate: Callable[[str], nn.Module]) -> dict[str, float]:
    """Per layer: summed over batch sizes, ms of ``candidate(name)`` minus ms of the float
    layer on the same captured input (positive = the candidate is slower)."""
    floats = task.bank.floats
    excess = dict.fromkeys(names, 0.0)
    for b in task.config.batch_sizes:
        inputs = _layer_inputs(task.float_model, names, resize(task.example, b))
        for n, x in inputs.items():
            q = candidate(n)
            tf, tq, _ = paired_ms(lambda f=floats[n], x=x: f(x), lambda q=q, x=x: q(x),
                                  max(1, task.config.repeats // 2), iters=2)
            excess[n] += tq - tf
    return excess


def _met(task: LatencyTask, timings: dict[str, tuple[float, float, float]]) -> bool:
    return all(r <= 1 + task.config.tolerance for _, _, r in timings.values())


def _record(task: LatencyTask, timings: dict[str, tuple[float, float, float]]) -> None:
    rep = task.report
    rep.float_ms = {k: round(v[0], 3) for k, v in timings.items()}
    rep.quantized_ms = {k: round(v[1], 3) for k, v in timings.items()}
    rep.ratio = {k: round(v[2], 4) for k, v in timings.items()}
    rep.met = _met(task, timings)


def apply_latency_objective(task: LatencyTask, assignment: dict[str, str]) -> dict[str, str]:
    """The assignment after the objective (see the module doc); fills ``task.report``."""
    assignment = dict(assignment)
    _apply(task, assignment)
    timings = measure_models(task)
    task.report.first_ratio = {k: round(v[2], 4) for k, v in timings.items()}
    _record(task, timings)
    if task.report.met:
        return assignment
    quantized = [n for n, s in assignment.items() if s != "fp32" and n != ""]
    excess = layer_excess_ms(task, quantized, lambda n: task.bank.work.get_submodule(n))
    slow = sorted((n for n in quantized if excess[n] > 0), key=lambda n: -excess[n])
    log.info("latency: quantized/float %s; %d of %d layers slower than float",
             task.report.first_ratio, len(slow), len(quantized))
    for scheme in task.config.fallback:
        if not slow:
            break
        slow = _fall_back(task, assignment, slow, scheme, excess)
    timings = measure_models(task)
    _record(task, timings)
    if not task.report.met:
        task.report.notes.append(
            "still slower than float after the fallbacks: the remaining gap is in layers "
            "that no scheme can speed up here, or timing noise on a busy machine")
    return assignment


def _fall_back(task: LatencyTask, assignment: dict[str, str], slow: list[str], scheme: str,
               excess: dict[str, float]) -> list[str]:
    """Move the ``slow`` layers to ``scheme`` where it helps; return those still slow."""
    if scheme == "fp32":
        for n in slow:
            task.report.changes[n] = (f"{assignment[n]} → fp32: its kernel "
                                      f"({_kernel(task, n)}) was {excess[n]:.3g} ms slower than "
                                      "the float op over the batch sizes; no fallback won")
            assignment[n] = "fp32"
        _apply(task, assignment)
        return []
    if task.within_budget is None and scheme != "fp32":
        task.report.notes.append(f"{scheme} fallback not tried: no accuracy budget to check "
                                 "it against (mixed precision off)")
        return slow
    usable = [n for n in slow if n and assignment[n] != scheme and task.stats_for(n, scheme)]
    if not usable:
        return slow

    def build(n: str) -> nn.Module:
        layer = task.bank.get(n, scheme)
        _install(layer, task.backend)
        return layer

    gains = layer_excess_ms(task, usable, build)
    moved = {n: assignment[n] for n in usable if gains[n] < 0}
    if not moved:
        return slow
    for n in moved:
        assignment[n] = scheme
    _apply(task, assignment)
    if task.within_budget is not None and not task.within_budget():
        for n, old in moved.items():
            assignment[n] = old
        _apply(task, assignment)
        task.report.notes.append(f"{scheme} fallback for {sorted(moved)} broke the accuracy "
                                 "budget; reverted")
        return slow
    for n, old in moved.items():
        task.report.changes[n] = (f"{old} → {scheme}: kernel {_kernel(task, n)} beat the "
                                  f"float op by {-gains[n]:.3g} ms where {old} lost by "
                                  f"{excess[n]:.3g} ms")
    return [n for n in slow if n not in moved]


def _kernel(task: LatencyTask, name: str) -> str:
    layer = task.bank.work.get_submodule(name)
    return layer.kernel_name if isinstance(layer, QuantModule) else "float"
