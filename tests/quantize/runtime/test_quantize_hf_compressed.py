"""Export to compressed-tensors, loaded back with the compressed_tensors library on CPU."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

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


def test_int8_and_int4_round_trip_through_compressed_tensors(tmp_path):
    torch.manual_seed(0)
    model = TinyLM().eval()
    tokens = torch.randint(0, 64, (4, 16))
    cfg = QuantizeConfig(scheme="int8_wo", group_size=32, overrides={"fc2": "int4_rtn",
                         "head": "w8a8"}, latency={"objective": "off"})
    qmodel, _ = quantize_model(model, cfg, [tokens])
    qmodel.set_backend("dequant")
    out = save_compressed_tensors(qmodel, f"file://{tmp_path}/ct")
    assert out["mapped_layers"] == ["fc1", "fc2"] and out["ignored_layers"] == ["emb", "head"]
    loaded = load_compressed_tensors(f"file://{tmp_path}/ct", TinyLM)
    layers = qmodel.layers()
    for name in ("fc1", "fc2", "emb"):  # the library decodes exactly our weights
        assert torch.allclose(loaded.get_submodule(name).weight,
                              layers[name].dequantized_weight(), atol=1e-6), name
    with torch.no_grad():
        ours, theirs, ref = qmodel(tokens), loaded(tokens), model(tokens)
    # identical except the W8A8 head, whose activation grid the format does not carry
    err_theirs = float((theirs - ref).norm() / ref.norm())
    err_ours = float((ours - ref).norm() / ref.norm())
    assert float((theirs - ours).norm() / ref.norm()) < 0.05
    assert err_theirs < 0.05 and err_ours < 0.05
