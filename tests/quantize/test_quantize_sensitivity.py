"""Sensitivity ordering on a model with a known fragile layer; the accuracy budget honoured."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from forgeline.quantize import QuantizeConfig, plot_sensitivity, quantize_model

# These tests check the schemes themselves; the latency objective (which may keep slow
# layers float) has its own tests.
LATENCY_OFF = {"latency": {"objective": "off"}}


def _fragile_mlp() -> nn.Sequential:
    """fc2 (index 2) carries 100x weight outliers in one input column; the function is
    unchanged because that column's input is scaled down 100x in fc1."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 8)
    )
    with torch.no_grad():
        model[0].weight[:4] /= 100.0
        model[0].bias[:4] /= 100.0
        model[2].weight[:, :4] *= 100.0
    return model.eval()


@pytest.fixture(scope="module")
def problem():
    model = _fragile_mlp()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(256, 32, generator=g)
    with torch.no_grad():
        target = model(x) + 0.05 * torch.randn(256, 8, generator=g)

    def eval_fn(m: nn.Module) -> float:
        with torch.no_grad():
            return float(F.mse_loss(m(x), target))

    return model, [x[:64], x[64:128]], eval_fn


def test_sensitivity_ranks_the_fragile_layer_first(problem):
    model, batches, eval_fn = problem
    cfg = QuantizeConfig(
        **LATENCY_OFF,
        scheme="int8_wo",
        group_size=32,
        sensitivity={"enabled": True, "schemes": ["int4_rtn", "int8_wo"]},
    )
    _, report = quantize_model(model, cfg, batches, eval_fn)
    for scheme in ("int4_rtn", "int8_wo"):
        losses = {lr.name: lr.sensitivity[scheme].rel_metric_loss for lr in report.layers}
        kls = {lr.name: lr.sensitivity[scheme].kl for lr in report.layers}
        assert max(losses, key=losses.get) == "2", (scheme, losses)
        assert max(kls, key=kls.get) == "2", (scheme, kls)
    assert report.sensitivity_table()[0]["layer"] == "2"
    png = plot_sensitivity(report.sensitivity_table())
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("budget", [0.01, 0.002])
def test_mixed_precision_meets_budget_with_smallest_promotion(problem, budget):
    model, batches, eval_fn = problem
    # all-int4 is far outside the budget, so layers must be promoted
    _, all4 = quantize_model(
        model, QuantizeConfig(**LATENCY_OFF, scheme="int4_rtn", group_size=32), None, eval_fn
    )
    assert all4.rel_metric_loss > budget
    cfg = QuantizeConfig(
        **LATENCY_OFF,
        group_size=32,
        mixed_precision={
            "enabled": True,
            "max_rel_metric_loss": budget,
            "ladder": ["int4_rtn", "int8_wo", "fp32"],
        },
    )
    qmodel, report = quantize_model(model, cfg, batches, eval_fn)
    mp = report.mixed_precision
    assert mp.met and report.rel_metric_loss <= budget  # measured on the returned model
    assert abs(eval_fn(qmodel) - report.metric_quantized) < 1e-12
    assert mp.steps[0].promoted is None and len(mp.steps) >= 2
    assert mp.steps[1].promoted == "2"  # the fragile layer is promoted first
    # smaller than float and each promotion grew the model
    assert report.stored_bytes < report.float_bytes
    sizes = [s.weight_bytes for s in mp.steps]
    assert sizes == sorted(sizes)
    assert {lr.name: lr.scheme for lr in report.layers} == mp.assignment
