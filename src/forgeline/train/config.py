"""Configuration and result of the training stage."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from forgeline import storage
from forgeline.cache.config import CacheConfig
from forgeline.checkpoint.config import TrainCheckpointing
from forgeline.datasets.config import VOCAB_SIZE
from forgeline.errors import ConfigError
from forgeline.health.config import HealthOptions
from forgeline.options import Options

ModelSize = Literal["tiny", "small", "base"]


class ModelConfig(BaseModel):
    """Shape of the decoder. ``seq_len`` is the context the model sees (the dataset's window)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    n_layers: int = Field(4, ge=1)
    d_model: int = Field(128, ge=8)
    n_heads: int = Field(4, ge=1)
    ffn_mult: int = Field(4, ge=1, description="FFN hidden width = ffn_mult × d_model.")
    seq_len: int = Field(128, ge=1)
    vocab_size: int = Field(VOCAB_SIZE, ge=2)
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    activation_checkpointing: bool = Field(
        False, description="Recompute each block's activations in backward to save memory."
    )

    @model_validator(mode="after")
    def _heads_divide_width(self) -> ModelConfig:
        if self.d_model % self.n_heads:
            raise ValueError(f"n_heads={self.n_heads} must divide d_model={self.d_model}")
        return self

    @classmethod
    def preset(cls, size: ModelSize, **overrides: object) -> ModelConfig:
        shapes = {
            "tiny": dict(n_layers=2, d_model=64, n_heads=4),
            "small": dict(n_layers=4, d_model=128, n_heads=4),
            "base": dict(n_layers=6, d_model=256, n_heads=8),
        }
        return cls(**{**shapes[size], **overrides})


ModelKind = Literal["preset", "hf_config", "pretrained", "factory"]


class ModelOptions(BaseModel):
    """Which model the training stage trains: a built-in ``DecoderLM`` preset, a Hugging Face
    causal LM built from a config (fields or a config.json URL), a pretrained Hugging Face
    folder at an fsspec URL (fine-tuning; safetensors weights), or an importable factory.

    A factory ``package.module:function`` is called as ``function(vocab_size=…, seq_len=…,
    activation_checkpointing=…, **factory_kwargs)`` and returns an ``nn.Module`` whose forward
    maps int64 tokens ``[batch, seq]`` to logits ``[batch, seq, ≥ vocab_size]``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=(),
                              title="Model")

    kind: ModelKind = Field(
        "preset", description="preset (built-in DecoderLM), hf_config (a Hugging Face "
        "causal LM from a config), pretrained (a Hugging Face folder: fine-tune), factory."
    )
    preset: ModelSize = Field("small", description="DecoderLM preset (kind preset): tiny, "
                              "small or base.")
    hf_config: dict[str, Any] | None = Field(
        None, description="transformers config fields, model_type included (kind hf_config), "
        'e.g. {"model_type": "gpt2", "n_layer": 2, "n_embd": 64, "n_head": 4}.'
    )
    hf_config_url: str | None = Field(
        None, description="A config.json at any fsspec URL (kind hf_config; hf_config "
        "fields override it)."
    )
    pretrained_url: str | None = Field(
        None, description="A Hugging Face model folder (config.json + model.safetensors) at "
        "any fsspec URL (kind pretrained)."
    )
    factory: str | None = Field(
        None, description="package.module:function returning the nn.Module (kind factory)."
    )
    factory_kwargs: dict[str, Any] = Field(
        default_factory=dict, description="Keyword arguments of the factory."
    )

    @model_validator(mode="after")
    def _fields_of_the_kind(self) -> ModelOptions:
        needs = {"hf_config": ("hf_config", "hf_config_url"), "pretrained": ("pretrained_url",),
                 "factory": ("factory",)}.get(self.kind, ())
        if needs and not any(getattr(self, name) for name in needs):
            raise ConfigError(f"model.{needs[0]}", None,
                              f"needed for model kind {self.kind!r}")
        if self.kind == "factory" and ":" not in str(self.factory):
            raise ConfigError("model.factory", self.factory, "use 'package.module:function'")
        if self.kind == "hf_config" and self.hf_config is not None and not self.hf_config_url \
                and "model_type" not in self.hf_config:
            raise ConfigError("model.hf_config", self.hf_config,
                              "needs a model_type (e.g. 'gpt2', 'llama')")
        return self

    @property
    def name(self) -> str:
        """A short human name of the model (reports, search plans)."""
        if self.kind == "preset":
            return f"DecoderLM-{self.preset}"
        if self.kind == "factory":
            return str(self.factory)
        if self.kind == "pretrained":
            return f"pretrained:{self.pretrained_url}"
        return f"hf:{(self.hf_config or {}).get('model_type') or self.hf_config_url}"


def warmup_steps_for(total_steps: int) -> int:
    """The LR warmup of a run of ``total_steps``: a tenth of it, 1 to 20 steps (DeepSpeed's
    schedulers refuse 0)."""
    return max(1, min(20, total_steps // 10))


def default_deepspeed_config(
    *,
    zero_stage: int = 2,
    micro_batch_size: int = 16,
    grad_accum_steps: int = 1,
    lr: float = 2e-3,
    weight_decay: float = 0.01,
    warmup_steps: int = 20,
    total_steps: int = 300,
) -> dict[str, Any]:
    """A DeepSpeed config for CPU training: torch AdamW, warmup + cosine LR, ZeRO ``zero_stage``."""
    from forgeline.search.emitter import for_cpu

    return for_cpu({
        "train_micro_batch_size_per_gpu": micro_batch_size,
        "gradient_accumulation_steps": grad_accum_steps,
        "gradient_clipping": 1.0,
        "optimizer": {
            "type": "AdamW",
            "params": {"lr": lr, "weight_decay": weight_decay},
        },
        "scheduler": {
            "type": "WarmupCosineLR",
            "params": {
                "total_num_steps": max(total_steps, warmup_steps + 1),
                "warmup_num_steps": max(1, warmup_steps),
                "cos_min_ratio": 0.1,
            },
        },
        "zero_optimization": {"stage": zero_stage},
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    })


class TrainConfig(BaseModel):
    """What to train, on what data, with how many Ray Train workers and which DeepSpeed config."""

    model_config = ConfigDict(extra="forbid")

    manifest_url: str = Field(description="The prepare stage's dataset manifest.")
    model: ModelOptions = Field(default_factory=ModelOptions)
    shape: ModelConfig | None = Field(
        None, description="The DecoderLM's resolved shape (kind preset): the preset at the "
        "dataset's window and vocabulary, or a given one."
    )
    seq_len: int = Field(128, ge=1, description="The dataset's window (tokens per sample).")
    vocab_size: int = Field(VOCAB_SIZE, ge=2, description="The dataset's vocabulary.")
    activation_checkpointing: bool = Field(
        False, description="Recompute activations in backward to save memory."
    )
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
    run_name: str | None = Field(
        None, description="The forgeline run id: Ray Train's run name, so a restarted driver "
        "or a retried task resumes the run; None: one fixed name per output URL."
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
    health: HealthOptions = Field(
        default_factory=HealthOptions, description="Worker health monitoring and predictive "
        "checkpoints (off by default)."
    )

    @model_validator(mode="before")
    @classmethod
    def _a_decoder_shape_as_model(cls, data: Any) -> Any:
        """``model=ModelConfig(...)`` (a DecoderLM shape) still means that preset shape."""
        if isinstance(data, dict) and isinstance(data.get("model"), ModelConfig | dict):
            model = data["model"]
            shape = model if isinstance(model, ModelConfig) else None
            if isinstance(model, dict) and "d_model" in model:
                shape = ModelConfig.model_validate(model)
            if shape is not None:
                data = {**data, "model": ModelOptions(), "shape": shape,
                        "seq_len": shape.seq_len, "vocab_size": shape.vocab_size,
                        "activation_checkpointing": shape.activation_checkpointing}
        return data

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
                "checkpoint.every_steps", self.checkpoint.every_steps,
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
    architecture: dict[str, Any] = Field(description="The model trained: kind, name and "
                                         "config.")
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
    step_s: float | None = Field(None, description="Measured mean optimizer-step time.")
    peak_rss_bytes: int | None = Field(
        None, description="Peak resident memory of rank 0's worker process (whole process).")
    checkpoint_url: str | None = Field(None, description="The run's checkpoint store.")
    resumed_from_step: int | None = Field(None, description="Checkpoint step resumed from.")
    restore_s: float | None = Field(None, description="Time to restore that checkpoint.")
    resume_tiers: list[dict[str, Any] | None] | None = Field(
        None, description="Per rank: the checkpoint tier it resumed from (memory, local, "
        "remote), the tier's URL, why faster tiers were skipped, its Ray node id; None "
        "without tiers or resume.")
    health: dict[str, Any] | None = Field(
        None, description="Rank 0's health summary (hazard, proactive saves, drained nodes); "
        "None when health monitoring is off.")
    checkpoint_saves: dict[str, Any] | None = Field(
        None, description="Rank 0's checkpoint saves: count, proactive count, the tier each "
        "was committed on when reported (memory, local, remote, pending: counts), the last "
        "save; None without checkpoints.")


class ThrottleOptions(BaseModel):
    """Imitate object storage: read the dataset through forgeline's throttled filesystem."""

    model_config = ConfigDict(extra="forbid", title="Data cache")

    enabled: bool = Field(
        False, description="Read the dataset through the throttled filesystem (per-request "
        "latency + a shared bandwidth cap), as from object storage."
    )
    latency_s: float = Field(0.005, ge=0.0, description="Latency added to every request.")
    bandwidth_bytes_per_s: float = Field(50e6, gt=0, description="Shared bandwidth cap.")


class TrainCache(CacheConfig):
    """The importance-aware sample cache of the training stage, and when to use it."""

    model_config = ConfigDict(extra="forbid", frozen=True, title="Data cache")

    mode: Literal["auto", "on", "off"] = Field(
        "auto", description="Read samples through forgeline.cache: on, off, or auto = when "
        "the dataset is read from remote (non-file://) storage."
    )
    capacity_bytes: int = Field(
        64 * 2**20, description=CacheConfig.model_fields["capacity_bytes"].description)
    substitution_ratio: float = Field(
        0.3, description=CacheConfig.model_fields["substitution_ratio"].description)

    def engine_config(self, root: str | None) -> CacheConfig:
        """The cache engine's config; importance is kept under the artifact root by default
        (with no root and no ``importance_url``, it is not kept)."""
        importance = self.importance_url
        if importance is None and root is not None:
            importance = storage.join(root, "cache", "importance")
        return CacheConfig(**self.model_dump(exclude={"mode", "importance_url"}),
                           importance_url=importance)


_PARALLELISM = {"section": "Parallelism"}


class TrainOptions(Options):
    """The user-facing knobs of the training stage (operator kwargs, CLI flags, DAG Params).

    Singular names (``micro_batch_size``, ``zero_stage``) are the values this run uses; the
    search stage's plural ``zero_stages``/``micro_batch_sizes`` are the choices it may pick.
    """

    model_config = ConfigDict(extra="forbid", protected_namespaces=(), title="Model & training")

    manifest_url: str | None = Field(
        None, description="Dataset manifest; default: the run's prepare stage result."
    )
    model: ModelOptions = Field(default_factory=ModelOptions,
                                description="The model to train (or fine-tune).")
    activation_checkpointing: bool = Field(
        False, description="Recompute activations in backward (less memory, more compute).",
        json_schema_extra=_PARALLELISM,
    )
    workers: int = Field(2, ge=1, description="Ray Train workers (data-parallel ranks).",
                         json_schema_extra=_PARALLELISM)
    steps: int = Field(300, ge=1, description="Optimizer steps.")
    zero_stage: int = Field(2, ge=0, le=3, description="DeepSpeed ZeRO stage (0–3).",
                            json_schema_extra=_PARALLELISM)
    micro_batch_size: int = Field(16, ge=1, description="Samples per worker per micro-step.",
                                  json_schema_extra=_PARALLELISM)
    grad_accum_steps: int = Field(1, ge=1, description="Micro-steps per optimizer step.",
                                  json_schema_extra=_PARALLELISM)
    lr: float = Field(2e-3, gt=0, description="Peak learning rate (warmup + cosine).")
    eval_samples: int = Field(256, ge=1, description="Validation windows scored before/after.")
    seed: int = Field(0, description="Seed of the model initialisation and the sample order.")
    deepspeed_config: dict[str, Any] | None = Field(
        None, description="A full DeepSpeed config; overrides zero_stage, micro_batch_size, "
        "grad_accum_steps and lr (e.g. a strategy-search plan's).",
        json_schema_extra=_PARALLELISM,
    )
    max_failures: int = Field(0, ge=0, description="Worker failures Ray Train recovers from.",
                              json_schema_extra={"section": "Checkpoints"})
    checkpoint: TrainCheckpointing = Field(
        default_factory=TrainCheckpointing, description="forgeline checkpoints and resume."
    )
    cache: TrainCache = Field(
        default_factory=TrainCache, description="The importance-aware sample cache."
    )
    throttle: ThrottleOptions = Field(
        default_factory=ThrottleOptions, description="Imitated object storage for the data."
    )
    health: HealthOptions = Field(
        default_factory=HealthOptions, description="Worker health monitoring and predictive "
        "checkpoints (off by default)."
    )

    @field_validator("cache", mode="before")
    @classmethod
    def _an_engine_config_turns_the_cache_on(cls, value: Any) -> Any:
        if isinstance(value, CacheConfig) and not isinstance(value, TrainCache):
            return {**value.model_dump(), "mode": "on"}
        return value

    @model_validator(mode="before")
    @classmethod
    def _model_size_is_the_preset(cls, data: Any) -> Any:
        """The former ``model_size`` option is ``model.preset``."""
        if isinstance(data, dict) and "model_size" in data:
            data = dict(data)
            size, model = data.pop("model_size"), data.get("model") or {}
            if isinstance(model, BaseModel):
                model = model.model_dump(exclude_unset=True)
            data["model"] = {"preset": size, **model}
        return data

    @property
    def model_size(self) -> ModelSize:
        """The DecoderLM preset (``model.preset``)."""
        return self.model.preset

    def data_access(self, manifest_url: str, root: str | None) -> tuple[str, CacheConfig | None]:
        """The manifest URL the workers read, and the cache config (None: no cache)."""
        if self.throttle.enabled:
            from forgeline.throttled import throttled_url

            manifest_url = throttled_url(manifest_url, self.throttle.latency_s,
                                         self.throttle.bandwidth_bytes_per_s)
        remote = not manifest_url.startswith("file://")
        use = self.cache.mode == "on" or (self.cache.mode == "auto" and remote)
        return manifest_url, self.cache.engine_config(root) if use else None

    def deepspeed(self) -> dict[str, Any]:
        """The DeepSpeed config this run uses: the given one, or one built from the knobs."""
        return self.deepspeed_config or default_deepspeed_config(
            zero_stage=self.zero_stage, micro_batch_size=self.micro_batch_size,
            grad_accum_steps=self.grad_accum_steps, lr=self.lr,
            warmup_steps=warmup_steps_for(self.steps), total_steps=self.steps,
        )

    def to_config(self, manifest_url: str, root: str | None = None) -> TrainConfig:
        """The training engine's config, data access (throttling, cache) resolved; ``root``
        (the artifact root) is where the cache keeps per-sample importance by default."""
        manifest_url, cache = self.data_access(manifest_url, root)
        ds = self.deepspeed()
        checkpoint = self.checkpoint
        if ds.get("zero_optimization", {}).get("stage") == 3 and (
            "every_steps" not in checkpoint.model_fields_set
        ):  # the default interval gives way to ZeRO-3 (unsupported there)
            checkpoint = checkpoint.model_copy(update={"every_steps": None})
        return TrainConfig(
            manifest_url=manifest_url,
            model=self.model, activation_checkpointing=self.activation_checkpointing,
            num_workers=self.workers, steps=self.steps, deepspeed_config=ds,
            eval_samples=self.eval_samples, seed=self.seed, checkpoint=checkpoint,
            max_failures=self.max_failures, cache=cache, health=self.health,
        )
