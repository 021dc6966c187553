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
from forgeline.ray import (
    Checkpointer,
    FailureStatistics,
    planning_mtbf_s,
    read_metrics,
)
from forgeline.ray.checkpoint_callbacks import RESUME_TIMESTAMPS
from forgeline.train import run_training


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


@pytest.mark.slow
def test_killed_worker_resumes_from_forgeline_checkpoint(two_worker_run, tiny_dataset, tmp_path):
    config = two_worker_run.options.to_config(tiny_dataset.manifest_url)
    clean, clean_folder = two_worker_run.result, two_worker_run.folder

    marker = tmp_path / "killed.pid"
    crashed = run_training(config, f"file://{tmp_path}/crashed",
                           f"file://{tmp_path}/crashed.jsonl",
                           callbacks=[KillOneWorkerAfter(16, marker)])
    assert marker.exists()

    records = read_metrics(f"file://{tmp_path}/crashed.jsonl")
    saved = [r["checkpoint_step"] for r in records if "checkpoint_step" in r]
    # resumed, not restarted: step 8 is never saved twice; 16 only again if the kill came
    # before its async save committed (then the run resumed from 8)
    assert saved.count(8) == 1 and saved[-1] == two_worker_run.options.steps, saved
    stats = storage.read_json(f"file://{tmp_path}/crashed/checkpoints/failure_stats.json")
    print(f"\ncheckpoint steps reported: {saved}; failure stats: {stats}")
    assert stats["failures"] == 1 and stats["predicted_failures"] == 0  # health off
    assert stats["failure_records"][0]["predicted"] is False
    assert stats["unpredicted_mtbf_s"] == stats["mtbf_s"]

    a = load_file(clean_folder / "model.safetensors")
    b = load_file(tmp_path / "crashed" / "model.safetensors")
    assert a.keys() == b.keys()
    for name in a:  # deterministic CPU run (no dropout, gloo, fixed seeds and RNG restore)
        assert torch.equal(a[name], b[name]), name
    assert clean.train_loss_final == pytest.approx(crashed.train_loss_final, rel=1e-6)

    # retention kept the newest two; the final one's model consolidates to the export
    store = CheckpointStore(f"file://{clean_folder}/checkpoints")
    assert store.steps() == [16, 24]
    exported = consolidated_fp32(store, 24)
    assert all(torch.equal(exported[k], a[k]) for k in a)


def test_failure_statistics_writes_mtbf(tmp_path):
    url = f"file://{tmp_path}/ck"
    stats = FailureStatistics(url)
    stats.after_report(None, [{"checkpoint_blocked_s": 0.5}], None)
    stats.after_exception(None, {0: RuntimeError("boom")})
    written = storage.read_json(f"{url}/failure_stats.json")
    assert written["failures"] == 1 and written["mtbf_s"] > 0
    assert written["young_daly_interval_s"] == pytest.approx(
        math.sqrt(2 * 0.5 * written["mtbf_s"]), rel=0.05)


def test_failures_after_a_warning_count_as_predicted_and_the_interval_plans_for_the_rest(
        tmp_path):
    url = f"file://{tmp_path}/ck"
    stats = FailureStatistics(url, horizon_steps=20, hazard_threshold=0.5)
    ranks = [{"step": 40, "loss": 3.0, "health_job_hazard": 0.1}, {"step": 40, "loss": 3.0}]
    stats.after_report(None, ranks, None)
    stats.after_report(None, [{"step": 50, "checkpoint_step": 50, "checkpoint_blocked_s": 0.5,
                               "checkpoint_proactive": True, "health_job_hazard": 0.7}], None)
    stats.after_report(None, [{"step": 60, "health_job_hazard": 0.4}], None)
    stats.after_exception(None, {0: RuntimeError("oom")})  # 10 steps after a proactive save
    stats.after_report(None, [{"step": 30, "health_job_hazard": 0.6}], None)  # restarted
    stats.after_report(None, [{"step": 80, "health_job_hazard": 0.2}], None)
    stats.after_exception(None, {1: RuntimeError("killed")})  # 50 steps after the warning
    stats.after_report(None, [{"step": 20, "health_job_hazard": 0.9}], None)
    stats.after_exception(None, {1: RuntimeError("nan")})  # hazard ≥ threshold just before
    written = storage.read_json(f"{url}/failure_stats.json")
    records = written["failure_records"]
    assert [(r["step"], r["predicted"], r["last_hazard"]) for r in records] == [
        (60, True, 0.4), (80, False, 0.2), (20, True, 0.9)]
    assert written["failures"] == 3 and written["predicted_failures"] == 2
    assert written["unpredicted_mtbf_s"] == pytest.approx(3 * written["mtbf_s"], rel=0.05)
    assert written["young_daly_interval_s"] == pytest.approx(
        math.sqrt(2 * 0.5 * written["unpredicted_mtbf_s"]), rel=0.05)
    assert planning_mtbf_s(written) == written["unpredicted_mtbf_s"]
    assert planning_mtbf_s({"mtbf_s": 800.0}) == 800.0  # a file from before the split
    assert planning_mtbf_s({"mtbf_s": 800.0, "unpredicted_mtbf_s": None}) == math.inf


def test_time_to_resume_is_broken_down_from_the_resumed_workers_timestamps(tmp_path):
    url = f"file://{tmp_path}/ck"
    stats = FailureStatistics(url)
    stats.after_report(None, [{"step": 10, "loss": 3.0}, {"step": 10, "loss": 3.0}], None)
    last_report = stats.last_report_unix_s
    stats.after_exception(None, {1: RuntimeError("node lost")})
    detected = stats.records[-1]["time_unix_s"]
    stats.after_report(None, [{"step": 0, "val_loss": 3.1}] * 2, None)  # before the restore
    assert stats.records[-1]["time_to_resume"] is None

    def ranks(*offsets: tuple[float, float, float, float]) -> list[dict[str, float]]:
        return [{"step": 12, "loss": 2.9, **{key: detected + t for key, t in
                                              zip(RESUME_TIMESTAMPS, offset, strict=True)}}
                for offset in offsets]

    # rank 1 is the slowest at every stage but the restore's start: each stage ends with it
    stats.after_report(None, ranks((1.0, 2.0, 3.0, 3.2), (1.5, 1.8, 3.5, 4.0)), None)
    stats.after_report(None, ranks((9.0, 9.0, 9.0, 9.0)), None)  # a later one changes nothing
    resumed = storage.read_json(f"{url}/failure_stats.json")["failure_records"][0][
        "time_to_resume"]
    assert resumed["detection_s"] == pytest.approx(detected - last_report)
    assert resumed["restart_s"] == pytest.approx(1.5)
    assert resumed["setup_s"] == pytest.approx(0.5)  # 2.0 - 1.5
    assert resumed["restore_s"] == pytest.approx(1.5)  # 3.5 - 2.0
    assert resumed["first_step_s"] == pytest.approx(0.5)
    assert resumed["total_s"] == pytest.approx(detected + 4.0 - last_report)


def test_without_health_no_failure_is_predicted(tmp_path):
    url = f"file://{tmp_path}/ck"
    stats = FailureStatistics(url)
    stats.after_report(None, [{"step": 5, "checkpoint_step": 5, "checkpoint_blocked_s": 0.1}],
                       None)
    stats.after_exception(None, {0: RuntimeError("boom")})
    written = storage.read_json(f"{url}/failure_stats.json")
    assert written["failure_records"][0]["predicted"] is False
    assert written["failure_records"][0]["last_hazard"] is None
    assert written["predicted_failures"] == 0
    assert written["unpredicted_mtbf_s"] == written["mtbf_s"]


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


def _pointer(tmp_path, url: str, step: int):
    import json

    import ray.train

    folder = tmp_path / f"pointer-{step}"
    folder.mkdir()
    (folder / "forgeline_checkpoint.json").write_text(
        json.dumps({"url": url, "step": step, "world_size": 1}))
    return ray.train.Checkpoint.from_directory(str(folder))


def test_resume_falls_back_to_the_newest_committed_step(tmp_path, monkeypatch):
    import ray.train

    url = f"file://{tmp_path}/ck"
    with CheckpointStore(url) as store:
        store.save({"x": torch.ones(2)}, 2)
    pointer = _pointer(tmp_path, url, 3)  # step 3 never committed
    monkeypatch.setattr(ray.train, "get_checkpoint", lambda: pointer)
    ckpt = Checkpointer(url, rank=0, world_size=1)
    restored = ckpt.restore()
    assert restored.step == 2 and torch.equal(restored.state["x"], torch.ones(2))
    ckpt.close()


@pytest.mark.parametrize("ray_pointer", [None, 5, 10])
def test_resume_uses_the_newest_committed_step_whatever_ray_registered(
        tmp_path, monkeypatch, caplog, ray_pointer):
    import logging

    import ray.train

    url = f"file://{tmp_path}/ck"
    with CheckpointStore(url) as store:
        for step in (5, 10, 15):
            store.save({"x": torch.full((2,), float(step))}, step)
    with CheckpointStore(url, rank=0, world_size=2) as partial:  # a dead run's half-saved step
        partial.save({"x": torch.zeros(2)}, 20)
    pointer = None if ray_pointer is None else _pointer(tmp_path, url, ray_pointer)
    monkeypatch.setattr(ray.train, "get_checkpoint", lambda: pointer)
    ckpt = Checkpointer(url, rank=0, world_size=1)
    with caplog.at_level(logging.INFO, logger="forgeline.ray.checkpointer"):
        restored = ckpt.restore()
    assert restored.step == 15 and torch.equal(restored.state["x"], torch.full((2,), 15.0))
    said = "Ray registered none" if ray_pointer is None else f"Ray's pointer: step {ray_pointer}"
    assert f"resuming from step 15, the newest committed checkpoint under {url} ({said})" \
        in caplog.text
    monkeypatch.setattr(ray.train, "report", lambda *args, **kwargs: None)
    ckpt.save({"x": torch.ones(2)}, 20)  # the dead run's step 20 was moved aside: saved again
    ckpt.close()
    assert CheckpointStore(url).steps() == [5, 10, 15, 20]
    assert list((tmp_path / "ck" / "abandoned").iterdir())


def _resume_after_kill(config):
    """Attempt 1: step 5 reported to Ray, 10 and 15 committed but never reported (a lagging
    controller), then the worker dies. Attempt 2 writes down the step it resumed from."""
    import json
    import signal as signals

    ckpt = Checkpointer(config["url"], every_steps=5)
    restored = ckpt.restore()
    if restored is None:
        ckpt.save({"x": torch.zeros(1)}, 5)
        for step in (10, 15):
            ckpt.store.save({"x": torch.full((1,), float(step))}, step)
        ckpt.wait()
        os.kill(os.getpid(), signals.SIGKILL)
    Path(config["out"]).write_text(json.dumps(
        {"resumed_step": restored.step, "x": float(restored.state["x"][0])}))
    ckpt.close()


@pytest.mark.slow
def test_a_worker_killed_after_step_15_resumes_at_15_not_at_rays_pointer(ray_cluster, tmp_path):
    import json

    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    url, out = f"file://{tmp_path}/ck", tmp_path / "resumed.json"
    trainer = TorchTrainer(
        _resume_after_kill, train_loop_config={"url": url, "out": str(out)},
        scaling_config=ScalingConfig(num_workers=1),
        run_config=RunConfig(name="resume-after-kill", storage_path=str(tmp_path / "ray"),
                             failure_config=FailureConfig(max_failures=1)),
    )
    trainer.fit()
    assert json.loads(out.read_text()) == {"resumed_step": 15, "x": 15.0}
