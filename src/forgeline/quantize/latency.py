"""The latency objective: a quantized model that is not slower than the float one, here.

Quantized kernels do not always win: a weight-only layer that decodes its weight on every
call, or a small int8 GEMM whose overhead exceeds its savings, can be slower than the float
op on a given CPU. So after the accuracy choice the float and quantized models are timed on
inputs cut from a calibration batch at each configured batch size, and the quantized one
must not be slower at any of them (``ratio <= 1 + tolerance``; the tolerance is 0 by
default). While it is slower, each quantized layer that is slower than its float op (timed
alone on its own captured inputs) at a batch size where the model is slower moves to the
first fallback scheme whose kernel saves time over the batch sizes (each size's saving
counted as a share of the float model's time at that size; a W8A8 move is kept only if the
accuracy budget still holds), else stays float. After
``MAX_PASSES`` such passes a model that is still slower has every remaining layer put
back to float: it then runs the float model's own ops. Every move and every timing lands
in the report.

Timing (``paired_timing``): the two callables run in alternating rounds of the same number
of calls, sized so that a round lasts about ``ROUND_S``; the result is the median of the
per-round ratios. While the threshold lies within two standard errors of the mean
log-ratio, rounds are added (up to ``max_repeats``), so a decision close to the threshold
rests on more evidence instead of flipping with the machine's noise.
"""

from __future__ import annotations

import logging
import math
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

ROUND_S = 0.025
"""Target length of one timing round: enough calls that timer and scheduler noise average."""
MAX_CALLS = 500
"""Calls per round at most (a layer at batch 1 can take a few microseconds)."""
MAX_PASSES = 3
"""Time-and-move passes over the layers before the last resort (all remaining float)."""


@dataclass(frozen=True)
class Paired:
    """Two callables timed against each other."""

    a_ms: float
    """Median per-call ms of the first."""
    b_ms: float
    ratio: float
    """Median over rounds of (b's per-call ms ÷ a's) in the same round."""
    rounds: int


def _median_ms(fn: Callable[[], Any], calls: int) -> float:
    times = []
    for _ in range(calls):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return 1e3 * statistics.median(times)


def _undecided(ta: list[float], tb: list[float], threshold: float) -> bool:
    logs = [math.log(y / x) for x, y in zip(ta, tb, strict=True) if x > 0 and y > 0]
    if len(logs) < 3:
        return True
    se = statistics.stdev(logs) / math.sqrt(len(logs))
    return abs(statistics.fmean(logs) - math.log(threshold)) < 2 * se


@torch.inference_mode()
def paired_timing(a: Callable[[], Any], b: Callable[[], Any], repeats: int, *,
                  max_repeats: int | None = None, threshold: float = 1.0) -> Paired:
    """Time ``b`` against ``a`` in alternating rounds (a b, b a, …) of equal call counts;
    ``repeats`` rounds, more up to ``max_repeats`` while b/a is too close to ``threshold``
    to tell (see the module doc)."""
    slowest = 0.0
    for fn in (a, b, a, b):  # warm-up (kernel selection, allocator), then one timed call each
        t = time.perf_counter()
        fn()
        slowest = max(slowest, time.perf_counter() - t)
    calls = max(1, min(MAX_CALLS, math.ceil(ROUND_S / max(slowest, 1e-7))))
    ta: list[float] = []
    tb: list[float] = []
    limit = max(repeats, max_repeats or repeats)
    while len(ta) < repeats or (len(ta) < limit and _undecided(ta, tb, threshold)):
        if len(ta) % 2:
            tb.append(_median_ms(b, calls))
            ta.append(_median_ms(a, calls))
        else:
            ta.append(_median_ms(a, calls))
            tb.append(_median_ms(b, calls))
    ratio = statistics.median(y / x for x, y in zip(ta, tb, strict=True))
    return Paired(statistics.median(ta), statistics.median(tb), ratio, len(ta))


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

    @property
    def limit(self) -> float:
        """The largest quantized ÷ float ratio that counts as not slower."""
        return 1 + self.config.tolerance


def _install(layer: nn.Module, backend: Backend) -> None:
    if isinstance(layer, QuantModule):
        layer.kernel_name = backend.install(layer)


def _apply(task: LatencyTask, assignment: dict[str, str]) -> None:
    task.bank.apply(assignment)
    for name in assignment:
        _install(task.bank.work.get_submodule(name) if name else task.bank.work, task.backend)


def measure_models(task: LatencyTask) -> dict[str, Paired]:
    """Per batch size ``b{n}``: the float model (a) against the quantized one (b)."""
    out = {}
    for b in task.config.batch_sizes:
        x = resize(task.example, b)
        out[f"b{b}"] = paired_timing(lambda x=x: run_model(task.float_model, x),
                                     lambda x=x: run_model(task.bank.work, x),
                                     task.config.repeats, max_repeats=task.config.max_repeats,
                                     threshold=task.limit)
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


def layer_timings(task: LatencyTask, names: list[str],
                  candidate: Callable[[str], nn.Module]) -> dict[str, dict[str, Paired]]:
    """Per layer and batch size: its float op (a) against ``candidate(name)`` (b), on the
    input the float model gives that layer (a layer the model never calls has none)."""
    floats = task.bank.floats
    out: dict[str, dict[str, Paired]] = {n: {} for n in names}
    rounds = max(3, task.config.repeats // 2 + 1)
    for b in task.config.batch_sizes:
        inputs = _layer_inputs(task.float_model, names, resize(task.example, b))
        for n, x in inputs.items():
            q = candidate(n)
            out[n][f"b{b}"] = paired_timing(lambda f=floats[n], x=x: f(x),
                                            lambda q=q, x=x: q(x), rounds,
                                            max_repeats=2 * task.config.repeats,
                                            threshold=task.limit)
    return out


def _share(timings: dict[str, Paired], model_ms: dict[str, float]) -> float:
    """A layer's time over its float op's, summed over batch sizes as shares of the float
    model's time at each (negative: it saves time)."""
    return sum((t.b_ms - t.a_ms) / model_ms[k] for k, t in timings.items())


def _ratios(timings: dict[str, Paired]) -> str:
    return ", ".join(f"{k} {t.ratio:.2f}×" for k, t in timings.items())


def _quantized(assignment: dict[str, str]) -> list[str]:
    return [n for n, s in assignment.items() if s != "fp32" and n != ""]


def _record(task: LatencyTask, timings: dict[str, Paired], assignment: dict[str, str]) -> None:
    rep = task.report
    rep.float_ms = {k: round(v.a_ms, 3) for k, v in timings.items()}
    rep.quantized_ms = {k: round(v.b_ms, 3) for k, v in timings.items()}
    rep.ratio = {k: round(v.ratio, 4) for k, v in timings.items()}
    rep.rounds = {k: v.rounds for k, v in timings.items()}
    rep.met = (all(v.ratio <= task.limit for v in timings.values())
               or not any(s != "fp32" for s in assignment.values()))


def apply_latency_objective(task: LatencyTask, assignment: dict[str, str]) -> dict[str, str]:
    """The assignment after the objective (see the module doc); fills ``task.report``."""
    original, assignment = dict(assignment), dict(assignment)
    _apply(task, assignment)
    timings = measure_models(task)
    task.report.first_ratio = {k: round(v.ratio, 4) for k, v in timings.items()}
    _record(task, timings, assignment)
    for _ in range(MAX_PASSES):
        quantized = _quantized(assignment)
        if task.report.met or not quantized:
            break
        failing = [k for k, t in timings.items() if t.ratio > task.limit]
        own = layer_timings(task, quantized, lambda n: task.bank.work.get_submodule(n))
        slow = [n for n in quantized if any(own[n][k].ratio > task.limit
                                            for k in failing if k in own[n])]
        log.info("latency: quantized/float %s; %d of %d layers slower than float",
                 task.report.ratio, len(slow), len(quantized))
        if not slow:
            break
        for scheme in task.config.fallback:
            if not slow:
                break
            slow = _fall_back(task, original, assignment, slow, scheme, own=own,
                              model_ms={k: t.a_ms for k, t in timings.items()})
        timings = measure_models(task)
        _record(task, timings, assignment)
    if not task.report.met:
        _all_float(task, original, assignment, timings)
    return assignment


def _all_float(task: LatencyTask, original: dict[str, str], assignment: dict[str, str],
               timings: dict[str, Paired]) -> None:
    """The last resort: every remaining quantized layer back to float."""
    rest = [n for n, s in assignment.items() if s != "fp32"]
    _to_float(task, assignment, {n: (
        f"{original[n]} → fp32: the model was still slower than float ({_ratios(timings)}) "
        "after the per-layer fallbacks; kept float so the model is not slower") for n in rest})
    task.report.notes.append(
        f"still slower than float ({_ratios(timings)}) after the per-layer fallbacks: "
        f"{len(rest)} remaining quantized layer(s) kept float, so the model runs the float "
        "model's ops")
    _record(task, measure_models(task), assignment)


def _to_float(task: LatencyTask, assignment: dict[str, str], why: dict[str, str]) -> None:
    """Put the layers in ``why`` back to float, each change with its reason."""
    task.report.changes |= why
    for n in why:
        assignment[n] = "fp32"
    _apply(task, assignment)


def _fall_back(task: LatencyTask, original: dict[str, str], assignment: dict[str, str],
               slow: list[str], scheme: str, *, own: dict[str, dict[str, Paired]],
               model_ms: dict[str, float]) -> list[str]:
    """Move the ``slow`` layers to ``scheme`` where it saves time; return those still slow."""
    if scheme == "fp32":
        _to_float(task, assignment, {n: (
            f"{original[n]} → fp32: its kernel ({_kernel(task, n)}) ran at {_ratios(own[n])} "
            "of the float op; no fallback was faster") for n in slow})
        return []
    if task.within_budget is None:
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

    trial = layer_timings(task, usable, build)
    moved = {n: assignment[n] for n in usable if trial[n] and _share(trial[n], model_ms) < 0}
    if not moved:
        return slow
    for n in moved:
        assignment[n] = scheme
    _apply(task, assignment)
    if not task.within_budget():
        for n, old in moved.items():
            assignment[n] = old
        _apply(task, assignment)
        task.report.notes.append(f"{scheme} fallback for {sorted(moved)} broke the accuracy "
                                 "budget; reverted")
        return slow
    for n, old in moved.items():
        task.report.changes[n] = (f"{original[n]} → {scheme}: kernel {_kernel(task, n)} ran at "
                                  f"{_ratios(trial[n])} of the float op, where {old} ran at "
                                  f"{_ratios(own[n])}")
    return [n for n in slow if n not in moved]


def _kernel(task: LatencyTask, name: str) -> str:
    layer = task.bank.work.get_submodule(name)
    return layer.kernel_name if isinstance(layer, QuantModule) else "float"
