"""Configuration and manifest of a token dataset."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

BUILTIN_CORPUS = "builtin:stdlib"
"""Every ``.py`` file of the running Python's standard library, read as bytes."""

VOCAB_SIZE = 256
"""Byte-level tokens: one token per byte."""


class DatasetConfig(BaseModel):
    """How to turn a text corpus into fixed-length windows of byte tokens."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    source: str = Field(
        BUILTIN_CORPUS,
        description=f"'{BUILTIN_CORPUS}', or an fsspec URL / glob / folder of text files.",
    )
    window_tokens: int = Field(
        128, ge=1, description="Tokens the model sees per sample; each sample stores one more "
        "(the shifted target), consecutive windows overlapping by that one token."
    )
    val_fraction: float = Field(0.05, gt=0.0, lt=1.0, description="Share of windows held out.")
    seed: int = Field(0, description="Seed of the train/validation split.")
    max_source_bytes: int | None = Field(
        None, gt=0, description="Read at most this many corpus bytes (files in sorted order)."
    )
    samples_per_shard: int = Field(16384, ge=1, description="Samples per Parquet shard.")
    rows_per_group: int = Field(
        256, ge=1, description="Parquet row-group size: the unit of a random read."
    )


class ShardInfo(BaseModel):
    path: str = Field(description="Path relative to the manifest's folder.")
    first_index: int
    samples: int
    bytes: int
    sha256: str


class SplitInfo(BaseModel):
    samples: int
    shards: list[ShardInfo]


class SourceInfo(BaseModel):
    source: str
    files: int
    bytes: int
    sha256: str = Field(description="Hash of the concatenated corpus bytes.")
    python: str | None = None


class DatasetManifest(BaseModel):
    """Published last, atomically: if it exists, every shard it names is complete."""

    format: Literal["forgeline.tokens/1"] = "forgeline.tokens/1"
    fingerprint: str = Field(description="Identity of the data: corpus hash + split settings.")
    window_tokens: int
    sample_tokens: int
    vocab_size: int = VOCAB_SIZE
    seed: int
    val_fraction: float
    source: SourceInfo
    splits: dict[str, SplitInfo]
    created_unix_s: float


class DatasetResult(BaseModel):
    """The small result of the prepare stage (XCom-sized)."""

    manifest_url: str
    fingerprint: str
    source: str
    source_files: int
    source_bytes: int
    window_tokens: int
    train_samples: int
    validation_samples: int
    bytes_written: int
    wall_s: float
