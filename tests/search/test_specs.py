"""Specs: validation with clear errors, presets, inspection of torch modules, this machine."""

from __future__ import annotations

import psutil
import pytest
import torch
from pydantic import ValidationError
from torch import nn

from forgeline.errors import ConfigError
from forgeline.search import PRESET_NAMES, ClusterSpec, ModelSpec, TrainingSpec, this_machine_cpu


class _Block(nn.Module):
    def __init__(self, h: int, heads: int, f: int) -> None:
        super().__init__()
        self.n_head = heads
        self.ln1, self.ln2 = nn.LayerNorm(h), nn.LayerNorm(h)
        self.qkv, self.proj = nn.Linear(h, 3 * h), nn.Linear(h, h)
        self.fc1, self.fc2 = nn.Linear(h, f), nn.Linear(f, h)
        self.drop = nn.Dropout(0.1)


class _TinyGPT(nn.Module):
    def __init__(self, vocab=300, seq=64, h=48, heads=6, f=160, layers=3) -> None:
        super().__init__()
        self.wte, self.wpe = nn.Embedding(vocab, h), nn.Embedding(seq, h)
        self.blocks = nn.ModuleList(_Block(h, heads, f) for _ in range(layers))
        self.ln_f = nn.LayerNorm(h)
        self.head = nn.Linear(h, vocab, bias=False)
        self.head.weight = self.wte.weight


class _TorchEncoderLM(nn.Module):
    def __init__(self, vocab=200, h=32, heads=4, f=96, layers=2) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, h)
        layer = nn.TransformerEncoderLayer(h, heads, dim_feedforward=f, dropout=0.0)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(h)
        self.head = nn.Linear(h, vocab, bias=False)


def _numel(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())  # shared weights counted once


def test_from_module_reads_a_gpt():
    net = _TinyGPT()
    spec = ModelSpec.from_module(net, seq_len=64)
    assert (spec.layers, spec.hidden, spec.heads, spec.ffn_hidden, spec.vocab) == (
        3, 48, 6, 160, 300)
    assert spec.tied_embeddings and spec.learned_position_embeddings and spec.dropout
    assert spec.param_dtype == "fp32"
    assert spec.total_params == _numel(net)


def test_from_module_reads_torch_transformer_encoder():
    net = _TorchEncoderLM().to(torch.bfloat16)
    spec = ModelSpec.from_module(net, seq_len=128)
    assert (spec.layers, spec.hidden, spec.heads, spec.ffn_hidden) == (2, 32, 4, 96)
    assert not spec.tied_embeddings and not spec.learned_position_embeddings
    assert not spec.dropout and spec.param_dtype == "bf16"
    assert spec.total_params == _numel(net)


def test_from_module_without_embedding_names_the_problem():
    with pytest.raises(ConfigError, match="module='Linear'.*nn.Embedding"):
        ModelSpec.from_module(nn.Linear(4, 4), seq_len=8)


def test_model_spec_defaults_and_bad_values():
    spec = ModelSpec(layers=2, hidden=64, heads=4, seq_len=16, vocab=100)
    assert spec.ffn_hidden == 256
    with pytest.raises(ValidationError, match="heads=5.*hidden=64"):
        ModelSpec(layers=2, hidden=64, heads=5, seq_len=16, vocab=100)
    with pytest.raises(ValidationError, match="layers"):
        ModelSpec(layers=0, hidden=64, heads=4, seq_len=16, vocab=100)


def test_cluster_rejects_zero_devices():
    for field in ("nodes", "devices_per_node"):
        with pytest.raises(ValidationError, match=field):
            ClusterSpec.preset("a100-80gb").model_validate(
                {**ClusterSpec.preset("a100-80gb").model_dump(), field: 0})


def test_presets():
    assert set(PRESET_NAMES) == {"v100-32gb", "a100-40gb", "a100-80gb", "h100", "h200", "b200"}
    a100 = ClusterSpec.preset("a100-80gb", nodes=128)
    assert a100.total_devices == 1024
    assert a100.device_memory_bytes == 80 * 2**30 and a100.peak_for("bf16") == 312e12
    assert ClusterSpec.preset("a100-40gb").device_memory_bytes == 40 * 2**30
    h100, h200 = ClusterSpec.preset("h100"), ClusterSpec.preset("h200")
    assert h100.peak_for("fp8") == pytest.approx(2 * h100.peak_for("bf16"), rel=1e-3)
    assert h200.hbm_bytes_per_s > h100.hbm_bytes_per_s
    with pytest.raises(ConfigError, match="preset='tpu'"):
        ClusterSpec.preset("tpu")
    with pytest.raises(ConfigError, match="precision='fp8'"):
        a100.peak_for("fp8")


def test_this_machine_is_measured():
    cpu = this_machine_cpu(devices=2)
    total = psutil.virtual_memory().total
    assert cpu.devices_per_node == 2 and cpu.host_memory_bytes == total
    assert cpu.device_memory_bytes == total // 2
    assert cpu.peak_for("fp32") > 1e8  # any machine that runs torch does 0.1 GFLOP/s
    assert cpu.hbm_bytes_per_s > 1e8
    effs = [e for _, e in cpu.matmul_efficiency]
    assert effs == sorted(effs) and effs[-1] == pytest.approx(1.0)
    assert "measured" in cpu.notes
    # gloo runs on the compute cores: nothing overlaps; its rates are measured, not assumed
    assert cpu.overlap_efficiency == 0.0
    assert cpu.intra_node_bytes_per_s > 1e6 and cpu.zero_copy_bytes_per_s > 1e6
    assert "gloo" in cpu.notes


def test_training_spec():
    with pytest.raises(ValidationError, match="global_batch_size"):
        TrainingSpec(global_batch_size=0)
    model = ModelSpec(layers=2, hidden=64, heads=4, seq_len=16, vocab=100)
    assert TrainingSpec(global_batch_size=8).optimizer_bytes_per_param(model) == 12
    assert TrainingSpec(global_batch_size=8, optimizer="sgd").optimizer_bytes_per_param(
        model) == 8
    fp32 = model.model_copy(update={"param_dtype": "fp32"})
    assert TrainingSpec(global_batch_size=8).optimizer_bytes_per_param(fp32) == 8


def test_preset_overrides_are_validated():
    custom = ClusterSpec.preset("h100", nodes=2, devices_per_node=4, inter_node_bytes_per_s=25e9)
    assert custom.total_devices == 8 and custom.inter_node_bytes_per_s == 25e9
    assert custom.name == "h100x8"
    with pytest.raises(ValidationError, match="inter_node_bytes_per_s"):
        ClusterSpec.preset("h100", inter_node_bytes_per_s=-1)
    with pytest.raises(ValidationError, match="no_such_field"):
        ClusterSpec.preset("h100", no_such_field=1)
    v100, b200 = ClusterSpec.preset("v100-32gb"), ClusterSpec.preset("b200")
    assert v100.devices_per_node == 16 and v100.peak_for("fp16") == 125e12
    with pytest.raises(ConfigError, match="precision='bf16'"):
        v100.peak_for("bf16")  # Volta has no bf16 tensor cores
    assert b200.peak_for("bf16") == 2.25e15 and b200.peak_for("fp8") == 4.5e15


def test_grouped_query_gated_model_counts_by_hand():
    # h=8, 2 heads of 4, 1 kv head (kv width 4), f=16, SwiGLU, no biases, RMSNorm:
    # 2h^2 + 2h kv + 3hf = 128 + 64 + 384 = 576 weights + 2 x 8 norm weights = 592
    m = ModelSpec(layers=1, hidden=8, heads=2, kv_heads=1, ffn_hidden=16, gated_mlp=True,
                  biases=False, norm="rmsnorm", seq_len=4, vocab=10)
    assert (m.kv_hidden, m.mlp_matrices, m.params_per_layer) == (4, 3, 592)
    gpt = ModelSpec(layers=1, hidden=8, heads=2, seq_len=4, vocab=10)
    assert gpt.kv_heads == 2 and gpt.params_per_layer == 12 * 64 + 13 * 8


def test_published_llama_and_mt_nlg_sizes():
    from forgeline.search.published import LLAMA3_8B, LLAMA3_405B, PUBLISHED_RUNS, _llama

    assert _llama("8b", LLAMA3_8B, 8192, 128256).total_params == 8_030_261_248
    assert _llama("405b", LLAMA3_405B, 8192, 128256).total_params == pytest.approx(
        405.85e9, rel=1e-4)
    mt = next(r for r in PUBLISHED_RUNS if r.family == "megatron-deepspeed").model
    assert mt.total_params == pytest.approx(530e9, rel=0.01)


@pytest.mark.parametrize(("fields", "name"), [
    ({"kv_heads": 3}, "kv_heads"),  # must divide 4 heads
    ({"kv_heads": 8}, "kv_heads"),  # more kv than query heads
    ({"norm": "batchnorm"}, "norm"),
    ({"heads": 3}, "heads"),  # hidden 64 not divisible
])
def test_new_model_fields_reject_bad_values(fields, name):
    with pytest.raises((ValidationError, ConfigError), match=name):
        ModelSpec(**{"layers": 2, "hidden": 64, "heads": 4, "seq_len": 16, "vocab": 100,
                     **fields})


@pytest.mark.parametrize(("fields", "name"), [
    ({"matmul_peak_fraction": {"bf16": 1.5}}, "matmul_peak_fraction"),
    ({"attention_efficiency": {"flash2": 0.0}}, "attention_efficiency"),
    ({"nvme_bytes_per_s": -1.0}, "nvme_bytes_per_s"),
    ({"devices_per_node": 0}, "devices_per_node"),
])
def test_new_cluster_fields_reject_bad_values(fields, name):
    with pytest.raises((ValidationError, ConfigError), match=name):
        ClusterSpec.preset("h100", **fields)


def test_framework_is_a_closed_set_with_profiles():
    from forgeline.search.profiles import FRAMEWORK_NAMES

    with pytest.raises(ValidationError, match="framework"):
        TrainingSpec(global_batch_size=8, framework="jax-magic")
    for name in FRAMEWORK_NAMES:
        assert TrainingSpec(global_batch_size=8, framework=name).profile.name == name
    fp8 = TrainingSpec(global_batch_size=8, precision="fp8")
    assert (fp8.gemm_precision, fp8.attention_precision) == ("fp8", "bf16")


def test_presets_carry_sourced_matmul_ceilings():
    a100, h100 = ClusterSpec.preset("a100-80gb"), ClusterSpec.preset("h100")
    assert a100.matmul_peak_fraction["bf16"] == 0.869  # MAMF 271.2 / 312
    assert h100.matmul_peak_fraction["fp8"] == 0.709  # MAMF 1402.6 / 1979
    # the curve's best point becomes the measured ceiling
    assert h100.matmul_scale("bf16") * 0.95 == pytest.approx(0.803)
    assert ClusterSpec.preset("v100-32gb").matmul_scale("fp16") == 1.0  # none measured
