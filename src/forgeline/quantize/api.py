"""``quantize_model``: calibrate, quantize, measure; the one entry point of the stage.

The steps, in order: check the inputs and plan each layer's candidate schemes; calibrate
(the statistics those schemes need); measure sensitivity and choose the mixed-precision
assignment within the accuracy budget; apply the latency objective; build the returned
model on its backend; report.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from forgeline.errors import ConfigError
from forgeline.quantize import calibrate
from forgeline.quantize.config import SCHEMES, QuantizeConfig
from forgeline.quantize.latency import LatencyTask, apply_latency_objective
from forgeline.quantize.report import LatencyReport, LayerReport, QuantizeReport
from forgeline.quantize.runtime.architecture import describe, type_name
from forgeline.quantize.runtime.backends import kernel_summary, resolve_backend
from forgeline.quantize.runtime.conv1d import linearized, restore_conv1d
from forgeline.quantize.runtime.qmodel import QuantizedModel
from forgeline.quantize.runtime.qmodules import QuantModule
from forgeline.quantize.schemes import (
    LayerStats,
    check_layer,
    quantizable_layers,
    scheme_for,
    skipped_layers,
)
from forgeline.quantize.sensitivity import (
    Divergence,
    LayerBank,
    OutputDivergence,
    Trials,
    as_metric,
    choose_mixed_precision,
    measure_sensitivity,
    rel_metric_loss,
)
from forgeline.quantize.stats import collect_stats, needs_of

log = logging.getLogger(__name__)

EvalFn = Callable[[nn.Module], float]
"""``eval_fn(model) -> float``: the task metric of a model (a real, finite number)."""


def load_float_state(model: nn.Module, state_dict: Mapping[str, torch.Tensor]) -> None:
    """Load a float checkpoint strictly; a clear ``ConfigError('checkpoint', ...)`` if it
    does not match the model (missing/unexpected keys, shapes)."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own))
    shapes = [
        f"{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(v.shape)}"
        for k, v in own.items()
        if k in state_dict and tuple(state_dict[k].shape) != tuple(v.shape)
    ]
    problems = (
        ([f"missing {missing[:5]}"] if missing else [])
        + ([f"unexpected {unexpected[:5]}"] if unexpected else [])
        + shapes[:5]
    )
    if problems:
        raise ConfigError(
            "checkpoint",
            f"<state dict of {len(state_dict)} tensors>",
            f"does not match {type(model).__name__}: " + "; ".join(problems),
        )
    model.load_state_dict(state_dict, strict=True)


class _Clock:
    """Runs the metric and divergence functions and adds up the time they take."""

    def __init__(self, eval_fn: EvalFn | None) -> None:
        self.eval_fn, self.seconds = eval_fn, 0.0

    def run(self, fn: Callable[[nn.Module], Any], model: nn.Module) -> Any:
        started = time.perf_counter()
        with torch.no_grad():
            value = fn(model)
        self.seconds += time.perf_counter() - started
        return value

    def metric(self, model: nn.Module) -> float:
        return as_metric(self.run(self.eval_fn, model))


@dataclass
class _Plan:
    """Each layer's default scheme, every scheme it may be tried with, what they need."""

    layers: dict[str, nn.Module]
    default: dict[str, str]
    candidates: dict[str, set[str]]
    needs: dict[str, set[str]]
    skipped: dict[str, str]


@dataclass
class _Outcome:
    """What the report is built from."""

    model: nn.Module
    qmodel: QuantizedModel
    config: QuantizeConfig
    plan: _Plan
    assignment: dict[str, str]
    bank: LayerBank
    batches: list
    quantize_s: float
    eval_s: float
    metric_float: float | None = None
    metric_quantized: float | None = None
    sensitivity: dict = field(default_factory=dict)
    mixed: Any = None
    latency: LatencyReport | None = None
    divergence_name: str | None = None
    float_resident_bytes: int = 0


def _plan(model: nn.Module, config: QuantizeConfig, eval_fn: EvalFn | None,
          with_batches: bool) -> _Plan:
    """Check model, schemes and layers against the config; raise before any work."""
    if not isinstance(model, nn.Module):
        raise ConfigError("model", type(model).__name__, "must be a torch.nn.Module")
    layers = quantizable_layers(model, config)
    if not layers:
        raise ConfigError(
            "model", type(model).__name__,
            "has no Linear/Conv1d/Conv2d/Embedding (or transformers Conv1D) layer to quantize",
        )
    sens, mp = config.sensitivity, config.mixed_precision
    default = {n: scheme_for(n, config) for n in layers}
    extra: set[str] = set()
    if sens.enabled or mp.enabled:
        if eval_fn is None:
            raise ConfigError(
                "eval_fn", None,
                "sensitivity and mixed precision need a metric function eval_fn(model) -> float",
            )
        extra |= set(sens.schemes) if sens.enabled else set()
        extra |= set(mp.ladder) if mp.enabled else set()
    candidates = {n: {default[n]} | extra for n in layers}
    for n, schemes in candidates.items():
        for s in sorted(schemes):
            check_layer(n, layers[n], s, config)
    needs = {n: set().union(*(needs_of(s) for s in schemes)) for n, schemes in candidates.items()}
    if config.latency.objective != "off" and with_batches and "w8a8" in config.latency.fallback:
        for n, m in layers.items():  # ranges for a W8A8 fallback of a slow Linear
            if isinstance(m, nn.Linear):
                needs[n].add("ranges")
    return _Plan(layers, default, candidates, {n: v for n, v in needs.items() if v},
                 skipped_layers(model, config))


def quantize_model(
    model: nn.Module,
    config: QuantizeConfig,
    calibration_batches: Iterable | None = None,
    eval_fn: EvalFn | None = None,
    *,
    state_dict: Mapping[str, torch.Tensor] | None = None,
    divergence_fn: Divergence | None = None,
) -> tuple[QuantizedModel, QuantizeReport]:
    """Quantize ``model`` (left untouched) per ``config``; return the model and a report.

    Quantized: ``nn.Linear``, ``nn.Conv1d``/``Conv2d``, ``nn.Embedding`` and transformers'
    ``Conv1D`` (GPT-2's attention and MLP projections, quantized as the Linear they are).

    ``calibration_batches``: input batches (see :mod:`forgeline.quantize.calibrate`);
    needed by ``w8a8`` / ``int4_gptq``, by the sensitivity divergence and for the latency
    objective's timing inputs. ``eval_fn(model) -> float``: the task metric (direction:
    ``config.metric_higher_is_better``); needed for sensitivity and mixed precision,
    optional otherwise. ``state_dict``: a float checkpoint to load into ``model`` first.
    ``divergence_fn(float_output, quantized_output) -> float``: the per-layer output
    divergence of the sensitivity table (default: KL of softmax outputs). Every input is
    checked before any work starts.
    """
    config.check()
    if state_dict is not None and isinstance(model, nn.Module):
        load_float_state(model, state_dict)
    # a transformers Conv1D (GPT-2) is quantized as the Linear it is; put back on exit
    with linearized(model) if isinstance(model, nn.Module) else nullcontext():
        plan = _plan(model, config, eval_fn, calibration_batches is not None)
        batches: list = []
        if calibration_batches is not None or plan.needs:
            batches = calibrate.take_batches(calibration_batches, config.max_calibration_samples)
        clock = _Clock(eval_fn)
        started = time.perf_counter()
        was_training = model.training
        model.eval()
        try:
            outcome = _quantize(model, config, plan, batches, clock, divergence_fn)
        finally:
            model.train(was_training)
        outcome.quantize_s = time.perf_counter() - started - clock.seconds
        if eval_fn is not None:
            outcome.metric_quantized = clock.metric(outcome.qmodel)
        outcome.eval_s = clock.seconds
    report = _report(outcome)
    if report.mixed_precision is not None and report.rel_metric_loss is not None:
        budget = config.mixed_precision.max_rel_metric_loss
        report.mixed_precision.met = report.rel_metric_loss <= budget
    log.info("quantized %d layers (%s) in %.2fs; size ratio %.2f; runs %s", len(plan.layers),
             report.scheme, outcome.quantize_s, report.size_ratio, report.backend)
    return outcome.qmodel, report


def _quantize(model: nn.Module, config: QuantizeConfig, plan: _Plan, batches: list,
              clock: _Clock, divergence_fn: Divergence | None) -> _Outcome:
    """Calibrate, choose per-layer schemes (accuracy, then latency), build the model."""
    float_resident = _resident(model)
    stats = collect_stats(model, plan.layers, plan.needs, batches, config)
    metric_float = clock.metric(model) if clock.eval_fn is not None else None
    work = copy.deepcopy(model)
    bank = LayerBank(work, {n: work.get_submodule(n) for n in plan.layers}, config, stats)
    outcome = _Outcome(model=model, qmodel=None, config=config, plan=plan,  # type: ignore[arg-type]
                       assignment=plan.default, bank=bank, batches=batches, quantize_s=0.0,
                       eval_s=0.0, metric_float=metric_float,
                       float_resident_bytes=float_resident)
    _choose_for_accuracy(outcome, clock, divergence_fn)
    backend = resolve_backend(config.backend, _device(model))
    if config.latency.objective != "off":
        outcome.latency = _choose_for_latency(outcome, clock, stats, backend)
    bank.apply(outcome.assignment)
    restore_conv1d(bank.work)  # Conv1Ds left float: the artifact matches a transformers model
    outcome.qmodel = QuantizedModel(bank.work, describe(bank.work)).eval()
    outcome.qmodel.set_backend(config.backend)
    return outcome


def _choose_for_accuracy(outcome: _Outcome, clock: _Clock,
                         divergence_fn: Divergence | None) -> None:
    """Sensitivity per layer, then the mixed-precision assignment within the budget."""
    config, bank, names = outcome.config, outcome.bank, list(outcome.plan.layers)
    sens, mp = config.sensitivity, config.mixed_precision
    if not (sens.enabled or mp.enabled):
        return
    divergence = None
    if sens.kl_batches and outcome.batches:
        div = OutputDivergence(outcome.model, outcome.batches[: sens.kl_batches], divergence_fn)
        outcome.divergence_name = div.name if div.usable else None
        divergence = lambda m: clock.run(div, m)  # noqa: E731
    schemes = list(dict.fromkeys((sens.schemes if sens.enabled else [])
                                 + ([s for s in mp.ladder if s != "fp32"] if mp.enabled else [])))
    trials = Trials(bank, lambda: clock.metric(bank.work), outcome.metric_float,
                    config.metric_higher_is_better)
    outcome.sensitivity = measure_sensitivity(trials, names, schemes, divergence,
                                              outcome.divergence_name or "kl")
    if mp.enabled:
        outcome.mixed = choose_mixed_precision(trials, names, mp.ladder, outcome.sensitivity,
                                               mp.max_rel_metric_loss)
        outcome.assignment = dict(outcome.mixed.assignment)


def _choose_for_latency(outcome: _Outcome, clock: _Clock, stats: dict[str, LayerStats],
                        backend) -> LatencyReport:
    """Apply the latency objective to the accuracy choice (see ``forgeline.quantize.latency``)."""
    config = outcome.config
    if not outcome.batches:
        return LatencyReport(objective=config.latency.objective, checked=False, notes=[
            "not checked: no calibration batches to time the model on"])
    budget = None
    if clock.eval_fn is not None and outcome.metric_float is not None:
        limit = (config.mixed_precision.max_rel_metric_loss if config.mixed_precision.enabled
                 else None)
        if limit is not None:
            def budget() -> bool:
                loss = rel_metric_loss(clock.metric(outcome.bank.work), outcome.metric_float,
                                       config.metric_higher_is_better)
                return loss <= limit
    task = LatencyTask(
        float_model=outcome.model, bank=outcome.bank, backend=backend,
        example=outcome.batches[0], config=config.latency, within_budget=budget,
        stats_for=lambda n, s: s != "w8a8" or stats.get(n, LayerStats()).ranges is not None)
    outcome.assignment = apply_latency_objective(task, outcome.assignment)
    return task.report


def _device(model: nn.Module) -> str:
    for t in list(model.parameters()) + list(model.buffers()):
        return t.device.type
    return "cpu"


def _resident(model: nn.Module) -> int:
    seen, total = set(), 0
    for t in list(model.parameters()) + list(model.buffers()):
        if t.data_ptr() not in seen:
            seen.add(t.data_ptr())
            total += t.numel() * t.element_size()
    return total


def _layer_row(o: _Outcome, name: str, m: nn.Module) -> LayerReport:
    scheme = o.assignment[name]
    bits = SCHEMES[scheme][0]
    q = o.bank.get(name, scheme)
    stats = o.bank.stats.get(name)
    return LayerReport(
        name=name, type=type_name(m), scheme=scheme, bits=bits,
        group_size=o.config.group_size if bits == 4 else None,
        params=m.weight.numel(), float_bytes=m.weight.numel() * 4,
        stored_bytes=o.bank.weight_bytes(name, scheme),
        kernel=o.qmodel.kernels.get(name, "float") if isinstance(q, QuantModule) else "float",
        smoothquant_alpha=stats.smoothquant_alpha if stats and scheme == "w8a8" else None,
        sensitivity=o.sensitivity.get(name, {}),
        notes=o.bank.notes.get((name, scheme), []),
    )


def _report(o: _Outcome) -> QuantizeReport:
    rows = [_layer_row(o, n, m) for n, m in o.plan.layers.items()]
    stored = o.qmodel.stored_bytes()
    lin_fp, lin_q = o.qmodel.linear_weight_bytes()
    rel = (rel_metric_loss(o.metric_quantized, o.metric_float, o.config.metric_higher_is_better)
           if o.metric_quantized is not None and o.metric_float is not None else None)
    notes = sorted({f"{r.name}: {x}" for r in rows for x in r.notes})
    if o.config.backend == "dequant_cached":
        notes.append("backend dequant_cached keeps a decoded fp32 copy of every quantized "
                     "weight after its first call: float speed, float memory")
    return QuantizeReport(
        scheme=o.config.scheme if not o.config.mixed_precision.enabled else "mixed",
        backend=kernel_summary(o.qmodel.kernels),
        backend_requested=o.config.backend,
        quantize_s=o.quantize_s, eval_s=o.eval_s,
        calibration_samples=calibrate.count_samples(o.batches) if o.batches else 0,
        calibration_batches=len(o.batches),
        metric_higher_is_better=o.config.metric_higher_is_better,
        metric_float=o.metric_float, metric_quantized=o.metric_quantized, rel_metric_loss=rel,
        float_bytes=_resident(o.model), stored_bytes=stored,
        size_ratio=_resident(o.model) / max(stored, 1),
        linear_float_bytes=lin_fp, linear_stored_bytes=lin_q,
        linear_size_ratio=lin_fp / lin_q if lin_q else None,
        layers=rows, mixed_precision=o.mixed, latency=o.latency, skipped=o.plan.skipped,
        divergence_metric=o.divergence_name,
        resident_bytes=o.qmodel.resident_bytes(), float_resident_bytes=o.float_resident_bytes,
        notes=notes,
    )
