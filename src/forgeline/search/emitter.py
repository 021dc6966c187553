"""Turn a plan into what runs it: a DeepSpeed config + worker count, and for TP/PP plans
Megatron-DeepSpeed-style command-line arguments."""

from __future__ import annotations

import copy
from typing import Any

from pydantic import BaseModel, Field

from forgeline.errors import ConfigError
from forgeline.search.cost_model import BUCKET_ELEMENTS
from forgeline.search.plan import ParallelConfig, Plan, Recompute
from forgeline.search.specs import ModelSpec, TrainingSpec

_OPTIMIZERS = {"adamw": "AdamW", "adam": "Adam", "sgd": "SGD"}


class EmittedConfig(BaseModel):
    """Everything the training stage needs to run a plan as is."""

    deepspeed_config: dict[str, Any] = Field(description="pass to deepspeed.initialize(config=)")
    num_workers: int = Field(description="processes (one per device): t x p x d")
    activation_checkpointing: Recompute = Field(
        description="what the model must checkpoint: nothing, attention core, or every layer"
    )
    megatron_args: list[str] | None = Field(
        None, description="Megatron-DeepSpeed arguments; set when t > 1 or p > 1"
    )


def _offload_block(device: str, training: TrainingSpec) -> dict[str, Any]:
    block: dict[str, Any] = {"device": device, "pin_memory": True}
    if device == "nvme":
        block["nvme_path"] = training.nvme_path
    return block


def deepspeed_config(config: ParallelConfig, model: ModelSpec, training: TrainingSpec,
                     offload_device: str = "cpu") -> dict[str, Any]:
    """DeepSpeed JSON for ``config``; ``offload_device`` is ``cpu`` or ``nvme``."""
    ga = config.gradient_accumulation_steps(training)
    if ga * config.micro_batch_size * config.data_parallel != training.global_batch_size:
        raise ConfigError("global_batch_size", training.global_batch_size,
                          "not divisible by micro_batch_size x data_parallel = "
                          f"{config.micro_batch_size * config.data_parallel}")
    if config.offload != "none" and offload_device not in ("cpu", "nvme"):
        raise ConfigError("offload_device", offload_device, "must be 'cpu' or 'nvme'")
    if offload_device == "nvme" and config.offload != "none" and config.zero_stage != 3:
        raise ConfigError("offload_device", offload_device, "NVMe offload needs zero_stage 3")
    opt_params: dict[str, Any] = {"lr": training.learning_rate,
                                  "weight_decay": training.weight_decay}
    if training.optimizer == "sgd":
        opt_params["momentum"] = 0.9
    else:
        opt_params.update(betas=[0.9, 0.95], eps=1e-8)
    zero: dict[str, Any] = {
        "stage": config.zero_stage,
        "overlap_comm": training.overlap_grad_reduce,
        "contiguous_gradients": True,
        "reduce_bucket_size": BUCKET_ELEMENTS,
    }
    if config.zero_stage in (1, 2):
        zero.update(allgather_bucket_size=BUCKET_ELEMENTS, reduce_scatter=True)
    if config.zero_stage == 3:
        largest = model.largest_module_params // config.tensor_parallel
        zero.update(stage3_prefetch_bucket_size=BUCKET_ELEMENTS,
                    stage3_max_live_parameters=int(largest + BUCKET_ELEMENTS),
                    stage3_param_persistence_threshold=10 * model.hidden)
    if config.offload in ("optimizer", "parameters"):
        zero["offload_optimizer"] = _offload_block(offload_device, training)
    if config.offload == "parameters":
        zero["offload_param"] = _offload_block(offload_device, training)
    cfg: dict[str, Any] = {
        "train_batch_size": training.global_batch_size,
        "train_micro_batch_size_per_gpu": config.micro_batch_size,
        "gradient_accumulation_steps": ga,
        "gradient_clipping": 1.0,
        "steps_per_print": 100,
        "optimizer": {"type": _OPTIMIZERS[training.optimizer], "params": opt_params},
        "bf16": {"enabled": training.precision == "bf16"},
        "fp16": {"enabled": training.precision == "fp16", "loss_scale": 0,
                 "initial_scale_power": 16},
        "zero_optimization": zero,
        "wall_clock_breakdown": False,
    }
    if config.recompute != "none":
        cfg["activation_checkpointing"] = {
            "partition_activations": config.tensor_parallel > 1,
            "contiguous_memory_optimization": False,
            "cpu_checkpointing": False,
            "synchronize_checkpoint_boundary": False,
            "profile": False,
        }
    return cfg


def megatron_args(config: ParallelConfig, model: ModelSpec, training: TrainingSpec,
                  deepspeed_config_path: str = "ds_config.json") -> list[str]:
    """Megatron-DeepSpeed ``pretrain_gpt.py`` arguments for a TP/PP plan."""
    t, p, v = config.tensor_parallel, config.pipeline_parallel, config.virtual_stages
    args = [
        "--tensor-model-parallel-size", str(t),
        "--pipeline-model-parallel-size", str(p),
        "--num-layers", str(model.layers),
        "--hidden-size", str(model.hidden),
        "--ffn-hidden-size", str(model.ffn_hidden),
        "--num-attention-heads", str(model.heads),
        "--seq-length", str(model.seq_len),
        "--max-position-embeddings", str(model.seq_len),
        "--micro-batch-size", str(config.micro_batch_size),
        "--global-batch-size", str(training.global_batch_size),
        "--lr", repr(training.learning_rate),
        "--weight-decay", repr(training.weight_decay),
        "--clip-grad", "1.0",
        "--optimizer", "sgd" if training.optimizer == "sgd" else "adam",
    ]
    if v > 1:
        args += ["--num-layers-per-virtual-pipeline-stage", str(model.layers // (p * v))]
    if p == 1:
        args += ["--no-pipeline-parallel"]
    if config.sequence_parallel:
        args += ["--sequence-parallel"]
    if config.recompute == "full":
        args += ["--recompute-granularity", "full", "--recompute-method", "uniform",
                 "--recompute-num-layers", "1"]
    elif config.recompute == "selective":
        args += ["--recompute-granularity", "selective"]
    if training.precision in ("bf16", "fp16"):
        args += [f"--{training.precision}"]
    if training.flash_attention:
        args += ["--use-flash-attn"]
    args += ["--deepspeed", "--deepspeed_config", deepspeed_config_path,
             "--zero-stage", str(config.zero_stage)]
    if config.offload != "none":
        args += ["--cpu-optimizer"]
    return args


def emit(plan: Plan | ParallelConfig, model: ModelSpec, training: TrainingSpec) -> EmittedConfig:
    """The DeepSpeed config and worker count of ``plan`` (+ Megatron args for TP/PP)."""
    config = plan.config if isinstance(plan, Plan) else plan
    if config.recompute == "op":
        raise ConfigError("recompute", "op", "DeepSpeed and Megatron have no op-level selective "
                          "recomputation (torchtitan's); search with recompute none, "
                          "selective or full")
    device = plan.offload_device if isinstance(plan, Plan) else "cpu"
    device = "cpu" if device == "none" else device
    cfg = deepspeed_config(config, model, training, device)
    needs_megatron = config.tensor_parallel > 1 or config.pipeline_parallel > 1
    return EmittedConfig(
        deepspeed_config=cfg, num_workers=config.devices,
        activation_checkpointing=config.recompute,
        megatron_args=megatron_args(config, model, training) if needs_megatron else None,
    )


def for_cpu(deepspeed_config: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``deepspeed_config`` that runs on DeepSpeed's CPU accelerator.

    That accelerator has no fused Adam kernel, so the optimizer block asks for torch's own
    Adam(W) (``torch_adam``). The one place forgeline makes this change.
    """
    cfg = copy.deepcopy(deepspeed_config)
    optimizer = cfg.get("optimizer")
    if optimizer is None or optimizer.get("type", "").lower() not in ("adam", "adamw"):
        return cfg
    optimizer.setdefault("params", {})["torch_adam"] = True
    return cfg


def validate_deepspeed_config(cfg: dict[str, Any], data_parallel: int) -> None:
    """Check ``cfg`` with DeepSpeed's own parser without starting distributed.

    DeepSpeed reads the world size from torch.distributed, which is not running here, so
    the parse runs on a copy without ``train_batch_size`` and the batch identity
    ``train = micro x accumulation x data_parallel`` is checked here instead; so are the
    offload rules DeepSpeed only enforces at engine start.
    """
    from deepspeed.runtime.config import DeepSpeedConfig

    micro = cfg.get("train_micro_batch_size_per_gpu")
    ga = cfg.get("gradient_accumulation_steps", 1)
    train = cfg.get("train_batch_size")
    if micro is None or train is None:
        raise ConfigError("deepspeed_config", sorted(cfg),
                          "needs train_batch_size and train_micro_batch_size_per_gpu")
    if train != micro * ga * data_parallel:
        raise ConfigError("train_batch_size", train, f"!= micro {micro} x accumulation {ga} "
                          f"x data_parallel {data_parallel}")
    zero = cfg.get("zero_optimization", {})
    stage = zero.get("stage", 0)
    if "offload_param" in zero and stage != 3:
        raise ConfigError("zero_optimization.offload_param", zero["offload_param"],
                          f"needs stage 3, got {stage}")
    if "offload_optimizer" in zero and stage == 0:
        raise ConfigError("zero_optimization.offload_optimizer", zero["offload_optimizer"],
                          "needs stage >= 1")
    for key in ("offload_optimizer", "offload_param"):
        block = zero.get(key)
        if block and block.get("device") == "nvme":
            if stage != 3:
                raise ConfigError(f"zero_optimization.{key}.device", "nvme",
                                  f"NVMe offload needs stage 3 (ZeRO-Infinity), got {stage}")
            if not block.get("nvme_path"):
                raise ConfigError(f"zero_optimization.{key}.nvme_path", None, "needed for nvme")
    probe = copy.deepcopy(cfg)
    probe.pop("train_batch_size")
    try:
        parsed = DeepSpeedConfig(probe)
    except Exception as exc:  # DeepSpeed raises pydantic errors, AssertionError, ValueError
        raise ConfigError("deepspeed_config", type(exc).__name__, str(exc)) from exc
    if parsed.train_micro_batch_size_per_gpu != micro or parsed.zero_optimization_stage != stage:
        raise ConfigError("deepspeed_config", cfg, "DeepSpeed parsed different values")
