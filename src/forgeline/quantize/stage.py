"""The quantization pipeline stage: the trained model → a smaller quantized artifact.

Calibrates on the dataset's validation windows, measures perplexity on other (held-out)
validation windows, optionally picks per-layer precision within a tolerable relative
perplexity increase, writes the artifact (safetensors + quantization map), the full report
and a sensitivity plot, and times CPU inference at batch 1 and 32, float vs quantized.
"""

from __future__ import annotations

import math
import posixpath
import time
from collections import Counter

import torch
from safetensors.torch import load as load_safetensors

from forgeline import storage
from forgeline.datasets import TokenDataset
from forgeline.errors import ConfigError
from forgeline.quantize.api import quantize_model
from forgeline.quantize.config import (
    LatencyConfig,
    MixedPrecisionConfig,
    QuantizeConfig,
    SensitivityConfig,
)
from forgeline.quantize.latency import paired_timing
from forgeline.quantize.options import QuantizeOptions, QuantizeResult
from forgeline.quantize.runtime.export import save_quantized
from forgeline.quantize.sensitivity import plot_sensitivity

REPORT_FILE = "quantize_report.json"
PLOT_FILE = "sensitivity.png"

__all__ = ["QuantizeOptions", "QuantizeResult", "quantize_stage"]


def _windows(dataset: TokenDataset, start: int, count: int) -> torch.Tensor:
    stop = min(len(dataset), start + count)
    if stop <= start:
        raise ConfigError("eval_samples", count,
                          f"the validation split has only {len(dataset)} windows")
    return torch.from_numpy(dataset.get_many(range(start, stop))).long()


@torch.no_grad()
def _perplexity(model: torch.nn.Module, windows: torch.Tensor, batch: int) -> float:
    from forgeline.train.model import lm_loss

    model.eval()
    total = 0.0
    for first in range(0, len(windows), batch):
        chunk = windows[first : first + batch]
        total += lm_loss(model(chunk[:, :-1]), chunk[:, 1:]).item() * len(chunk)
    return math.exp(total / len(windows))


@torch.no_grad()
def quantize_stage(
    options: QuantizeOptions, model_url: str, manifest_url: str, output_url: str
) -> QuantizeResult:
    """Quantize the trained model at ``model_url`` (its ``model.json`` beside it)."""
    from forgeline.train.models import build_saved_model

    started = time.perf_counter()
    config = QuantizeConfig(
        scheme=options.scheme, group_size=options.group_size,
        max_calibration_samples=options.calibration_samples,
        sensitivity=SensitivityConfig(enabled=options.sensitivity),
        latency=LatencyConfig(objective=options.latency_objective),
        mixed_precision=MixedPrecisionConfig(
            enabled=options.mixed_precision, max_rel_metric_loss=options.max_rel_ppl_increase
        ),
    )
    config_url = posixpath.join(posixpath.dirname(model_url), "model.json")
    if not storage.exists(model_url) or not storage.exists(config_url):
        raise ConfigError("model_url", model_url, "no trained model (and model.json) here")
    storage.ensure_writable(output_url, "output_url")
    fs, path = storage.filesystem(model_url)
    state = load_safetensors(fs.cat_file(path))
    validation = TokenDataset(manifest_url, "validation")
    calibration = _windows(validation, 0, options.calibration_samples)
    held_out = _windows(validation, options.calibration_samples, options.eval_samples)

    float_model = build_saved_model(config_url)
    batches = [calibration[i : i + options.batch_size, :-1]
               for i in range(0, len(calibration), options.batch_size)]
    qmodel, report = quantize_model(
        float_model, config, batches,
        lambda m: _perplexity(m, held_out, options.batch_size), state_dict=state,
    )
    artifact = save_quantized(qmodel, storage.join(output_url, "model"))
    report_url = storage.join(output_url, REPORT_FILE)
    storage.write_json_atomic(report_url, report.model_dump(mode="json"))
    plot_url = None
    if report.sensitivity_table():
        plot_url = storage.join(output_url, PLOT_FILE)
        storage.write_bytes_atomic(plot_url, plot_sensitivity(report.sensitivity_table()))

    sample = held_out[:, :-1]
    latency, latency_ratio = {}, {}
    float_model.eval()
    qmodel.eval()
    for batch in (1, 32):  # float and quantized interleaved, as the latency objective times
        tokens = sample[:batch]
        timed = paired_timing(lambda t=tokens: float_model(t), lambda t=tokens: qmodel(t),
                              repeats=5, max_repeats=config.latency.max_repeats)
        latency[f"float_b{batch}"], latency[f"quantized_b{batch}"] = timed.a_ms, timed.b_ms
        latency_ratio[f"b{batch}"] = round(timed.ratio, 4)
    ppl_float = report.metric_float or _perplexity(float_model, held_out, options.batch_size)
    ppl_quant = report.metric_quantized or _perplexity(qmodel, held_out, options.batch_size)
    mixed = report.mixed_precision
    # the model's final schemes: the accuracy choice as the latency objective left it
    assignment = {lr.name: lr.scheme for lr in report.layers}
    return QuantizeResult(
        model_url=artifact["url"],
        map_url=artifact["map"],
        report_url=report_url,
        sensitivity_plot_url=plot_url,
        scheme=options.scheme,
        assignment=assignment,
        scheme_counts=dict(Counter(assignment.values())),
        budget_met=mixed.met if mixed else None,
        val_ppl_float=ppl_float,
        val_ppl_quantized=ppl_quant,
        rel_ppl_increase=(ppl_quant - ppl_float) / ppl_float,
        float_bytes=report.float_bytes,
        stored_bytes=report.stored_bytes,
        size_ratio=report.size_ratio,
        linear_size_ratio=report.linear_size_ratio,
        latency_ms={k: round(v, 3) for k, v in latency.items()},
        latency_ratio=latency_ratio,
        backend=report.backend,
        latency_met=report.latency.met if report.latency else None,
        latency_changes=report.latency.changes if report.latency else {},
        skipped_layers=report.skipped,
        resident_bytes=qmodel.resident_bytes(),
        quantize_s=report.quantize_s,
        wall_s=round(time.perf_counter() - started, 3),
    )

