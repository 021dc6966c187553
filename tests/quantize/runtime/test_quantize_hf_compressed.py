"""Export to compressed-tensors, loaded back with the compressed_tensors library on CPU."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from forgeline import storage
from forgeline.quantize import QuantizeConfig, quantize_model

pytest.importorskip("compressed_tensors")

from forgeline.quantize.runtime.hf_compressed import (  # noqa: E402
    load_compressed_tensors,
    save_compressed_tensors,
)


class TinyLM(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(64, 32)
        self.fc1, self.fc2 = nn.Linear(32, 128), nn.Linear(128, 32)
        self.head = nn.Linear(32, 64)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.emb(idx)
        return self.head(x + self.fc2(F.gelu(self.fc1(x))))


@pytest.mark.parametrize("reduce_range", [True, False])
def test_int8_int4_and_w8a8_round_trip_through_compressed_tensors(tmp_path, reduce_range):
    torch.manual_seed(0)
    model = TinyLM().eval()
    tokens = torch.randint(0, 64, (4, 16))
    cfg = QuantizeConfig(scheme="int8_wo", group_size=32, overrides={"fc2": "int4_rtn",
                         "head": "w8a8"}, activation={"reduce_range": reduce_range},
                         latency={"objective": "off"})
    qmodel, _ = quantize_model(model, cfg, [tokens])
    qmodel.set_backend("dequant")
    out = save_compressed_tensors(qmodel, f"file://{tmp_path}/ct")
    assert out["mapped_layers"] == ["fc1", "fc2", "head"] and out["ignored_layers"] == ["emb"]
    groups = storage.read_json(out["config"])["quantization_config"]["config_groups"]
    (head,) = [g for g in groups.values() if g["targets"] == ["head"]]
    assert head["input_activations"]["num_bits"] == (7 if reduce_range else 8)
    assert head["input_activations"]["dynamic"] is False
    loaded = load_compressed_tensors(f"file://{tmp_path}/ct", TinyLM)
    layers = qmodel.layers()
    for name in ("fc1", "fc2", "head", "emb"):  # the library decodes exactly our weights
        assert torch.allclose(loaded.get_submodule(name).weight,
                              layers[name].dequantized_weight(), atol=1e-6), name
    with torch.no_grad():
        ours, theirs, ref = qmodel(tokens), loaded(tokens), model(tokens)
    # the same outputs: the library quantizes the head's input on our activation grid
    assert torch.allclose(theirs, ours, atol=1e-5)
    err = float((ours - ref).norm() / ref.norm())
    assert 0 < err < 0.05
