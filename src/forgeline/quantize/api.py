"""``quantize_model``: calibrate, quantize, measure; the one entry point of the stage."""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable, Iterable, Mapping

import torch
from torch import nn

from forgeline.errors import ConfigError
from forgeline.quantize import calibrate
from forgeline.quantize.architecture import describe, type_name
from forgeline.quantize.config import SCHEMES, QuantizeConfig
from forgeline.quantize.observers import ChannelAbsMaxObserver, HessianObserver, RangeObserver
from forgeline.quantize.qmodel import QuantizedModel
from forgeline.quantize.qmodules import QuantModule
from forgeline.quantize.report import LayerReport, QuantizeReport
from forgeline.quantize.schemes import (
    LayerStats,
    check_layer,
    quantizable_layers,
    scheme_for,
    smooth_scale,
    smoothquant_applies,
)
from forgeline.quantize.sensitivity import (
    LayerBank,
    OutputKL,
    choose_mixed_precision,
    measure_sensitivity,
    rel_metric_loss,
)

log = logging.getLogger(__name__)

EvalFn = Callable[[nn.Module], float]


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


def _collect_stats(
    model: nn.Module,
    layers: dict[str, nn.Module],
    needs: dict[str, set[str]],
    batches: list,
    config: QuantizeConfig,
) -> dict[str, LayerStats]:
    """One calibration pass (two with SmoothQuant) feeding the observers layers need."""
    act = config.activation
    stats = {n: LayerStats() for n in layers}
    obs: dict[str, list] = {}
    sq = config.smoothquant_alpha is not None
    for name, need in needs.items():
        m = layers[name]
        if "hessian" in need and _gptq_capable(m):
            obs.setdefault(name, []).append(HessianObserver(m))
        if "ranges" in need and not isinstance(m, nn.Embedding):
            if sq and smoothquant_applies(m):
                ch = -1 if isinstance(m, nn.Linear) else 1
                obs.setdefault(name, []).append(ChannelAbsMaxObserver(ch))
            else:
                obs.setdefault(name, []).append(
                    RangeObserver(act.topk, act.sample_values_per_batch)
                )
    if obs:
        calibrate.observe(model, batches, obs)
    transforms, second = {}, {}
    for name, olist in obs.items():
        for o in olist:
            if isinstance(o, HessianObserver):
                stats[name].hessian = o.h
            elif isinstance(o, RangeObserver):
                stats[name].ranges = o
            elif isinstance(o, ChannelAbsMaxObserver):
                s = smooth_scale(o.absmax, layers[name].weight, config.smoothquant_alpha)
                stats[name].smooth_scale = s
                transforms[name] = (
                    (lambda x, _s=s: x / _s)
                    if isinstance(layers[name], nn.Linear)
                    else (lambda x, _s=s: x / _s.view(1, -1, *([1] * (x.dim() - 2))))
                )
                second[name] = [RangeObserver(act.topk, act.sample_values_per_batch)]
    if second:  # activation ranges after SmoothQuant's division
        calibrate.observe(model, batches, second, transforms)
        for name, (o,) in second.items():
            stats[name].ranges = o
    return stats


def _gptq_capable(m: nn.Module) -> bool:
    """GPTQ needs the columns the weight sees: Linear, or ungrouped Conv with int padding."""
    if isinstance(m, nn.Linear):
        return True
    return isinstance(m, nn.Conv1d | nn.Conv2d) and m.groups == 1 and not isinstance(m.padding, str)


def _needs(scheme: str) -> set[str]:
    return {"w8a8": {"ranges"}, "int4_gptq": {"hessian"}}.get(scheme, set())


def quantize_model(
    model: nn.Module,
    config: QuantizeConfig,
    calibration_batches: Iterable | None = None,
    eval_fn: EvalFn | None = None,
    *,
    state_dict: Mapping[str, torch.Tensor] | None = None,
) -> tuple[QuantizedModel, QuantizeReport]:
    """Quantize ``model`` (left untouched) per ``config``; return the model and a report.

    ``calibration_batches``: input batches (see :mod:`forgeline.quantize.calibrate`);
    needed by ``w8a8`` / ``int4_gptq`` and KL sensitivity. ``eval_fn(model) -> float``:
    the metric (direction: ``config.metric_higher_is_better``); needed for sensitivity
    and mixed precision, optional otherwise. ``state_dict``: a float checkpoint to load
    into ``model`` first. Every input is checked before any work starts.
    """
    config.check()
    if not isinstance(model, nn.Module):
        raise ConfigError("model", type(model).__name__, "must be a torch.nn.Module")
    if state_dict is not None:
        load_float_state(model, state_dict)
    layers = quantizable_layers(model, config)
    if not layers:
        raise ConfigError(
            "model", type(model).__name__, "has no Linear/Conv1d/Conv2d/Embedding layer to quantize"
        )
    sens_cfg, mp_cfg = config.sensitivity, config.mixed_precision
    plan = {n: scheme_for(n, config) for n in layers}
    candidates = {n: {plan[n]} for n in layers}
    if mp_cfg.enabled:
        for n in layers:
            candidates[n] |= set(mp_cfg.ladder)
    if sens_cfg.enabled or mp_cfg.enabled:
        extra = set(sens_cfg.schemes) | (set(mp_cfg.ladder) - {"fp32"} if mp_cfg.enabled else set())
        for n in layers:
            candidates[n] |= extra
        if eval_fn is None:
            raise ConfigError(
                "eval_fn",
                None,
                "sensitivity and mixed precision need a metric function eval_fn(model) -> float",
            )
    for n, schemes in candidates.items():
        for s in sorted(schemes):
            check_layer(n, layers[n], s, config)
    needs = {n: set().union(*(_needs(s) for s in schemes)) for n, schemes in candidates.items()}
    needs = {n: v for n, v in needs.items() if v}
    need_data = bool(needs)
    batches: list = []
    if calibration_batches is not None or need_data:
        batches = calibrate.take_batches(calibration_batches, config.max_calibration_samples)

    eval_s = 0.0

    def timed(fn: Callable, m: nn.Module):
        nonlocal eval_s
        t = time.perf_counter()
        with torch.no_grad():
            value = fn(m)
        eval_s += time.perf_counter() - t
        return value

    def timed_eval(m: nn.Module) -> float:
        return float(timed(eval_fn, m))

    t0 = time.perf_counter()
    was_training = model.training
    model.eval()
    try:
        stats = _collect_stats(model, layers, needs, batches, config)
        metric_float = timed_eval(model) if eval_fn is not None else None
        work = copy.deepcopy(model)
        floats = {n: work.get_submodule(n) for n in layers}
        bank = LayerBank(work, floats, config, stats)
        names = list(layers)
        sensitivity: dict = {}
        if sens_cfg.enabled or mp_cfg.enabled:
            kl_fn = OutputKL(model, batches[: sens_cfg.kl_batches]) if sens_cfg.kl_batches else None
            kl = (lambda m: timed(kl_fn, m)) if kl_fn is not None else None
            schemes = list(
                dict.fromkeys(
                    (sens_cfg.schemes if sens_cfg.enabled else [])
                    + ([s for s in mp_cfg.ladder if s != "fp32"] if mp_cfg.enabled else [])
                )
            )
            sensitivity = measure_sensitivity(
                bank,
                names,
                schemes,
                lambda: timed_eval(bank.work),
                metric_float,
                config.metric_higher_is_better,
                kl,
            )
        mp_report = None
        if mp_cfg.enabled:
            mp_report = choose_mixed_precision(
                bank,
                names,
                mp_cfg.ladder,
                sensitivity,
                lambda: timed_eval(bank.work),
                metric_float,
                config.metric_higher_is_better,
                mp_cfg.max_rel_metric_loss,
            )
            assignment = mp_report.assignment
        else:
            assignment = plan
        bank.apply(assignment)
        qmodel = QuantizedModel(bank.work, describe(bank.work)).eval()
        kernels = qmodel.set_backend(config.backend)
        quantize_s = time.perf_counter() - t0 - eval_s
        metric_q = timed_eval(qmodel) if eval_fn is not None else None
    finally:
        model.train(was_training)

    report = _report(
        model,
        qmodel,
        config,
        layers,
        assignment,
        bank,
        sensitivity,
        kernels,
        batches,
        quantize_s,
        eval_s,
        metric_float,
        metric_q,
        mp_report,
    )
    if mp_report is not None and metric_q is not None:
        final_loss = report.rel_metric_loss
        mp_report.met = final_loss is not None and final_loss <= mp_cfg.max_rel_metric_loss
    log.info(
        "quantized %d layers (%s) in %.2fs; size ratio %.2f",
        len(layers),
        config.scheme,
        quantize_s,
        report.size_ratio,
    )
    return qmodel, report


def _report(
    model,
    qmodel,
    config,
    layers,
    assignment,
    bank,
    sensitivity,
    kernels,
    batches,
    quantize_s,
    eval_s,
    metric_float,
    metric_q,
    mp_report,
) -> QuantizeReport:
    rows = []
    for n, m in layers.items():
        scheme = assignment[n]
        stored = bank.weight_bytes(n, scheme)
        q = bank.get(n, scheme)
        rows.append(
            LayerReport(
                name=n,
                type=type_name(m),
                scheme=scheme,
                bits=SCHEMES[scheme][0],
                group_size=config.group_size if SCHEMES[scheme][0] == 4 else None,
                params=m.weight.numel(),
                float_bytes=m.weight.numel() * 4,
                stored_bytes=stored,
                kernel=kernels.get(n, "float") if isinstance(q, QuantModule) else "float",
                sensitivity=sensitivity.get(n, {}),
                notes=bank.notes.get(n, []),
            )
        )
    seen, float_bytes = set(), 0
    for t in list(model.parameters()) + list(model.buffers()):
        if t.data_ptr() not in seen:
            seen.add(t.data_ptr())
            float_bytes += t.numel() * t.element_size()
    stored = qmodel.stored_bytes()
    lin_fp, lin_q = qmodel.linear_weight_bytes()
    rel = (
        rel_metric_loss(metric_q, metric_float, config.metric_higher_is_better)
        if metric_q is not None and metric_float is not None
        else None
    )
    notes = sorted({f"{r.name}: {x}" for r in rows for x in r.notes})
    return QuantizeReport(
        scheme=config.scheme if not config.mixed_precision.enabled else "mixed",
        backend=qmodel.backend,
        quantize_s=quantize_s,
        eval_s=eval_s,
        calibration_samples=calibrate.count_samples(batches) if batches else 0,
        calibration_batches=len(batches),
        metric_higher_is_better=config.metric_higher_is_better,
        metric_float=metric_float,
        metric_quantized=metric_q,
        rel_metric_loss=rel,
        float_bytes=float_bytes,
        stored_bytes=stored,
        size_ratio=float_bytes / max(stored, 1),
        linear_float_bytes=lin_fp,
        linear_stored_bytes=lin_q,
        linear_size_ratio=lin_fp / lin_q if lin_q else None,
        layers=rows,
        mixed_precision=mp_report,
        notes=notes,
    )
