"""Configuration of the checkpoint store: chunking, codec, async staging, retention."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from forgeline import storage
from forgeline.errors import ConfigError, check_choice

CODECS = ("raw", "zstd", "shuffle-zstd")
Codec = Literal["raw", "zstd", "shuffle-zstd"]


class CheckpointConfig(BaseModel):
    """How a :class:`~forgeline.checkpoint.CheckpointStore` writes checkpoints."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    chunk_bytes: int = Field(
        4 << 20, description="Size of the fixed slices each tensor's bytes are cut into."
    )
    codec: str = Field(
        "shuffle-zstd",
        description="Lossless chunk codec: raw, zstd, or shuffle-zstd (byte grouping + zstd).",
    )
    zstd_level: int = Field(1, ge=-7, le=22, description="zstd compression level.")
    delta: bool = Field(
        False,
        description="XOR-delta changed chunks against the parent checkpoint's chunk (keeps one "
        "host copy of the last snapshot in memory, outside max_staging_bytes).",
    )
    keyframe_every: int = Field(
        8, ge=1, description="With delta or lossy: every k-th save is a keyframe (no delta), "
        "so a restore decodes at most k blobs per chunk.",
    )
    lossy: bool = Field(
        False,
        description="ExCP-style lossy mode for float32 tensors under lossy_prefixes (bounds in "
        "forgeline.checkpoint.lossy). Off by default: lossless and bit-exact.",
    )
    lossy_prefixes: tuple[str, ...] = Field(
        ("model/", "optimizer/"), description="Flattened-name prefixes the lossy mode applies to."
    )
    lossy_min_numel: int = Field(
        4096, ge=1, description="Smaller tensors (step counters, norms) stay lossless."
    )
    lossy_weight_error: float = Field(
        1 / 128, gt=0, lt=1,
        description="Weights: |w - ŵ| ≤ this × the max |w| of each 256-value block.",
    )
    lossy_momentum_error: float = Field(
        1 / 32, gt=0, lt=1,
        description="Momentum (names ending exp_avg / momentum_buffer): |m - m̂| ≤ this × block "
        "max |m|.",
    )
    lossy_second_moment_error: float = Field(
        1 / 8, gt=0, lt=1,
        description="Second moment (names ending exp_avg_sq): sqrt(v̂)/sqrt(v) within "
        "(1 + this)^±½, per value (relative).",
    )
    async_save: bool = Field(
        True, description="save() returns once a host snapshot exists; persists in background."
    )
    overlap_snapshot: bool = Field(
        True,
        description="Once the store guards the optimizer (CheckpointStore.protect), save() "
        "returns at once and a background thread copies the state, overlapped with the next "
        "forward/backward; the next optimizer step waits for the copy. Unguarded, save() "
        "copies the state itself.",
    )
    inline_tensor_bytes: int = Field(
        1 << 20, ge=0,
        description="Tensors up to this size are copied inside save() even when overlapped "
        "(e.g. BatchNorm statistics, which change in the forward pass, not in the step).",
    )
    max_staging_bytes: int = Field(
        1 << 30, ge=1,
        description="Host memory for snapshots not yet persisted; save() blocks beyond it.",
    )
    write_threads: int = Field(4, ge=1, description="Parallel chunk encoders/writers.")
    cpu_share: float | None = Field(
        None, gt=0, le=1,
        description="CPU budget of background persisting: at most this fraction of the CPU "
        "time the rest of the process (training) used since the previous save. When the "
        "measured cost of persisting the next save with "
        "`codec` would exceed it (or the previous save is still being persisted), that save's "
        "chunks are stored raw — still hashed, deduplicated and checksummed, no delta. None "
        "(the store's default; the training stage uses 0.05): always `codec`.",
    )
    background_nice: int = Field(
        0, ge=0, le=19,
        description="Niceness added to the store's background threads (Linux: per thread), so "
        "that training threads win the CPU. No effect in a process that already runs at "
        "niceness 19.",
    )
    verify_on_restore: bool = Field(True, description="Check every chunk's hash on restore.")

    @field_validator("chunk_bytes")
    @classmethod
    def _positive_chunk(cls, value: int) -> int:
        if value <= 0:
            raise ConfigError("chunk_bytes", value, "must be a positive number of bytes")
        return value

    @field_validator("codec")
    @classmethod
    def _known_codec(cls, value: str) -> str:
        return check_choice("codec", value, CODECS)

    @model_validator(mode="after")
    def _staging_fits_a_chunk(self) -> CheckpointConfig:
        if self.max_staging_bytes < self.chunk_bytes:
            raise ConfigError("max_staging_bytes", self.max_staging_bytes,
                              f"must hold at least one chunk ({self.chunk_bytes} bytes)")
        return self


class RetentionPolicy(BaseModel):
    """Which committed checkpoints to keep; the rest are deleted, then unreferenced chunks."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    keep_last: int = Field(3, ge=1, description="Always keep the newest k checkpoints.")
    keep_every_steps: int | None = Field(
        None, ge=1, description="Also keep every checkpoint whose step is a multiple of n."
    )
    gc_grace_s: float = Field(
        600.0, ge=0,
        description="Unreferenced chunks younger than this are kept (in-flight writes).",
    )
    gc_lease_s: float = Field(
        300.0, gt=0,
        description="Lifetime of the GC lease file: a collector that died longer ago than "
        "this no longer blocks the next one.",
    )


class TierConfig(BaseModel):
    """Where a :class:`~forgeline.checkpoint.tiers.TieredStore` commits before the remote root.

    A save commits to the bounded host-memory tier first (when ``memory_bytes`` > 0), then is
    copied to the node-local disk tier (when ``local_url`` is set), then to the remote
    artifact root — the durable tier. Each tier keeps its own newest steps.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    memory_bytes: int = Field(
        0, ge=0, description="Host memory for the in-process memory tier (bytes of stored "
        "chunks); its oldest steps are evicted beyond it once they reached every other tier "
        "(the newest is always kept). 0: no memory tier.")
    memory_keep_last: int = Field(1, ge=1, description="Steps the memory tier keeps at most.")
    local_url: str | None = Field(
        None, description="Node-local folder (or file:// URL) of the local disk tier; each "
        "rank uses its own sub-folder. None: no local tier.")
    local_keep_last: int = Field(2, ge=1, description="Steps the local tier keeps.")
    remote_keep_last: int | None = Field(
        None, ge=1, description="Steps the remote tier keeps (collect_garbage after each "
        "copy, default grace period). None: the remote root's own retention decides (e.g. "
        "the CheckpointRetention callback).")
    memory_grace_s: float = Field(
        5.0, ge=0, description="Unreferenced memory-tier chunks younger than this are kept "
        "(a save in flight may have just written them).")

    @field_validator("local_url")
    @classmethod
    def _local_only(cls, value: str | None) -> str | None:
        if value is not None and "://" in value and not value.startswith("file://"):
            raise ConfigError("local_url", value, "the local tier is a node-local folder "
                              "(a path or file:// URL)")
        return value


class TrainCheckpointing(BaseModel):
    """Checkpointing of the training stage (interval, retention, codec, async, resume)."""

    model_config = ConfigDict(extra="forbid", title="Checkpoints")

    every_steps: int | None = Field(
        100, ge=1, description="Save every N optimizer steps; None turns checkpointing off."
    )
    keep_last: int = Field(3, ge=1, description="Committed checkpoints kept (newest).")
    keep_every_steps: int | None = Field(None, ge=1, description="Also keep multiples of n.")
    codec: Codec = Field("shuffle-zstd", description="Lossless chunk codec: raw, zstd or "
                         "shuffle-zstd (byte grouping + zstd).")
    async_save: bool = Field(True, description="Persist in the background.")
    cpu_share: float | None = Field(
        0.05, gt=0, le=1, description="CPU budget of background persisting (fraction of "
        "training's CPU time between saves); over it, a save stores raw chunks. None: always "
        "`codec`.")
    resume: bool = Field(True, description="Resume from the newest committed "
                         "checkpoint on storage (Ray's pointer may lag).")
    resume_optimizer: bool = Field(
        True, description="Restore the optimizer state too (resharded when the worker count "
        "changed). False: weights-only resume — model, step, LR schedule and data position "
        "restored, optimizer moments from zero (the fallback when they cannot be resharded).")
    url: str | None = Field(None, description="Store URL; default {output_url}/checkpoints.")
    local_tier_url: str | None = Field(
        None, description="Node-local folder: commit each save there before the store URL, "
        "and resume from it when it holds the latest step. None: no local tier.")
    memory_tier_bytes: int = Field(0, ge=0, description="Host memory of the in-process "
                                   "memory tier (bytes); 0: none.")

    @field_validator("codec", mode="before")
    @classmethod
    def _known_codec(cls, value: str) -> str:
        return CheckpointConfig._known_codec(value)  # the store's own clear ConfigError

    def store_url(self, output_url: str) -> str | None:
        """The run's checkpoint store: ``url``, default ``{output_url}/checkpoints``; None when
        checkpointing is off."""
        if self.every_steps is None:
            return None
        return self.url or storage.join(output_url, "checkpoints")

    def store_config(self) -> CheckpointConfig:
        return CheckpointConfig(codec=self.codec, async_save=self.async_save,
                                cpu_share=self.cpu_share)

    def tiers(self) -> TierConfig | None:
        if self.local_tier_url is None and not self.memory_tier_bytes:
            return None
        return TierConfig(local_url=self.local_tier_url, memory_bytes=self.memory_tier_bytes)

    def retention(self) -> RetentionPolicy:
        return RetentionPolicy(keep_last=self.keep_last, keep_every_steps=self.keep_every_steps)
