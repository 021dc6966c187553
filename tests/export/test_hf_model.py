"""The trained model as a Hugging Face GPT-2 checkpoint: ``transformers`` builds it from the
exported config.json (no download) and gives forgeline's logits."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from forgeline import storage
from forgeline.export import export_hf_model, to_gpt2_state_dict
from forgeline.train.model import DecoderLM, ModelConfig

transformers = pytest.importorskip("transformers")


@pytest.mark.parametrize("shape", [dict(n_layers=2, d_model=64, n_heads=4, ffn_mult=4),
                                   dict(n_layers=1, d_model=48, n_heads=3, ffn_mult=2)])
def test_transformers_loads_the_export_with_the_same_logits(tmp_path, shape):
    torch.manual_seed(0)
    cfg = ModelConfig(seq_len=32, **shape)
    model = DecoderLM(cfg).eval()
    with torch.no_grad():  # non-zero biases/norms, so every mapped tensor matters
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    save_file(model.state_dict(), tmp_path / "model.safetensors")
    out = export_hf_model(f"file://{tmp_path}/model.safetensors", cfg.model_dump(),
                          f"file://{tmp_path}/hf")
    assert storage.read_json(storage.join(out, "config.json"))["model_type"] == "gpt2"

    hf = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "hf").eval()
    tokens = torch.randint(0, cfg.vocab_size, (3, cfg.seq_len))
    with torch.no_grad():
        ours, theirs = model(tokens), hf(tokens).logits
    assert theirs.shape == ours.shape
    torch.testing.assert_close(theirs, ours, atol=1e-4, rtol=1e-4)
    # untied head: the exported lm_head is the trained head, not the embedding
    assert not torch.equal(hf.lm_head.weight, hf.transformer.wte.weight)


def test_unknown_parameter_is_named():
    with pytest.raises(ValueError, match="blocks.0.extra.weight"):
        to_gpt2_state_dict({"blocks.0.extra.weight": torch.zeros(2, 2)})
