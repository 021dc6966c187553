"""Hugging Face GPT-2's ``Conv1D`` projections quantized like Linear layers by every scheme,
saved and loaded back into a transformers GPT-2 with identical outputs."""

from __future__ import annotations

import pytest
import torch

from forgeline.quantize import QuantizeConfig, load_quantized, quantize_model, save_quantized
from forgeline.quantize.runtime.conv1d import CONV1D_TYPE, LinearFromConv1D, linearized

transformers = pytest.importorskip("transformers")
from transformers.pytorch_utils import Conv1D  # noqa: E402

from forgeline.train.models import HFCausalLM  # noqa: E402

GPT2 = {"n_layer": 2, "n_embd": 32, "n_head": 2, "vocab_size": 256, "n_positions": 32,
        "bos_token_id": 0, "eos_token_id": 0}
CONV1D = [f"model.transformer.h.{i}.{p}" for i in range(2)
          for p in ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")]


def tiny_gpt2() -> HFCausalLM:
    torch.manual_seed(0)
    config = transformers.GPT2Config(**GPT2)
    model = HFCausalLM(transformers.GPT2LMHeadModel(config)).eval()
    with torch.no_grad():  # larger projections than GPT-2's init, so they matter
        for name in CONV1D:
            model.get_submodule(name).weight.mul_(10)
    return model


@pytest.fixture(scope="module")
def gpt2():
    model = tiny_gpt2()
    tokens = torch.randint(0, 256, (4, 16), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = model(tokens)
    return model, tokens, ref


def test_the_pre_pass_is_exact_shares_storage_and_is_undone(gpt2):
    model, tokens, ref = gpt2
    before = {n: m.weight.data_ptr() for n, m in model.named_modules() if isinstance(m, Conv1D)}
    assert sorted(before) == sorted(CONV1D)
    with torch.no_grad(), linearized(model) as originals:
        assert sorted(originals) == sorted(CONV1D)
        for name in CONV1D:
            lin = model.get_submodule(name)
            assert isinstance(lin, LinearFromConv1D) and lin.weight.data_ptr() == before[name]
            assert tuple(lin.weight.shape) == tuple(originals[name].weight.shape[::-1])
        assert torch.equal(model(tokens), ref)  # bit-identical in fp32
        back = model.get_submodule(CONV1D[0])
        assert isinstance(back.to_conv1d(), Conv1D)
    assert all(isinstance(model.get_submodule(n), Conv1D) for n in CONV1D)
    with pytest.raises(RuntimeError, match="boom"), linearized(model):
        raise RuntimeError("boom")
    assert all(isinstance(model.get_submodule(n), Conv1D) for n in CONV1D)


@pytest.mark.parametrize("scheme,tol", [("int8_wo", 0.03), ("w8a8", 0.08),
                                        ("int4_rtn", 0.3), ("int4_gptq", 0.3)])
def test_every_scheme_quantizes_each_conv1d_and_round_trips(gpt2, tmp_path, scheme, tol):
    model, tokens, ref = gpt2
    cfg = QuantizeConfig(scheme=scheme, group_size=32, latency={"objective": "off"})
    qmodel, report = quantize_model(model, cfg, [tokens])
    rows = {r.name: r for r in report.layers}
    for name in CONV1D:
        assert rows[name].scheme == scheme and rows[name].type == CONV1D_TYPE, name
        assert qmodel.layers()[name].spec["kind"] == "linear"
    if scheme == "int4_gptq":  # a Hessian was collected for the Conv1D inputs
        assert not any(n in CONV1D for n in {x.split(":")[0] for x in report.notes})
    assert all(isinstance(model.get_submodule(n), Conv1D) for n in CONV1D)  # untouched
    with torch.no_grad():
        assert torch.equal(model(tokens), ref)
        ours = qmodel(tokens)
    assert float((ours - ref).norm() / ref.norm()) < tol

    save_quantized(qmodel, f"file://{tmp_path}/q")
    loaded = load_quantized(f"file://{tmp_path}/q", tiny_gpt2)  # backend "auto", as qmodel
    assert loaded.kernels == qmodel.kernels
    with torch.no_grad():
        assert torch.equal(loaded(tokens), ours)
        qmodel.set_backend("dequant")
        loaded.set_backend("dequant")
        assert torch.equal(loaded(tokens), qmodel(tokens))


def test_mixed_precision_and_float_conv1d_layers_load_back(gpt2, tmp_path):
    model, tokens, ref = gpt2

    def output_error(m) -> float:  # 0 for the float model: the budget is absolute
        return float((m(tokens) - ref).norm() / ref.norm())

    cfg = QuantizeConfig(scheme="int8_wo", group_size=32, latency={"objective": "off"},
                         metric_higher_is_better=False,
                         mixed_precision={"enabled": True, "max_rel_metric_loss": 0.01})
    qmodel, report = quantize_model(model, cfg, [tokens], output_error)
    assignment = report.mixed_precision.assignment
    assert set(CONV1D) <= set(assignment)
    floats = [n for n in CONV1D if assignment[n] == "fp32"]
    assert floats and len(floats) < len(CONV1D), assignment
    for name in CONV1D:  # float ones are transformers Conv1D again, the rest quantized
        layer = qmodel.model.get_submodule(name)
        assert isinstance(layer, Conv1D) if name in floats else name in qmodel.layers()
    assert report.rel_metric_loss <= 0.01
    save_quantized(qmodel, f"file://{tmp_path}/mp")
    loaded = load_quantized(f"file://{tmp_path}/mp", tiny_gpt2, backend="dequant")
    qmodel.set_backend("dequant")
    with torch.no_grad():
        assert torch.equal(loaded(tokens), qmodel(tokens))
    with pytest.raises(Exception, match="model_factory"):  # a different GPT-2 is refused
        load_quantized(f"file://{tmp_path}/mp", lambda: HFCausalLM(transformers.GPT2LMHeadModel(
            transformers.GPT2Config(**{**GPT2, "n_embd": 64}))))


def test_compressed_tensors_export_keeps_conv1d_layers_decoded(gpt2, tmp_path):
    pytest.importorskip("compressed_tensors")
    from forgeline.quantize.runtime.hf_compressed import (
        load_compressed_tensors,
        save_compressed_tensors,
    )

    model, tokens, ref = gpt2
    cfg = QuantizeConfig(scheme="int8_wo", latency={"objective": "off"})
    qmodel, _ = quantize_model(model, cfg, [tokens])
    qmodel.set_backend("dequant")
    out = save_compressed_tensors(qmodel, f"file://{tmp_path}/ct")
    assert out["mapped_layers"] == ["model.lm_head"]
    assert set(CONV1D) <= set(out["ignored_layers"]) and "Conv1D" in out["notes"][0]
    loaded = load_compressed_tensors(f"file://{tmp_path}/ct", tiny_gpt2)
    for name in CONV1D:  # decoded weights in Conv1D's (in, out) layout
        assert torch.equal(loaded.get_submodule(name).weight,
                           qmodel.layers()[name].dequantized_weight().t())
    with torch.no_grad():
        theirs, ours = loaded(tokens), qmodel(tokens)
    assert float((theirs - ours).norm() / ref.norm()) < 1e-4


def test_the_quantize_stage_quantizes_a_gpt2_and_its_artifact_loads(tiny_dataset, tmp_path):
    from safetensors.torch import load_file

    from forgeline import stages as pipeline_stages
    from forgeline.quantize.stage import QuantizeOptions
    from forgeline.runs import RunLayout
    from forgeline.train import TrainOptions
    from forgeline.train.models import build_model, build_saved_model, save_trained_model

    layout = RunLayout(str(tmp_path), "gpt2")
    layout.record("prepare", tiny_dataset.model_dump(mode="json"))
    hf = {"model_type": "gpt2", **GPT2, "n_positions": 64}
    config = TrainOptions(model={"kind": "hf_config", "hf_config": hf}).to_config(
        tiny_dataset.manifest_url)
    torch.manual_seed(0)
    model_url = save_trained_model(build_model(config).state_dict(), config,
                                   layout.stage_url("train"))
    layout.record("train", {"model_url": model_url})
    options = QuantizeOptions(scheme="int8_wo", mixed_precision=False, sensitivity=False,
                              eval_samples=16, calibration_samples=8, latency_objective="off")
    result = pipeline_stages.quantize(layout, options)
    assert all(result.assignment[n] == "int8_wo" for n in CONV1D), result.assignment
    model_json = model_url.rsplit("/", 1)[0] + "/model.json"
    loaded = load_quantized(result.model_url, lambda: build_saved_model(model_json))
    assert set(CONV1D) <= set(loaded.layers())
    float_model = build_saved_model(model_json).eval()
    float_model.load_state_dict(load_file(model_url.removeprefix("file://")))
    tokens = torch.randint(0, 256, (2, 32))
    with torch.no_grad():
        ours, ref = loaded(tokens), float_model(tokens)
    assert float((ours - ref).norm() / ref.norm()) < 0.03 and result.size_ratio > 1
