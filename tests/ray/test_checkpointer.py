"""Checkpointer + callbacks under real Ray Train: a worker killed mid-training resumes from
the last forgeline checkpoint and ends with the same model as an uninterrupted run."""

from __future__ import annotations

import math
import os
import signal
from pathlib import Path

import psutil
import pytest
import torch
from ray.train import UserCallback
from safetensors.torch import load_file

from forgeline import storage
from forgeline.checkpoint import CheckpointStore, consolidated_fp32
from forgeline.ray import Checkpointer, FailureStatistics, read_metrics, young_daly_interval_s
from forgeline.train import TrainOptions, run_training

STEPS, EVERY = 24, 8


class KillOneWorkerAfter(UserCallback):
    """Test-only: SIGKILL one Ray Train worker process once a checkpoint step is reported.
    (It runs inside Ray's controller actor, so it leaves a marker file as evidence.)"""

    def __init__(self, checkpoint_step: int, marker: Path) -> None:
        self.checkpoint_step, self.marker = checkpoint_step, marker

    def after_report(self, run_context, metrics, checkpoint) -> None:
        if self.marker.exists() or metrics[0].get("checkpoint_step") != self.checkpoint_step:
            return
        for proc in psutil.process_iter(["pid", "cmdline"]):
            if any("RayTrainWorker" in part for part in proc.info["cmdline"] or []):
                os.kill(proc.info["pid"], signal.SIGKILL)
                self.marker.write_text(str(proc.info["pid"]))
                return


def _options() -> TrainOptions:
    return TrainOptions(model_size="tiny", workers=2, zero_stage=2, steps=STEPS,
                        micro_batch_size=8, lr=3e-3, eval_samples=32,
                        checkpoint_every_steps=EVERY, checkpoint_keep_last=2, max_failures=1)


@pytest.mark.slow
def test_killed_worker_resumes_from_forgeline_checkpoint(ray_cluster, tiny_dataset, tmp_path):
    config = _options().to_config(tiny_dataset.manifest_url)
    clean = run_training(config, f"file://{tmp_path}/clean", f"file://{tmp_path}/clean.jsonl")

    marker = tmp_path / "killed.pid"
    crashed = run_training(config, f"file://{tmp_path}/crashed",
                           f"file://{tmp_path}/crashed.jsonl",
                           callbacks=[KillOneWorkerAfter(16, marker)])
    assert marker.exists()

    records = read_metrics(f"file://{tmp_path}/crashed.jsonl")
    saved = [r["checkpoint_step"] for r in records if "checkpoint_step" in r]
    # resumed, not restarted: step 8 is never saved twice; 16 only again if the kill came
    # before its async save committed (then the run resumed from 8)
    assert saved.count(8) == 1 and saved[-1] == STEPS, saved
    stats = storage.read_json(f"file://{tmp_path}/crashed/checkpoints/failure_stats.json")
    print(f"\ncheckpoint steps reported: {saved}; failure stats: {stats}")

    a = load_file(tmp_path / "clean" / "model.safetensors")
    b = load_file(tmp_path / "crashed" / "model.safetensors")
    assert a.keys() == b.keys()
    for name in a:  # deterministic CPU run (no dropout, gloo, fixed seeds and RNG restore)
        assert torch.equal(a[name], b[name]), name
    assert clean.train_loss_final == pytest.approx(crashed.train_loss_final, rel=1e-6)

    # retention kept the newest two; the final one's model consolidates to the export
    store = CheckpointStore(f"file://{tmp_path}/clean/checkpoints")
    assert store.steps() == [16, 24]
    exported = consolidated_fp32(store, 24)
    assert all(torch.equal(exported[k], a[k]) for k in a)


def test_young_daly_interval():
    assert young_daly_interval_s(2.0, 3600.0) == pytest.approx(math.sqrt(2 * 2 * 3600))
    assert young_daly_interval_s(2.0, math.inf) == math.inf


def test_failure_statistics_writes_mtbf(tmp_path):
    url = f"file://{tmp_path}/ck"
    stats = FailureStatistics(url)
    stats.after_report(None, [{"checkpoint_blocked_s": 0.5}], None)
    stats.after_exception(None, {0: RuntimeError("boom")})
    written = storage.read_json(f"{url}/failure_stats.json")
    assert written["failures"] == 1 and written["mtbf_s"] > 0
    assert written["young_daly_interval_s"] == pytest.approx(
        math.sqrt(2 * 0.5 * written["mtbf_s"]), rel=0.05)


def test_adaptive_interval_follows_young_daly(tmp_path, monkeypatch):
    from forgeline.ray import checkpointer as module

    url = f"file://{tmp_path}/ck"
    ckpt = Checkpointer(url, every_steps=10, adaptive=True, rank=0, world_size=1)
    storage.write_json_atomic(f"{url}/failure_stats.json", {"mtbf_s": 800.0})
    clock = iter([100.0, 110.0])  # steps 10 → 20 take 10 s: 1 s per step
    monkeypatch.setattr(module.time, "perf_counter", lambda: next(clock))
    ckpt._plan_next(10, 1.0)
    assert ckpt._next_step == 20  # no step time measured yet: the fixed interval
    ckpt._plan_next(20, 1.0)
    assert ckpt._next_step == 20 + 40  # sqrt(2 · 1 s · 800 s) = 40 s = 40 steps
    assert not ckpt.should_save(59) and ckpt.should_save(60)
    ckpt.close()


def test_resume_falls_back_to_the_newest_committed_step(tmp_path, monkeypatch):
    import json

    import ray.train

    url = f"file://{tmp_path}/ck"
    with CheckpointStore(url) as store:
        store.save({"x": torch.ones(2)}, 2)
    folder = tmp_path / "pointer"
    folder.mkdir()
    (folder / "forgeline_checkpoint.json").write_text(
        json.dumps({"url": url, "step": 3, "world_size": 1}))  # step 3 never committed
    monkeypatch.setattr(ray.train, "get_checkpoint",
                        lambda: ray.train.Checkpoint.from_directory(str(folder)))
    ckpt = Checkpointer(url, rank=0, world_size=1)
    restored = ckpt.restore()
    assert restored.step == 2 and torch.equal(restored.state["x"], torch.ones(2))
    ckpt.close()
