"""The search plan as ``ds_config.json`` + ``launch.sh``: DeepSpeed initializes from the
exported config (CPU, one process) with the plan's batch layout."""

from __future__ import annotations

import json
import os
import socket
import subprocess

import pytest
import torch.distributed as dist

from forgeline.export import export_plan
from forgeline.search.stage import StrategyOptions, plan_strategy
from forgeline.train import skip_unused_deepspeed_ops
from forgeline.train.model import DecoderLM, ModelConfig


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _forget_deepspeed_groups() -> None:
    """DeepSpeed caches its groups of a process group: never one of another test's."""
    from deepspeed.utils import groups

    for name in dir(groups):
        if name.endswith("_GROUP") and getattr(groups, name) is not None:
            setattr(groups, name, None)


@pytest.fixture
def one_rank(monkeypatch):
    for key, value in {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port()),
                       "LOCAL_RANK": "0",
                       "RANK": "0", "WORLD_SIZE": "1"}.items():
        monkeypatch.setenv(key, value)
    _forget_deepspeed_groups()
    skip_unused_deepspeed_ops()  # as the train loop does
    dist.init_process_group("gloo", rank=0, world_size=1)
    yield
    dist.destroy_process_group()
    _forget_deepspeed_groups()


def test_deepspeed_initializes_from_the_exported_config(one_rank, tmp_path):
    import deepspeed

    options = StrategyOptions(devices_per_node=1, workers=1, model_size="tiny", seq_len=64,
                              global_batch_size=8, zero_stages=[2])
    plan = plan_strategy(options, f"file://{tmp_path}/search").model_dump(mode="json")
    done = export_plan(plan, f"file://{tmp_path}/plan")

    config = json.loads((tmp_path / "plan" / "ds_config.json").read_text())
    assert config == plan["deepspeed_config"]
    model = DecoderLM(ModelConfig.preset("tiny", seq_len=64))
    engine, *_ = deepspeed.initialize(model=model, model_parameters=model.parameters(),
                                      config=str(tmp_path / "plan" / "ds_config.json"),
                                      dist_init_required=False)
    assert engine.zero_optimization_stage() == plan["zero_stage"] == 2
    assert engine.train_micro_batch_size_per_gpu() == plan["micro_batch_size"]
    assert engine.gradient_accumulation_steps() == plan["grad_accum_steps"]
    assert engine.train_batch_size() == 8

    launch = (tmp_path / "plan" / "launch.sh").read_text()
    assert done.launch_url.endswith("launch.sh")
    assert "deepspeed --num_gpus 1 " in launch and "--deepspeed_config ds_config.json" in launch
    subprocess.run(["sh", "-n", str(tmp_path / "plan" / "launch.sh")], check=True,
                   env={**os.environ})
