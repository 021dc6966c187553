"""Export + loader: bit-exact round trips on fsspec URLs, mismatches, integrity, light imports."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from forgeline import storage
from forgeline.errors import ConfigError, IntegrityError
from forgeline.quantize import QuantizeConfig, load_quantized, quantize_model, save_quantized
from forgeline.quantize.runtime import available_backends

# These tests check the schemes themselves; the latency objective (which may keep slow
# layers float) has its own tests.
LATENCY_OFF = {"latency": {"objective": "off"}}


class TinyLM(nn.Module):
    def __init__(self, vocab: int = 64, d: int = 32) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, d)
        self.ln = nn.LayerNorm(d)
        self.fc1, self.fc2 = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)
        self.head = nn.Linear(d, vocab)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.emb(idx)
        x = x + self.fc2(F.gelu(self.fc1(self.ln(x))))
        return self.head(x)


def _mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.LayerNorm(64), nn.Linear(64, 8))


def _tokens(seed: int) -> torch.Tensor:
    return torch.randint(0, 64, (4, 12), generator=torch.Generator().manual_seed(seed))


SCHEMES = ["int8_wo", "int4_rtn", "int4_gptq", "w8a8"]


@pytest.mark.parametrize("scheme", SCHEMES)
def test_sequential_roundtrip_bit_exact_without_factory(tmp_path, scheme):
    torch.manual_seed(0)
    model = _mlp()
    batches = [torch.randn(8, 32) for _ in range(3)]
    qmodel, _ = quantize_model(
        model, QuantizeConfig(**LATENCY_OFF, scheme=scheme, group_size=32), batches
    )
    url = f"file://{tmp_path}/q"
    save_quantized(qmodel, url)
    loaded = load_quantized(url)  # rebuilt from the recorded nn.Sequential tree
    assert loaded.kernels == qmodel.kernels
    x = torch.randn(16, 32)
    with torch.no_grad():
        assert torch.equal(loaded(x), qmodel(x))


@pytest.mark.parametrize("backend", ["dequant", "dequant_cached", "fbgemm"])
@pytest.mark.parametrize("scheme", SCHEMES)
def test_custom_model_roundtrip_bit_exact_with_factory(scheme, backend):
    if available_backends()[backend] is not None:
        pytest.skip(available_backends()[backend])
    torch.manual_seed(0)
    model = TinyLM()
    cfg = QuantizeConfig(**LATENCY_OFF, scheme=scheme, group_size=32, backend=backend)
    qmodel, _ = quantize_model(model, cfg, [_tokens(s) for s in range(3)])
    url = f"memory://forgeline-test/{scheme}-{backend}"
    save_quantized(qmodel, url)
    loaded = load_quantized(url, model_factory=TinyLM, backend=backend)
    x = _tokens(99)
    with torch.no_grad():
        assert torch.equal(loaded(x), qmodel(x))


def test_artifact_layout_and_map(tmp_path):
    torch.manual_seed(0)
    qmodel, _ = quantize_model(
        TinyLM(), QuantizeConfig(**LATENCY_OFF, scheme="int4_rtn", group_size=32)
    )
    url = f"file://{tmp_path}/q"
    info = save_quantized(qmodel, url)
    manifest = json.loads((tmp_path / "q" / "quantization.json").read_text())
    assert manifest["format"] == "forgeline.quantize/1"
    assert manifest["layers"]["fc1"]["bits"] == 4 and manifest["layers"]["fc1"]["group_size"] == 32
    assert manifest["architecture"]["rebuildable"] is False
    from safetensors import safe_open

    with safe_open(str(tmp_path / "q" / manifest["tensors_file"]), "pt") as f:
        keys = set(f.keys())
        assert f.get_tensor("fc1.qweight").dtype == torch.uint8
        assert f.get_tensor("fc1.zero_point").dtype == torch.uint8
        assert f.get_tensor("ln.weight").dtype == torch.float32
    assert {"fc1.qweight", "fc1.scale", "fc1.zero_point", "fc1.bias", "emb.qweight"} <= keys
    assert info["bytes"] == (tmp_path / "q" / manifest["tensors_file"]).stat().st_size
    # re-saving replaces the artifact and leaves no stale tensors file behind
    q8, _ = quantize_model(TinyLM(), QuantizeConfig(**LATENCY_OFF, scheme="int8_wo"))
    save_quantized(q8, url)
    assert len(list((tmp_path / "q").glob("*.safetensors"))) == 1


def test_custom_architecture_needs_factory():
    qmodel, _ = quantize_model(TinyLM(), QuantizeConfig(**LATENCY_OFF, scheme="int8_wo"))
    save_quantized(qmodel, "memory://forgeline-test/nofactory")
    with pytest.raises(ConfigError) as exc:
        load_quantized("memory://forgeline-test/nofactory")
    assert exc.value.field == "model_factory"


def test_mismatched_factory_is_a_clear_error():
    qmodel, _ = quantize_model(TinyLM(d=32), QuantizeConfig(**LATENCY_OFF, scheme="int8_wo"))
    save_quantized(qmodel, "memory://forgeline-test/mismatch")
    with pytest.raises(ConfigError) as exc:
        load_quantized("memory://forgeline-test/mismatch", model_factory=lambda: TinyLM(d=48))
    assert exc.value.field == "model_factory" and exc.value.value == "TinyLM"
    assert "fc1" in str(exc.value) and "48" in str(exc.value)


def test_bad_layer_spec_is_rejected(tmp_path):
    qmodel, _ = quantize_model(_mlp(), QuantizeConfig(**LATENCY_OFF, scheme="int8_wo"))
    url = f"file://{tmp_path}/q"
    save_quantized(qmodel, url)
    manifest = storage.read_json(url + "/quantization.json")
    manifest["layers"]["0"]["dtype"] = "load"  # never resolved by name on torch
    storage.write_json_atomic(url + "/quantization.json", manifest)
    with pytest.raises(ConfigError) as exc:
        load_quantized(url)
    assert exc.value.field == "layers['0']" and "dtype='load'" in exc.value.reason


def test_corrupted_tensors_are_detected(tmp_path):
    qmodel, _ = quantize_model(_mlp(), QuantizeConfig(**LATENCY_OFF, scheme="int8_wo"))
    url = f"file://{tmp_path}/q"
    save_quantized(qmodel, url)
    name = storage.read_json(url + "/quantization.json")["tensors_file"]
    path = tmp_path / "q" / name
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(IntegrityError):
        load_quantized(url)


def test_loader_imports_no_training_dependencies():
    code = (
        "import sys, forgeline.quantize.runtime.loader as L, forgeline.quantize.runtime;"
        "bad = [m for m in ('pydantic', 'ray', 'deepspeed', 'airflow', 'matplotlib', 'pyarrow')"
        " if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
