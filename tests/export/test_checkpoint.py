"""A training checkpoint as a plain fp32 safetensors state dict and a torch DCP folder, each
round-tripped through the standard reader (safetensors, ``dcp_to_torch_save``)."""

from __future__ import annotations

import torch
from safetensors.torch import load_file
from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

from forgeline.checkpoint import CheckpointConfig, CheckpointStore
from forgeline.export import export_checkpoint
from forgeline.train.model import DecoderLM, ModelConfig


def _save_two_steps(url: str) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    model = DecoderLM(ModelConfig(n_layers=1, d_model=32, n_heads=2, seq_len=16))
    with CheckpointStore(url, CheckpointConfig(chunk_bytes=4096)) as store:
        store.save({"step": 1, "model": dict(model.state_dict())}, 1)
        store.wait()
        with torch.no_grad():
            for p in model.parameters():
                p.mul_(1.5)
        store.save({"step": 2, "model": dict(model.state_dict())}, 2)
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_newest_step_round_trips_through_safetensors_and_dcp(tmp_path):
    expected = _save_two_steps(f"file://{tmp_path}/ckpt")
    done = export_checkpoint(f"file://{tmp_path}/ckpt", f"file://{tmp_path}/out")
    assert done.step == 2 and done.tensors == len(expected)

    plain = load_file(tmp_path / "out" / "model_fp32.safetensors")
    assert plain.keys() == expected.keys()
    for name, tensor in expected.items():
        assert plain[name].dtype == torch.float32
        torch.testing.assert_close(plain[name], tensor, rtol=0, atol=0)

    dcp_to_torch_save(tmp_path / "out" / "dcp", tmp_path / "model.pt")
    converted = torch.load(tmp_path / "model.pt", weights_only=True)
    assert converted.keys() == expected.keys()
    for name, tensor in expected.items():
        torch.testing.assert_close(converted[name], tensor, rtol=0, atol=0)
    # published atomically: no staging files left beside the exports
    assert not [p for p in (tmp_path / "out").rglob("*.tmp")]


def test_a_chosen_step_is_exported(tmp_path):
    newest = _save_two_steps(f"file://{tmp_path}/ckpt")
    done = export_checkpoint(f"file://{tmp_path}/ckpt", f"file://{tmp_path}/out", step=1)
    assert done.step == 1
    first = load_file(tmp_path / "out" / "model_fp32.safetensors")
    torch.testing.assert_close(first["head.weight"] * 1.5, newest["head.weight"])
