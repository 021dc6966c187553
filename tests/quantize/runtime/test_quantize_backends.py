"""Runtime backends: same interface, same answers (up to float accumulation order)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from forgeline.errors import ConfigError
from forgeline.quantize import QuantizeConfig, available_backends, quantize_model
from forgeline.quantize.runtime import resolve_backend

# These tests check the schemes themselves; the latency objective (which may keep slow
# layers float) has its own tests.
LATENCY_OFF = {"latency": {"objective": "off"}}


@pytest.fixture(scope="module")
def w8a8_model():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(128, 256), nn.GELU(), nn.Linear(256, 64)).eval()
    batches = [torch.randn(32, 128) * 2 + 0.5 for _ in range(4)]
    qmodel, _ = quantize_model(
        model, QuantizeConfig(**LATENCY_OFF, scheme="w8a8", backend="dequant"), batches
    )
    return model, qmodel


def test_backends_agree(w8a8_model):
    model, qmodel = w8a8_model
    x = torch.randn(8, 128) * 2 + 0.5
    with torch.no_grad():
        qmodel.set_backend("dequant")
        ref = qmodel(x)
        qmodel.set_backend("dequant_cached")
        assert torch.equal(qmodel(x), ref)  # same float ops, weight decoded once
        if available_backends()["fbgemm"] is None:
            kernels = qmodel.set_backend("fbgemm")
            assert set(kernels.values()) == {"fbgemm_int8_static"}
            fast = qmodel(x)
            # int32 accumulation vs float: equal up to rounding of a few ulps of outputs
            assert torch.allclose(fast, ref, rtol=1e-4, atol=1e-4 * float(ref.abs().max()))
            assert qmodel(x.view(2, 4, 128)).shape == (2, 4, 64)
        assert (ref - model(x)).norm() / model(x).norm() < 0.05


def test_deepcopy_keeps_kernels_independent(w8a8_model):
    _, qmodel = w8a8_model
    qmodel.set_backend("auto")
    x = torch.randn(4, 128)
    with torch.no_grad():
        twin = copy.deepcopy(qmodel)
        assert torch.equal(twin(x), qmodel(x))
        layer, twin_layer = qmodel.layers()["0"], twin.layers()["0"]
        assert twin_layer.runtime_state is not layer.runtime_state
        twin_layer.qweight.zero_()
        twin.set_backend("auto")
        assert not torch.equal(twin(x), qmodel(x))


def test_fbgemm_falls_back_where_it_has_no_kernel():
    if available_backends()["fbgemm"] is not None:
        pytest.skip(available_backends()["fbgemm"])
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 64))
    batches = [torch.randn(8, 64)]
    cfg = QuantizeConfig(
        **LATENCY_OFF,
        scheme="w8a8",
        overrides={"2": "int4_rtn"},
        group_size=32,
        activation={"reduce_range": False},
        backend="fbgemm",
    )
    qmodel, report = quantize_model(model, cfg, batches)
    # 8-bit activations would saturate fbgemm's AVX2 kernel: decoded per call instead
    # (no fp32 copy is kept unless the dequant_cached backend is asked for)
    assert qmodel.kernels == {"0": "dequant", "2": "dequant"}
    assert report.backend == "dequant×2" and report.backend_requested == "fbgemm"
    assert {lr.name: lr.kernel for lr in report.layers} == qmodel.kernels


def test_backend_selection_and_errors():
    avail = available_backends()
    assert avail["dequant"] is None and avail["dequant_cached"] is None
    auto = resolve_backend("auto", "cpu").name
    assert auto == ("fbgemm" if avail["fbgemm"] is None else "dequant_cached")
    with pytest.raises(ConfigError) as exc:
        resolve_backend("nope")
    assert exc.value.field == "backend" and exc.value.value == "nope"
    if not torch.cuda.is_available():
        assert "CUDA" in avail["torchao"]
        with pytest.raises(ConfigError, match="not usable here"):
            resolve_backend("torchao")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="torchao kernels need a CUDA device")
def test_torchao_backend_on_gpu():
    pytest.importorskip("torchao")
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 256))
    qmodel, _ = quantize_model(
        model, QuantizeConfig(**LATENCY_OFF, scheme="int8_wo", backend="dequant")
    )
    x = torch.randn(4, 256)
    with torch.no_grad():
        ref = qmodel(x)
        qmodel.to("cuda")
        kernels = qmodel.set_backend("torchao")
        assert all(k.startswith("torchao_") for k in kernels.values())
        out = qmodel(x.cuda()).cpu()
    assert (out - ref).norm() / ref.norm() < 0.02  # bf16 activations on the GPU path
