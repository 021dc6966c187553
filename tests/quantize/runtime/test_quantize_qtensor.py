"""Integer formats: error bounds, packing, sizes, activation quantizers and observers."""

from __future__ import annotations

import torch
from torch import nn

from forgeline.quantize import QuantizeConfig, quantize_model
from forgeline.quantize.observers import RangeObserver
from forgeline.quantize.runtime.qtensor import (
    fake_quant_pwlq,
    fake_quant_uniform,
    pack_int4,
    quantize_int4_groupwise,
    quantize_int8_per_channel,
    uniform_act_params,
    unpack_int4,
)
from forgeline.quantize.schemes import choose_pwlq

# These tests check the schemes themselves; the latency objective (which may keep slow
# layers float) has its own tests.
LATENCY_OFF = {"latency": {"objective": "off"}}


def test_int8_per_channel_error_within_half_scale():
    torch.manual_seed(0)
    w = torch.randn(64, 96) * torch.logspace(-3, 1, 64)[:, None]  # rows of very different range
    qw = quantize_int8_per_channel(w)
    assert qw.qdata.dtype == torch.int8 and qw.zero_point is None
    err = (qw.dequantize() - w).abs()
    assert qw.scale.dtype == torch.bfloat16
    bound = qw.scale.float()[:, None] / 2
    assert torch.all(err <= bound * (1 + 1e-5) + 1e-12)
    # each row's extreme value is hit exactly, codes use the full symmetric range
    assert int(qw.qdata.abs().amax()) == 127


def test_int4_groupwise_error_within_half_scale_per_group():
    torch.manual_seed(1)
    w = torch.randn(32, 256) + 0.3  # asymmetric groups
    w[3, :64] = 0.0  # an all-zero group decodes exactly
    qw = quantize_int4_groupwise(w, 64)
    assert qw.scale.shape == (32, 4) and qw.zero_point.dtype == torch.uint8
    deq = qw.dequantize()
    err = (deq - w).abs().view(32, 4, 64)
    assert torch.all(err <= qw.scale[..., None] / 2 * (1 + 1e-5) + 1e-7)
    assert torch.equal(deq[3, :64], torch.zeros(64))


def test_int4_pack_unpack_roundtrip_odd_length():
    codes = torch.randint(0, 16, (1001,), dtype=torch.uint8)
    packed = pack_int4(codes)
    assert packed.numel() == 501
    assert torch.equal(unpack_int4(packed, 1001), codes)


def test_uniform_activation_error_and_zero_exact():
    x = torch.linspace(-3.0, 9.0, 1000)
    scale, zero = uniform_act_params(-3.0, 9.0, 127)
    y = fake_quant_uniform(x, scale, zero, 127)
    assert torch.all((y - x).abs() <= scale / 2 + 1e-6)
    assert float(fake_quant_uniform(torch.zeros(1), scale, zero, 127)) == 0.0


def test_pwlq_beats_uniform_on_asymmetric_heavy_tails():
    # pre-LayerNorm-like activations: a dense bulk plus a far one-sided tail
    g = torch.Generator().manual_seed(0)
    x = torch.cat(
        [torch.randn(20000, generator=g) * 0.5, torch.rand(200, generator=g) * 60.0 + 20.0]
    )
    lo, hi = float(x.min()), float(x.max())
    knots, levels = choose_pwlq(x, lo, hi, bits=8)
    assert int(levels.sum()) == 256
    pw = fake_quant_pwlq(x, knots, levels)
    scale, zero = uniform_act_params(lo, hi, 255)
    un = fake_quant_uniform(x, scale, zero, 255)
    mse_pw, mse_un = float(((pw - x) ** 2).mean()), float(((un - x) ** 2).mean())
    assert mse_pw < 0.5 * mse_un


def test_range_observers_robust_to_outliers():
    obs = RangeObserver(topk=16, sample_per_batch=4096)
    g = torch.Generator().manual_seed(0)
    for _ in range(4):
        obs.observe(torch.randn(64, 64, generator=g))
    obs.observe(torch.tensor([500.0, -400.0]))  # two outliers
    lo_mm, hi_mm = obs.range("minmax")
    assert hi_mm == 500.0 and lo_mm == -400.0
    for method in ("percentile", "topk_median"):
        lo, hi = obs.range(method, percentile_pct=99.9)
        assert 2.0 < hi < 6.0 and -6.0 < lo < -2.0, (method, lo, hi)


def _wide_mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 512))


def test_linear_weight_size_ratios():
    model = _wide_mlp()
    _, r8 = quantize_model(model, QuantizeConfig(**LATENCY_OFF, scheme="int8_wo"))
    _, r4 = quantize_model(model, QuantizeConfig(**LATENCY_OFF, scheme="int4_rtn", group_size=128))
    assert r8.linear_float_bytes == 2 * 512 * 512 * 4
    assert r8.linear_size_ratio >= 3.9
    assert r4.linear_size_ratio >= 6.0
    # the ratio is computed from the stored tensors, not assumed
    q8 = sum(lr.stored_bytes for lr in r8.layers)
    assert r8.linear_stored_bytes == q8
