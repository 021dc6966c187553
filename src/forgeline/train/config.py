"""Configuration and result of the training stage."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from forgeline.cache.config import CacheConfig
from forgeline.checkpoint.training import TrainCheckpointing
from forgeline.errors import ConfigError
from forgeline.train.model import ModelConfig, ModelSize


def default_deepspeed_config(
    zero_stage: int = 2,
    micro_batch_size: int = 16,
    grad_accum_steps: int = 1,
    lr: float = 2e-3,
    weight_decay: float = 0.01,
    warmup_steps: int = 20,
    total_steps: int = 300,
) -> dict[str, Any]:
    """A DeepSpeed config for CPU training: torch AdamW, warmup + cosine LR, ZeRO ``zero_stage``."""
    return {
        "train_micro_batch_size_per_gpu": micro_batch_size,
        "gradient_accumulation_steps": grad_accum_steps,
        "gradient_clipping": 1.0,
        "optimizer": {
            "type": "AdamW",
            "params": {"lr": lr, "weight_decay": weight_decay, "torch_adam": True},
        },
        "scheduler": {
            "type": "WarmupCosineLR",
            "params": {
                "total_num_steps": max(total_steps, warmup_steps + 1),
                "warmup_num_steps": warmup_steps,
                "cos_min_ratio": 0.1,
            },
        },
        "zero_optimization": {"stage": zero_stage},
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }


class TrainConfig(BaseModel):
    """What to train, on what data, with how many Ray Train workers and which DeepSpeed config."""

    model_config = ConfigDict(extra="forbid")

    manifest_url: str = Field(description="The prepare stage's dataset manifest.")
    model: ModelConfig = Field(default_factory=ModelConfig)
    num_workers: int = Field(2, ge=1, description="Ray Train workers (data-parallel ranks).")
    use_gpu: bool = False
    steps: int = Field(300, ge=1, description="Optimizer steps.")
    deepspeed_config: dict[str, Any] = Field(
        default_factory=default_deepspeed_config,
        description="Passed to deepspeed.initialize as is (e.g. from the strategy-search plan).",
    )
    eval_samples: int = Field(256, ge=1, description="Validation windows scored before and after.")
    log_every_steps: int = Field(10, ge=1)
    seed: int = 0
    ray_address: str | None = Field(
        None, description="Ray cluster address; None starts or joins a local one."
    )
    checkpoint: TrainCheckpointing = Field(
        default_factory=TrainCheckpointing, description="forgeline checkpoints and resume."
    )
    max_failures: int = Field(
        0, ge=0, description="Worker-group restarts Ray Train may do (ray.train.FailureConfig)."
    )
    cache: CacheConfig | None = Field(
        None, description="Read training samples through forgeline.cache; None reads directly."
    )

    @field_validator("deepspeed_config")
    @classmethod
    def _check_deepspeed(cls, ds: dict[str, Any]) -> dict[str, Any]:
        micro = ds.get("train_micro_batch_size_per_gpu")
        if not isinstance(micro, int) or micro < 1:
            raise ConfigError(
                "deepspeed_config.train_micro_batch_size_per_gpu", micro, "must be an int ≥ 1"
            )
        accum = ds.get("gradient_accumulation_steps", 1)
        if not isinstance(accum, int) or accum < 1:
            raise ConfigError(
                "deepspeed_config.gradient_accumulation_steps", accum, "must be an int ≥ 1"
            )
        stage = ds.get("zero_optimization", {}).get("stage", 0)
        if stage not in (0, 1, 2, 3):
            raise ConfigError("deepspeed_config.zero_optimization.stage", stage, "must be 0–3")
        if "optimizer" not in ds:
            raise ConfigError("deepspeed_config.optimizer", None, "an optimizer section is needed")
        return ds

    @model_validator(mode="after")
    def _checkpointing_supports_the_zero_stage(self) -> TrainConfig:
        if self.checkpoint.every_steps is not None and self.zero_stage == 3:
            raise ConfigError(
                "checkpoint_every_steps", self.checkpoint.every_steps,
                "forgeline checkpoints support ZeRO stages 0–2; set it to None for ZeRO-3",
            )
        return self

    @property
    def zero_stage(self) -> int:
        return int(self.deepspeed_config.get("zero_optimization", {}).get("stage", 0))

    @property
    def micro_batch_size(self) -> int:
        return int(self.deepspeed_config["train_micro_batch_size_per_gpu"])

    @property
    def grad_accum_steps(self) -> int:
        return int(self.deepspeed_config.get("gradient_accumulation_steps", 1))


class TrainResult(BaseModel):
    """The small result of the training stage (XCom-sized)."""

    model_config = ConfigDict(protected_namespaces=())

    model_url: str
    model_config_url: str
    architecture: ModelConfig
    num_params: int
    workers: int
    zero_stage: int
    steps: int
    micro_batch_size: int
    grad_accum_steps: int
    train_loss_first: float
    train_loss_final: float
    val_loss_before: float
    val_ppl_before: float
    val_loss_after: float
    val_ppl_after: float
    tokens_per_s: float
    wall_s: float


class TrainOptions(BaseModel):
    """The user-facing knobs of the training stage (operator kwargs, CLI flags, DAG Params)."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    manifest_url: str | None = Field(
        None, description="Dataset manifest; default: the run's prepare stage result."
    )
    model_size: ModelSize = Field("small", description="Decoder preset: tiny, small or base.")
    activation_checkpointing: bool = False
    workers: int = Field(2, ge=1, description="Ray Train workers.")
    steps: int = Field(300, ge=1, description="Optimizer steps.")
    zero_stage: int = Field(2, ge=0, le=3, description="DeepSpeed ZeRO stage.")
    micro_batch_size: int = Field(16, ge=1, description="Samples per worker per micro-step.")
    grad_accum_steps: int = Field(1, ge=1)
    lr: float = Field(2e-3, gt=0)
    eval_samples: int = Field(256, ge=1, description="Validation windows scored before/after.")
    seed: int = 0
    deepspeed_config: dict[str, Any] | None = Field(
        None, description="A full DeepSpeed config; overrides zero_stage/micro_batch_size/"
        "grad_accum_steps/lr (e.g. a strategy-search plan's)."
    )
    cache: CacheConfig | None = Field(
        None, description="Importance-aware sample cache settings; None: no cache."
    )

    checkpoint_every_steps: int | None = Field(
        100, ge=1, description="Save a forgeline checkpoint every N steps; None: never."
    )
    checkpoint_keep_last: int = Field(3, ge=1, description="Newest checkpoints kept.")
    checkpoint_codec: str = Field("shuffle-zstd", description="raw, zstd or shuffle-zstd.")
    checkpoint_async: bool = Field(True, description="Persist checkpoints in the background.")
    resume: bool = Field(True, description="Resume from the latest checkpoint after a failure.")
    max_failures: int = Field(0, ge=0, description="Worker failures Ray Train recovers from.")

    def to_config(self, manifest_url: str) -> TrainConfig:
        ds = self.deepspeed_config or default_deepspeed_config(
            zero_stage=self.zero_stage, micro_batch_size=self.micro_batch_size,
            grad_accum_steps=self.grad_accum_steps, lr=self.lr,
            warmup_steps=min(20, self.steps // 10), total_steps=self.steps,
        )
        every_steps = self.checkpoint_every_steps
        if ds.get("zero_optimization", {}).get("stage") == 3 and (
            "checkpoint_every_steps" not in self.model_fields_set
        ):
            every_steps = None  # the default interval gives way to ZeRO-3 (unsupported there)
        return TrainConfig(
            manifest_url=manifest_url,
            model=ModelConfig.preset(
                self.model_size, activation_checkpointing=self.activation_checkpointing
            ),
            num_workers=self.workers, steps=self.steps, deepspeed_config=ds,
            eval_samples=self.eval_samples, seed=self.seed,
            checkpoint=TrainCheckpointing(
                every_steps=every_steps, keep_last=self.checkpoint_keep_last,
                codec=self.checkpoint_codec, async_save=self.checkpoint_async, resume=self.resume,
            ),
            max_failures=self.max_failures, cache=self.cache,
        )
