"""Which layers get quantized: Linear subclasses, nn.MultiheadAttention, calibration samples,
the pluggable sensitivity divergence, SmoothQuant's per-layer strength."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from forgeline.quantize import QuantizeConfig, quantize_model

OFF = {"latency": {"objective": "off"}}


class PlainLinear(nn.Linear):
    """A subclass that keeps Linear's forward (quantized like a Linear)."""


class ScaledLinear(nn.Linear):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 2 * super().forward(x)


class Encoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(32, 4, batch_first=True)
        self.plain, self.scaled = PlainLinear(32, 32), ScaledLinear(32, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scaled(self.plain(self.attn(x, x, x, need_weights=False)[0]))


def test_linear_subclasses_are_quantized_or_listed_as_skipped():
    torch.manual_seed(0)
    model = Encoder().eval()
    x = torch.randn(2, 5, 32)
    qmodel, report = quantize_model(model, QuantizeConfig(**OFF), [x])
    assert set(qmodel.layers()) == {"plain"}
    assert "nn.MultiheadAttention" in report.skipped["attn.out_proj"]
    assert "overrides forward" in report.skipped["scaled"]
    with torch.no_grad():
        assert torch.allclose(qmodel(x), model(x), atol=0.05 * float(model(x).abs().max()))


def test_calibration_counts_samples_not_batches():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 16)).eval()
    batches = [torch.randn(8, 16) for _ in range(5)]
    _, report = quantize_model(model, QuantizeConfig(scheme="w8a8", max_calibration_samples=20,
                                                     **OFF), batches)
    assert report.calibration_samples == 20 and report.calibration_batches == 3
    dicts = [{"x": torch.randn(6, 16)} for _ in range(3)]

    class DictModel(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(16, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(x)

    _, report = quantize_model(DictModel(), QuantizeConfig(scheme="w8a8", max_calibration_samples=7,
                                                           **OFF), dicts)
    assert report.calibration_samples == 7


def test_user_divergence_replaces_kl():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 1)).eval()  # a regressor
    x = torch.randn(64, 16)

    def mean_abs_error(ref: torch.Tensor, out: torch.Tensor) -> float:
        return float((ref - out).abs().mean())

    cfg = QuantizeConfig(sensitivity={"enabled": True}, group_size=16, **OFF)
    metric = lambda m: float(F.mse_loss(m(x), model(x).detach()))  # noqa: E731
    _, default = quantize_model(model, cfg, [x], metric)
    assert default.divergence_metric is None  # one output column: KL means nothing
    _, custom = quantize_model(model, cfg, [x], metric, divergence_fn=mean_abs_error)
    assert custom.divergence_metric == "mean_abs_error"
    entries = [e for r in custom.layers for e in r.sensitivity.values()]
    assert entries and all(e.divergence is not None and e.divergence >= 0 for e in entries)


def test_smoothquant_auto_never_worse_than_off_on_calibration_data():
    torch.manual_seed(0)
    lin = nn.Linear(64, 64)
    scale = torch.ones(64)
    scale[:3] = 80.0
    batches = [torch.randn(32, 64) * scale for _ in range(4)]
    x = torch.cat(batches)
    errors = {}
    for alpha in (None, "auto"):
        qm, rep = quantize_model(lin, QuantizeConfig(scheme="w8a8", smoothquant_alpha=alpha,
                                                     **OFF), batches)
        with torch.no_grad():
            errors[alpha] = float((qm(x) - lin(x)).norm() / lin(x).norm())
        if alpha == "auto":
            assert rep.layers[0].smoothquant_alpha is not None  # outliers: smoothing chosen
            assert any("SmoothQuant alpha" in n for n in rep.layers[0].notes)
    assert errors["auto"] <= errors[None]
