"""Training-state capture/restore with a real DeepSpeed ZeRO-2 engine (1 rank, gloo, CPU):
resuming from a checkpoint continues bit-exactly, and export consolidates the fp32 weights."""

from __future__ import annotations

import os

import pytest
import torch
import torch.distributed as dist

from forgeline.checkpoint import CheckpointConfig, CheckpointStore, export_safetensors
from forgeline.checkpoint.config import TrainCheckpointing
from forgeline.checkpoint.training import (
    capture_training_state,
    reshard_zero_partition,
    restore_training_state,
    zero_partition_size,
)
from forgeline.errors import ConfigError
from forgeline.train import (
    ModelConfig,
    ShuffledBatches,
    default_deepspeed_config,
    skip_unused_deepspeed_ops,
)
from forgeline.train.model import DecoderLM, lm_loss


@pytest.fixture(scope="module")
def gloo():
    env = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29517", "LOCAL_RANK": "0", "RANK": "0",
           "WORLD_SIZE": "1"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    dist.init_process_group("gloo", rank=0, world_size=1)
    yield
    dist.destroy_process_group()
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def _engine(seed: int = 0, zero_stage: int = 2):
    import deepspeed

    skip_unused_deepspeed_ops()  # as the train loop does
    torch.manual_seed(seed)
    model = DecoderLM(ModelConfig(n_layers=1, d_model=32, n_heads=2, seq_len=64))
    ds = default_deepspeed_config(zero_stage=zero_stage, micro_batch_size=4, warmup_steps=2,
                                  total_steps=20)
    engine, _, _, scheduler = deepspeed.initialize(
        model=model, model_parameters=model.parameters(), config=ds, dist_init_required=False)
    return engine, scheduler


def _train(engine, batches, steps: int) -> None:
    for _ in range(steps):
        _, tokens = next(batches)
        logits = engine(tokens[:, :-1])
        # a dash of randomness so that restoring the RNG state matters
        loss = lm_loss(logits, tokens[:, 1:]) * (1 + 0.01 * torch.rand(()))
        engine.backward(loss)
        engine.step()


def test_resume_is_bit_exact_and_export_consolidates(gloo, tiny_dataset, tmp_path):
    from forgeline.datasets import TokenDataset

    data = TokenDataset(tiny_dataset.manifest_url, "train")
    url = f"file://{tmp_path}/ckpt"
    engine, scheduler = _engine()
    source = ShuffledBatches(data, 4, seed=0)
    batches = iter(source)
    _train(engine, batches, 3)
    with CheckpointStore(url, CheckpointConfig(chunk_bytes=8192, inline_tensor_bytes=0)) as store:
        store.protect(engine)  # the ZeRO-2 engine's inner torch optimizer waits for the copy
        assert store.overlapped
        store.save(capture_training_state(engine, scheduler, source, 3, 2), 3)
        _train(engine, batches, 4)  # steps right away: the checkpoint must hold step 3
    expected = {k: v.clone() for k, v in engine.module.state_dict().items()}

    engine2, scheduler2 = _engine(seed=1)  # different init: everything must come from the file
    source2 = ShuffledBatches(data, 4, seed=0)
    restored = CheckpointStore(url).restore()
    step = restore_training_state(restored.state, engine2, scheduler2, source2, 2,
                                  saved_world_size=1, world_size=1)
    assert step == 3 and engine2.global_steps == 3
    _train(engine2, iter(source2), 4)
    for name, value in engine2.module.state_dict().items():
        assert torch.equal(value, expected[name]), name

    out = tmp_path / "export.safetensors"
    export_safetensors(url, f"file://{out}")
    from safetensors.torch import load_file

    exported = load_file(out)
    at_step3 = restored.state["model"]
    assert set(exported) == set(at_step3)
    for name, value in exported.items():
        assert value.dtype == torch.float32 and torch.equal(value, at_step3[name].float()), name

    with pytest.raises(ConfigError, match="num_workers.*resharding optimizer state"):
        restore_training_state(restored.state, engine2, scheduler2, source2, 2,
                               saved_world_size=2, world_size=1)


def test_bad_codec_in_training_options():
    with pytest.raises(ValueError, match="codec='lz5'.*unknown codec"):
        TrainCheckpointing(codec="lz5")


@pytest.mark.parametrize("saved_world", [1, 2, 3])
@pytest.mark.parametrize("world", [1, 2, 4])
def test_zero_partitions_reshard_exactly(saved_world, world):
    """A flat group padded and split as DeepSpeed does for N ranks, re-split for M: the
    concatenation is the same values, then zeros; each part has DeepSpeed's size for M."""
    numel = 101
    flat = torch.randn(numel)
    saved_size = zero_partition_size(numel, saved_world)
    padded = torch.cat([flat, torch.zeros(saved_size * saved_world - numel)])
    parts = dict(enumerate(padded.split(saved_size)))
    new = [reshard_zero_partition(parts, saved_size, numel, r, world) for r in range(world)]
    assert all(p.numel() == zero_partition_size(numel, world) for p in new)
    joined = torch.cat(new)
    assert torch.equal(joined[:numel], flat) and not joined[numel:].any()


def test_a_changed_zero_stage_is_refused_and_weights_only_resume_works(gloo, tiny_dataset):
    from forgeline.datasets import TokenDataset

    data = TokenDataset(tiny_dataset.manifest_url, "train")
    engine, scheduler = _engine(zero_stage=2)
    source = ShuffledBatches(data, 4, seed=0)
    _train(engine, iter(source), 3)
    state = capture_training_state(engine, scheduler, source, 3, 2)
    engine0, scheduler0 = _engine(seed=1, zero_stage=0)
    source0 = ShuffledBatches(data, 4, seed=0)
    with pytest.raises(ConfigError, match="zero_stage=0.*ZeRO-2.*resume_optimizer=False"):
        restore_training_state(state, engine0, scheduler0, source0, 0, saved_world_size=1,
                               world_size=1)
    step = restore_training_state(state, engine0, scheduler0, source0, 0, saved_world_size=1,
                                  world_size=1, load_optimizer=False)
    assert step == 3 and engine0.global_steps == 3
    assert source0.state_dict() == source.state_dict()
    assert scheduler0.state_dict() == scheduler.state_dict()
    assert engine0.optimizer.param_groups[0]["lr"] == engine.optimizer.param_groups[0]["lr"] > 0
    for name, value in engine0.module.state_dict().items():
        assert torch.equal(value, engine.module.state_dict()[name]), name
    assert not engine0.optimizer.state  # the moments start from zero
