"""Schemes end to end through quantize_model on tiny models built here."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from forgeline.quantize import QuantizeConfig, quantize_model
from forgeline.quantize.runtime.qmodules import QuantModule

# These tests check the schemes themselves; the latency objective (which may keep slow
# layers float) has its own tests.
LATENCY_OFF = {"latency": {"objective": "off"}}


class TinyBlock(nn.Module):
    """A transformer-like block: Embedding, LayerNorm, attention and MLP Linears, head."""

    def __init__(self, vocab: int = 64, d: int = 32) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, d)
        self.ln1, self.ln2, self.lnf = nn.LayerNorm(d), nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.fc1, self.fc2 = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)
        self.head = nn.Linear(d, vocab)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.emb(idx)
        q, k, v = self.qkv(self.ln1(x)).chunk(3, dim=-1)
        att = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(att)
        x = x + self.fc2(F.gelu(self.fc1(self.ln2(x))))
        return self.head(self.lnf(x))


def _tokens(n: int, seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, 64, (8, 16), generator=g) for _ in range(n)]


def _rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(((a - b).norm() / b.norm()).detach())


@pytest.fixture(scope="module")
def block() -> TinyBlock:
    torch.manual_seed(0)
    return TinyBlock().eval()


@pytest.mark.parametrize(
    ("scheme", "max_rel_err"),
    [("int8_wo", 0.02), ("w8a8", 0.05), ("int4_rtn", 0.25), ("int4_gptq", 0.25)],
)
def test_each_scheme_on_transformer_block(block, scheme, max_rel_err):
    batches = _tokens(4, seed=1)
    before = {k: v.clone() for k, v in block.state_dict().items()}
    qmodel, report = quantize_model(
        block, QuantizeConfig(**LATENCY_OFF, scheme=scheme, group_size=32), batches
    )
    layers = qmodel.layers()
    assert set(layers) == {"emb", "qkv", "proj", "fc1", "fc2", "head"}
    assert all(isinstance(m, QuantModule) for m in layers.values())
    assert isinstance(qmodel.model.ln1, nn.LayerNorm)  # LayerNorm stays float
    x = _tokens(1, seed=2)[0]
    with torch.no_grad():
        err = _rel_err(qmodel(x), block(x))
    assert 0 < err < max_rel_err
    # the caller's float model is not modified
    assert all(torch.equal(v, block.state_dict()[k]) for k, v in before.items())
    assert report.calibration_samples == 32 and report.stored_bytes < report.float_bytes
    assert json.loads(report.model_dump_json())["layers"][0]["name"] == "emb"


def test_gptq_lowers_output_error_versus_rtn():
    torch.manual_seed(0)
    lin = nn.Linear(128, 64)
    mix = torch.randn(128, 128) / 8  # correlated inputs: where GPTQ's Hessian helps
    batches = [torch.randn(64, 128) @ mix for _ in range(8)]
    cfg = dict(group_size=32, max_calibration_samples=512)
    rtn, _ = quantize_model(lin, QuantizeConfig(**LATENCY_OFF, scheme="int4_rtn", **cfg), batches)
    gptq, _ = quantize_model(lin, QuantizeConfig(**LATENCY_OFF, scheme="int4_gptq", **cfg), batches)
    x = torch.cat(batches)
    with torch.no_grad():
        ref = lin(x)
        e_rtn, e_gptq = _rel_err(rtn(x), ref), _rel_err(gptq(x), ref)
    assert e_gptq < 0.8 * e_rtn


def test_smoothquant_helps_activation_channel_outliers():
    torch.manual_seed(0)
    lin = nn.Linear(64, 64)
    scale = torch.ones(64)
    scale[:3] = 80.0  # three outlier input channels, as in LLM activations
    batches = [torch.randn(32, 64) * scale for _ in range(4)]
    plain, _ = quantize_model(lin, QuantizeConfig(**LATENCY_OFF, scheme="w8a8"), batches)
    smooth, rep = quantize_model(
        lin, QuantizeConfig(**LATENCY_OFF, scheme="w8a8", smoothquant_alpha=0.5), batches
    )
    x = torch.cat(batches)
    with torch.no_grad():
        ref = lin(x)
        e_plain, e_smooth = _rel_err(plain(x), ref), _rel_err(smooth(x), ref)
    assert smooth.layers()[""].smooth_scale is not None and rep.backend == smooth.backend
    assert e_smooth < 0.7 * e_plain


@pytest.mark.parametrize("observer", ["minmax", "percentile", "topk_median"])
@pytest.mark.parametrize("quantizer", ["uniform", "pwlq"])
def test_w8a8_activation_options(block, observer, quantizer):
    act = {"observer": observer, "quantizer": quantizer, "percentile_pct": 99.9}
    qmodel, _ = quantize_model(
        block, QuantizeConfig(**LATENCY_OFF, scheme="w8a8", activation=act), _tokens(3, seed=3)
    )
    x = _tokens(1, seed=4)[0]
    with torch.no_grad():
        out = qmodel(x)
    assert torch.isfinite(out).all() and _rel_err(out, block(x)) < 0.1
    kinds = {m.spec["activation"]["kind"] for m in qmodel.layers().values() if m.spec["activation"]}
    assert kinds == {quantizer}


def test_conv_layers_quantize():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 16, 1),
        nn.Flatten(),
        nn.Linear(16 * 8 * 8, 10),
    )
    batches = [torch.randn(4, 3, 8, 8) for _ in range(3)]
    for scheme in ("int8_wo", "w8a8", "int4_gptq"):
        cfg = QuantizeConfig(
            **LATENCY_OFF,
            scheme=scheme,
            group_size=2 if scheme.startswith("int4") else 128,
            smoothquant_alpha=0.5 if scheme == "w8a8" else None,
        )
        if scheme == "int4_gptq":  # 3*3*3 = 27 columns: keep the first conv at int8
            cfg = QuantizeConfig(
                **LATENCY_OFF, scheme=scheme, group_size=8, overrides={"0": "int8_wo"}
            )
        qmodel, _ = quantize_model(model, cfg, batches)
        x = torch.randn(2, 3, 8, 8)
        with torch.no_grad():
            assert _rel_err(qmodel(x), model(x)) < 0.15, scheme
        assert {"0", "2", "4"} <= set(qmodel.layers())


def test_overrides_keep_layers_float(block):
    cfg = QuantizeConfig(**LATENCY_OFF, scheme="int8_wo", overrides={"head": "fp32", "emb": "fp32"})
    qmodel, report = quantize_model(block, cfg)
    assert set(qmodel.layers()) == {"qkv", "proj", "fc1", "fc2"}
    by_name = {lr.name: lr for lr in report.layers}
    assert by_name["head"].scheme == "fp32" and by_name["head"].kernel == "float"
    assert math.isclose(by_name["head"].stored_bytes, by_name["head"].float_bytes)
