"""The latency objective: measured, reported, and the returned model kept no slower here."""

from __future__ import annotations

import torch
from torch import nn

from forgeline.quantize import QuantizeConfig, quantize_model


def _mlp() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(256, 512), nn.GELU(), nn.Linear(512, 256)).eval()


def test_slow_kernels_fall_back_to_float_and_say_why():
    model = _mlp()
    batches = [torch.randn(8, 256) for _ in range(2)]
    # int4 decoded on every call (the reference backend) always loses to the float matmul
    cfg = QuantizeConfig(scheme="int4_rtn", group_size=64, backend="dequant",
                         latency={"repeats": 3, "fallback": ["fp32"], "tolerance": 0.5})
    qmodel, report = quantize_model(model, cfg, batches)
    lat = report.latency
    assert lat.checked and set(lat.first_ratio) == {"b1", "b32"}
    assert set(lat.float_ms) == set(lat.quantized_ms) == {"b1", "b32"}
    if min(lat.first_ratio.values()) > 1.5:  # clearly slower: layers must have moved
        assert lat.changes and all("→ fp32" in why for why in lat.changes.values())
        by_name = {r.name: r.scheme for r in report.layers}
        assert all(by_name[n] == "fp32" for n in lat.changes)
        assert set(qmodel.layers()) == {n for n, s in by_name.items() if s != "fp32"}
    assert lat.met is not None


def test_objective_off_and_no_inputs_are_reported():
    model = _mlp()
    _, off = quantize_model(model, QuantizeConfig(latency={"objective": "off"}),
                            [torch.randn(4, 256)])
    assert off.latency is None and {r.scheme for r in off.layers} == {"int8_wo"}
    _, unchecked = quantize_model(model, QuantizeConfig())
    assert unchecked.latency.checked is False and "no calibration" in unchecked.latency.notes[0]


def test_int8_weight_only_holds_less_memory_than_float():
    model = _mlp()
    x = torch.randn(4, 256)
    qmodel, report = quantize_model(model, QuantizeConfig(latency={"objective": "off"}), [x])
    with torch.no_grad():
        qmodel(x)  # after a forward: no decoded fp32 copy is kept by default
    assert qmodel.resident_bytes() <= 0.3 * report.float_resident_bytes
    assert report.backend == "dequant×2"
    qmodel.set_backend("dequant_cached")  # the explicit speed/memory trade
    with torch.no_grad():
        qmodel(x)
    assert qmodel.resident_bytes() > report.float_resident_bytes
    assert qmodel.backend == "dequant_cached×2"
