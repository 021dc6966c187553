import pytest
import torch
from pydantic import ValidationError

from forgeline.train import DecoderLM, ModelConfig, count_params, lm_loss


def test_shapes_and_presets():
    cfg = ModelConfig.preset("tiny", seq_len=32)
    model = DecoderLM(cfg)
    logits = model(torch.randint(0, 256, (3, 32)))
    assert logits.shape == (3, 32, 256)
    assert count_params(DecoderLM(ModelConfig.preset("small"))) > count_params(model)


def test_attention_is_causal():
    torch.manual_seed(0)
    model = DecoderLM(ModelConfig.preset("tiny", seq_len=16)).eval()
    tokens = torch.randint(0, 256, (1, 16))
    changed = tokens.clone()
    changed[0, 10:] = (changed[0, 10:] + 1) % 256
    with torch.no_grad():
        a, b = model(tokens), model(changed)
    torch.testing.assert_close(a[0, :10], b[0, :10])
    assert not torch.allclose(a[0, 10:], b[0, 10:])


def test_activation_checkpointing_gives_the_same_gradients():
    tokens = torch.randint(0, 256, (2, 17))
    grads = []
    for flag in (False, True):
        torch.manual_seed(0)
        model = DecoderLM(ModelConfig.preset("tiny", seq_len=16, activation_checkpointing=flag))
        lm_loss(model(tokens[:, :-1]), tokens[:, 1:]).backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    torch.testing.assert_close(grads[0], grads[1])


def test_untrained_loss_is_near_uniform():
    model = DecoderLM(ModelConfig.preset("tiny", seq_len=16))
    tokens = torch.randint(0, 256, (8, 17))
    loss = lm_loss(model(tokens[:, :-1]), tokens[:, 1:]).item()
    assert abs(loss - torch.log(torch.tensor(256.0)).item()) < 0.3


def test_heads_must_divide_width():
    with pytest.raises(ValidationError, match="n_heads=3 must divide d_model=64"):
        ModelConfig(d_model=64, n_heads=3)
