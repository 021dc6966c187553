"""Emitted DeepSpeed configs are accepted by DeepSpeed's own parser; Megatron args match."""

from __future__ import annotations

from unittest import mock

import pytest

from forgeline.errors import ConfigError
from forgeline.search import (
    ModelSpec,
    ParallelConfig,
    SearchSpace,
    TrainingSpec,
    emit,
    search,
    this_machine_cpu,
    validate_deepspeed_config,
)

SMALL = ModelSpec(layers=4, hidden=128, heads=4, seq_len=64, vocab=512)
TRAIN = TrainingSpec(global_batch_size=16)


def _deepspeed_parse(cfg: dict, world_size: int):
    """DeepSpeed's full parse as it runs inside ``world_size`` ranks (rank and world
    size patched; nothing distributed starts)."""
    import deepspeed.runtime.config as dsc

    with mock.patch.object(dsc.dist, "get_rank", return_value=0), \
            mock.patch.object(dsc.dist, "get_world_size", return_value=world_size):
        return dsc.DeepSpeedConfig(cfg)


@pytest.mark.parametrize(
    "config",
    [
        ParallelConfig(data_parallel=2, micro_batch_size=4),
        ParallelConfig(data_parallel=4, micro_batch_size=1, zero_stage=1, offload="optimizer"),
        ParallelConfig(data_parallel=2, micro_batch_size=2, zero_stage=2, recompute="full"),
        ParallelConfig(data_parallel=8, micro_batch_size=2, zero_stage=3, offload="parameters",
                       recompute="selective"),
    ],
)
def test_data_parallel_plans_parse_in_deepspeed(config):
    out = emit(config, SMALL, TRAIN)
    assert out.num_workers == config.data_parallel and out.megatron_args is None
    assert out.activation_checkpointing == config.recompute
    cfg = out.deepspeed_config
    validate_deepspeed_config(cfg, config.data_parallel)
    parsed = _deepspeed_parse(cfg, config.data_parallel)
    assert parsed.train_batch_size == 16
    assert parsed.train_micro_batch_size_per_gpu == config.micro_batch_size
    assert parsed.gradient_accumulation_steps == config.gradient_accumulation_steps(TRAIN)
    assert parsed.zero_optimization_stage == config.zero_stage
    offload_opt = parsed.zero_config.offload_optimizer
    assert (offload_opt is not None) == (config.offload != "none")
    assert (parsed.zero_config.offload_param is not None) == (config.offload == "parameters")
    assert parsed.bfloat16_config.enabled and not parsed.float16_config.enabled
    assert ("activation_checkpointing" in cfg) == (config.recompute != "none")


def test_searched_plan_emits_runnable_config():
    cpu = this_machine_cpu(devices=2)
    model = SMALL.model_copy(update={"param_dtype": "fp32", "grad_dtype": "fp32"})
    train = TrainingSpec(global_batch_size=8, precision="fp32")
    space = SearchSpace(tensor_parallel=[1], pipeline_parallel=[1])
    plan = search(model, cpu, train, top_k=1, space=space).best
    out = emit(plan, model, train)
    validate_deepspeed_config(out.deepspeed_config, plan.config.data_parallel)
    parsed = _deepspeed_parse(out.deepspeed_config, out.num_workers)
    assert parsed.train_batch_size == 8 and out.num_workers == plan.devices_used
    assert not parsed.bfloat16_config.enabled and not parsed.float16_config.enabled


def test_tensor_and_pipeline_plans_get_megatron_args():
    config = ParallelConfig(tensor_parallel=2, pipeline_parallel=2, virtual_stages=2,
                            data_parallel=2, micro_batch_size=1, zero_stage=1,
                            recompute="full", sequence_parallel=True)
    out = emit(config, SMALL, TRAIN)
    args = out.megatron_args
    assert out.num_workers == 8
    pairs = dict(zip(args, args[1:], strict=False))
    assert pairs["--tensor-model-parallel-size"] == "2"
    assert pairs["--pipeline-model-parallel-size"] == "2"
    assert pairs["--num-layers-per-virtual-pipeline-stage"] == "1"
    assert pairs["--micro-batch-size"] == "1" and pairs["--global-batch-size"] == "16"
    assert pairs["--recompute-granularity"] == "full" and pairs["--zero-stage"] == "1"
    assert "--sequence-parallel" in args and "--bf16" in args and "--deepspeed" in args
    validate_deepspeed_config(out.deepspeed_config, config.data_parallel)


def test_nvme_offload_gets_a_path():
    config = ParallelConfig(data_parallel=2, micro_batch_size=2, zero_stage=3,
                            offload="parameters")
    from forgeline.search.emitter import deepspeed_config

    cfg = deepspeed_config(config, SMALL, TRAIN, offload_device="nvme")
    zero = cfg["zero_optimization"]
    assert zero["offload_param"]["nvme_path"] == TRAIN.nvme_path
    validate_deepspeed_config(cfg, 2)
    del zero["offload_param"]["nvme_path"]
    with pytest.raises(ConfigError, match="nvme_path"):
        validate_deepspeed_config(cfg, 2)
    zero1 = ParallelConfig(data_parallel=2, micro_batch_size=2, zero_stage=1, offload="optimizer")
    with pytest.raises(ConfigError, match="zero_stage 3"):
        deepspeed_config(zero1, SMALL, TRAIN, offload_device="nvme")
    stage1 = {**cfg, "zero_optimization": {"stage": 1, "offload_optimizer": {
        "device": "nvme", "nvme_path": "/x"}}}
    with pytest.raises(ConfigError, match="stage 3"):
        validate_deepspeed_config(stage1, 2)


def test_invalid_configs_are_rejected():
    good = emit(ParallelConfig(data_parallel=2, micro_batch_size=4), SMALL, TRAIN)
    with pytest.raises(ConfigError, match="train_batch_size=16"):
        validate_deepspeed_config(good.deepspeed_config, 4)
    bad = {**good.deepspeed_config,
           "zero_optimization": {"stage": 1, "offload_param": {"device": "cpu"}}}
    with pytest.raises(ConfigError, match="needs stage 3"):
        validate_deepspeed_config(bad, 2)
    worse = {**good.deepspeed_config, "zero_optimization": {"stage": 7}}
    with pytest.raises(ConfigError, match="deepspeed_config"):
        validate_deepspeed_config(worse, 2)
    with pytest.raises(ConfigError, match="global_batch_size"):
        emit(ParallelConfig(data_parallel=3, micro_batch_size=1), SMALL, TRAIN)


def test_for_cpu_sets_torch_adam_on_a_copy():
    from forgeline.search import for_cpu

    cfg = emit(ParallelConfig(data_parallel=2, micro_batch_size=2), SMALL, TRAIN).deepspeed_config
    cpu = for_cpu(cfg)
    assert cpu["optimizer"]["params"]["torch_adam"] is True
    assert "torch_adam" not in cfg["optimizer"]["params"]  # the input is left alone
    sgd = {"optimizer": {"type": "SGD", "params": {"lr": 0.1}}}
    assert for_cpu(sgd) == sgd  # only Adam(W) has a fused kernel to avoid


def test_op_recompute_has_no_deepspeed_config():
    with pytest.raises(ConfigError, match="recompute='op'.*torchtitan"):
        emit(ParallelConfig(data_parallel=2, micro_batch_size=4, recompute="op"), SMALL, TRAIN)
