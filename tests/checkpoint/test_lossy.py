"""Lossy (ExCP-style) mode: every restored value is within its stated bound at every step —
residuals are taken against the previous *reconstruction*, so errors never accumulate — the
second moment within a relative bound, and everything else stays bit-exact."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from forgeline.checkpoint import CheckpointConfig, CheckpointStore
from forgeline.checkpoint.lossy import BLOCK

N = 10_000


def _block_max(x: torch.Tensor) -> torch.Tensor:
    pad = torch.nn.functional.pad(x, (0, (-x.numel()) % BLOCK)).reshape(-1, BLOCK)
    return pad.amax(1, keepdim=True).expand_as(pad).reshape(-1)[: x.numel()]


def _trajectory(steps: int) -> list[dict]:
    g = torch.Generator().manual_seed(0)
    w = torch.randn(N, generator=g) * 0.02
    m, v = torch.zeros(N), torch.zeros(N)
    out = []
    for step in range(1, steps + 1):
        grad = torch.randn(N, generator=g) * 0.1
        m = 0.9 * m + 0.1 * grad
        v = 0.999 * v + 0.001 * grad**2
        w = w - 1e-3 * m / (v.sqrt() + 1e-8)
        out.append({"model": {"w": w.clone(), "ids": torch.arange(50) * step},
                    "optimizer": {"state": {0: {"exp_avg": m.clone(), "exp_avg_sq": v.clone(),
                                                "step": torch.tensor(float(step))}}},
                    "step": step})
    return out


@pytest.mark.parametrize("keyframe_every", [1, 4])
def test_every_step_is_within_its_bound_and_errors_do_not_accumulate(tmp_path, keyframe_every):
    config = CheckpointConfig(lossy=True, chunk_bytes=8192, keyframe_every=keyframe_every)
    url = f"file://{tmp_path}/c"
    states = _trajectory(8)
    with CheckpointStore(url, config) as store:
        for state in states:
            store.save(state, state["step"])
    store = CheckpointStore(url)
    for state in states:
        got = store.restore(state["step"]).state
        w, w_hat = state["model"]["w"], got["model"]["w"]
        assert ((w - w_hat).abs() <= config.lossy_weight_error * _block_max(w.abs())
                * (1 + 1e-5) + 1e-9).all()
        slots, hat = state["optimizer"]["state"][0], got["optimizer"]["state"][0]
        m, m_hat = slots["exp_avg"], hat["exp_avg"]
        assert ((m - m_hat).abs() <= config.lossy_momentum_error * _block_max(m.abs())
                * (1 + 1e-5) + 1e-9).all()
        v, v_hat = slots["exp_avg_sq"], hat["exp_avg_sq"]
        ratio = v_hat.sqrt() / v.sqrt()  # relative: small moments keep their precision
        half = (1 + config.lossy_second_moment_error) ** 0.5
        assert (ratio <= half * (1 + 1e-6)).all() and (ratio >= (1 - 1e-6) / half).all()
        assert torch.equal(v_hat == 0, v == 0)
        assert not torch.equal(w, w_hat)  # really lossy
        assert torch.equal(got["model"]["ids"], state["model"]["ids"])  # ints: exact
        assert torch.equal(hat["step"], slots["step"])  # small tensors: exact
    manifest = store.manifest(8)
    chains = [len(r.chain) for e in manifest.tensors if e.codec == "lossy" for r in e.chunks]
    assert max(chains) == (8 - 1) % keyframe_every  # residual chains reset at keyframes


def test_lossy_is_much_smaller_than_lossless(tmp_path):
    states = _trajectory(6)
    sizes = {}
    for lossy in (False, True):
        url = f"file://{tmp_path}/{lossy}"
        with CheckpointStore(url, CheckpointConfig(lossy=lossy, delta=True)) as store:
            for state in states:
                store.save(state, state["step"])
        sizes[lossy] = sum(p.stat().st_size for p in (tmp_path / str(lossy)).rglob("*")
                           if p.is_file() and "chunks" in p.parts)
    assert sizes[True] * 4 < sizes[False], sizes


def test_negative_second_moment_fails_clearly(tmp_path):
    from forgeline.checkpoint import CheckpointWriteError

    store = CheckpointStore(f"file://{tmp_path}/c", CheckpointConfig(lossy=True))
    store.save({"optimizer": {"exp_avg_sq": -np.ones(N, np.float32)}}, 1)
    with pytest.raises(CheckpointWriteError, match="non-negative values"):
        store.wait()
    with pytest.raises(CheckpointWriteError):
        store.close()
