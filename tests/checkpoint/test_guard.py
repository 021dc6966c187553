"""Overlapped snapshots: save() returns before the copy is done, and a guarded optimizer step
right after it still leaves the pre-step state in the checkpoint."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from forgeline.checkpoint import CheckpointConfig, CheckpointStore
from forgeline.checkpoint.guard import find_optimizers
from forgeline.errors import ConfigError


def _backward(model: nn.Module, opt: torch.optim.Optimizer, seed: int) -> None:
    x = torch.randn(16, 1024, generator=torch.Generator().manual_seed(seed))
    opt.zero_grad()
    model(x).square().mean().backward()


def _state(model: nn.Module, opt: torch.optim.Optimizer) -> dict:
    return {"model": model.state_dict(), "optimizer": opt.state_dict()}


def _clone(state):
    if isinstance(state, torch.Tensor):
        return state.clone()
    if isinstance(state, dict):
        return {k: _clone(v) for k, v in state.items()}
    if isinstance(state, list):
        return [_clone(v) for v in state]
    return state


@pytest.mark.parametrize("delta,staging_chunks", [(False, 1024), (True, 1024), (True, 3)])
def test_save_then_immediate_step_persists_the_pre_step_state(tmp_path, delta, staging_chunks):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(1024, 4096), nn.GELU(), nn.Linear(4096, 1024))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    _backward(model, opt, 0)
    opt.step()
    config = CheckpointConfig(chunk_bytes=1 << 20, inline_tensor_bytes=0, delta=delta,
                              keyframe_every=2, max_staging_bytes=staging_chunks << 20)
    url = f"file://{tmp_path}/c"
    expected = {}
    with CheckpointStore(url, config) as store:
        assert not store.overlapped  # unguarded: save() copies the state itself
        store.protect(opt)
        assert store.overlapped
        for step in (1, 2):
            _backward(model, opt, step)
            expected[step] = _clone(_state(model, opt))
            info = store.save(_state(model, opt), step)
            opt.step()  # right away: mutates weights and moments while the copy is running
            assert info.waited_s >= 0 and info.stall_s >= info.blocked_s
        live = model.state_dict()
        assert store._staging.peak <= config.max_staging_bytes  # back-pressure, no deadlock
    for step, want in expected.items():
        got = CheckpointStore(url).restore(step).state
        for name, value in want["model"].items():
            assert torch.equal(got["model"][name], value), (step, name)
            assert not torch.equal(live[name], value)  # the step did change it afterwards
        for index, slots in want["optimizer"]["state"].items():
            for key, value in slots.items():
                assert torch.equal(got["optimizer"]["state"][index][key], value), (step, key)


def test_guard_finds_optimizers_through_wrappers_and_refuses_others(tmp_path):
    opt = torch.optim.SGD(nn.Linear(2, 2).parameters(), lr=0.1)

    class Engine:  # the DeepSpeed shape: engine.optimizer (.optimizer …) → torch optimizer
        def __init__(self, inner):
            self.optimizer = inner

    assert find_optimizers(Engine(Engine(opt))) == [opt]
    with CheckpointStore(f"file://{tmp_path}/c") as store, pytest.raises(
            ConfigError, match="optimizer='Linear'.*no torch.optim.Optimizer"):
        store.protect(nn.Linear(2, 2))
