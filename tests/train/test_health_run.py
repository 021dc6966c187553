"""The training stage with health monitoring on: a real 2-worker Ray Train + DeepSpeed run
whose hazard threshold is set below the healthy baseline, so that the proactive path, the
drain reports and the metrics are exercised on every rank."""

import json

import pytest

from forgeline.ray import read_metrics
from forgeline.train import TrainOptions, run_training

pytestmark = pytest.mark.slow


def test_health_on_saves_proactively_and_reports(ray_cluster, tiny_dataset, tmp_path):
    options = TrainOptions(
        model_size="tiny", workers=2, zero_stage=1, steps=24, micro_batch_size=8,
        eval_samples=32, checkpoint={"every_steps": 50, "async_save": False},
        health={"enabled": True, "threshold": 0.01, "drain_threshold": 0.01,
                "drain_after_samples": 2, "cooldown_steps": 8},
    )
    config = options.to_config(tiny_dataset.manifest_url)
    metrics_url = f"file://{tmp_path}/metrics.jsonl"
    result = run_training(config, f"file://{tmp_path}/train", metrics_url)

    assert result.health is not None and result.health["health_proactive_saves"] == 3
    records = read_metrics(metrics_url)
    saves = [r for r in records if "checkpoint_step" in r]
    assert [r["checkpoint_step"] for r in saves] == [1, 9, 17]  # every cooldown, not every 50
    assert {r["health_save_reason"] for r in saves} == {"hazard"}
    assert all(r["checkpoint_proactive"] and r["checkpoint_tier"] == "remote" for r in saves)
    assert result.checkpoint_saves == {"saves": 3, "proactive_saves": 3,
                                       "reported_tiers": {"remote": 3},
                                       "last": {"step": 17, "tier": "remote", "proactive": True}}
    periodic = [r for r in records if "loss" in r]
    assert all(0 < r["health_job_hazard"] <= 1 for r in periodic)
    assert all("memory" in r["health_sources"] for r in periodic)
    for rank in (0, 1):
        report = json.loads((tmp_path / "train" / "health" / f"drain-rank{rank}.json")
                            .read_text())
        assert report["rank"] == rank and report["step"] == 2 and report["host"]
    assert (tmp_path / "train" / "checkpoints").is_dir()
