"""A real 2-worker Ray Train + DeepSpeed run on CPU (gloo)."""

import json

import pytest
import torch
from safetensors.torch import load_file

from forgeline.errors import ConfigError
from forgeline.ray import read_metrics
from forgeline.train import DecoderLM, ModelConfig, TrainOptions, run_training

pytestmark = pytest.mark.slow


def test_two_workers_zero2_loss_decreases_and_model_is_saved(two_worker_run):
    result, folder = two_worker_run.result, two_worker_run.folder
    assert result.workers == 2 and result.zero_stage == 2
    assert result.train_loss_final < result.train_loss_first
    assert result.val_loss_after < result.val_loss_before
    assert result.val_ppl_before > 200  # an untrained byte model is near uniform (256)

    records = read_metrics(two_worker_run.metrics_url)
    logged = [r for r in records if "loss" in r]
    assert [r["step"] for r in logged] == [10, 20, 24]  # every log_every_steps (10), the last
    assert logged[-1]["loss"] < logged[0]["loss"]
    assert all(r["tokens_per_s"] > 0 for r in logged)

    state = load_file(folder / "model.safetensors")
    saved = json.loads((folder / "model.json").read_text())
    assert saved["kind"] == "preset" and result.architecture == {
        k: v for k, v in saved.items() if k != "format"}
    arch = ModelConfig(**saved["shape"])
    assert arch.seq_len == 64  # taken from the dataset, not re-derived
    model = DecoderLM(arch)
    model.load_state_dict(state)
    assert sum(v.numel() for v in state.values()) == result.num_params
    assert torch.isfinite(model(torch.zeros(1, 64, dtype=torch.long))).all()


def test_memory_output_is_refused_before_ray_starts(tiny_dataset):
    config = TrainOptions().to_config(tiny_dataset.manifest_url)
    with pytest.raises(ConfigError, match="output_url='memory://x'.*shared filesystem"):
        run_training(config, "memory://x")


def test_ray_storage_is_beside_the_output_on_every_fsspec_url(tmp_path):
    import pickle

    import pyarrow.fs

    from forgeline.throttled import throttled_url
    from forgeline.train.run import ray_storage

    assert ray_storage(f"file://{tmp_path}/train") == (f"{tmp_path}/train/ray", None)
    path, fs = ray_storage(throttled_url(f"file://{tmp_path}/train", 0.0))
    assert path == f"{tmp_path}/train/ray" and isinstance(fs, pyarrow.fs.PyFileSystem)
    fs.create_dir(f"{path}/probe")  # Ray writes through it: lands in the wrapped folder
    with fs.open_output_stream(f"{path}/probe/x.json") as out:
        out.write(b"{}")
    assert (tmp_path / "train" / "ray" / "probe" / "x.json").read_bytes() == b"{}"
    # Ray ships the filesystem to its controller and workers
    assert pickle.loads(pickle.dumps(fs)).get_file_info(f"{path}/probe/x.json").size == 2


def test_ray_run_name_follows_the_forgeline_run_id(tiny_dataset):
    from forgeline.train.run import ray_run_name

    config = TrainOptions().to_config(tiny_dataset.manifest_url)
    assert ray_run_name(config) == "forgeline-train"
    named = config.model_copy(update={"run_name": "manual__2026-01-01T00:00:00+00:00"})
    assert ray_run_name(named) == ray_run_name(named.model_copy()) == (
        "forgeline-manual__2026-01-01T00_00_00_00_00")
