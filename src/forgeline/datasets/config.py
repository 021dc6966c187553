"""Configuration and manifest of a token dataset."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from forgeline.errors import ConfigError
from forgeline.options import Options

BUILTIN_CORPUS = "builtin:stdlib"
"""Every ``.py`` file of the running Python's standard library, read as bytes."""

VOCAB_SIZE = 256
"""Byte-level tokens: one token per byte."""

BYTE_EOD_TOKEN_ID = 10
"""Byte-level documents end with a newline byte (the vocabulary has no room for more)."""

EOD_TOKEN = "<|endoftext|>"
"""The end-of-document token of a tokenizer trained in the prepare stage."""

InputFormat = Literal["text", "jsonl", "parquet", "hf_dataset"]
TokenizerKind = Literal["bytes", "bpe", "unigram", "pretrained"]


class TokenizerOptions(BaseModel):
    """How text becomes tokens: bytes (default), a BPE/Unigram tokenizer trained on the
    corpus, or a pretrained Hugging Face ``tokenizer.json``."""

    model_config = ConfigDict(extra="forbid", frozen=True, title="Tokenizer")

    kind: TokenizerKind = Field(
        "bytes", description="bytes (one token per byte), bpe or unigram (trained on the "
        "corpus here), or pretrained (a tokenizer.json at tokenizer_url)."
    )
    vocab_size: int = Field(2048, ge=64, le=2**31 - 1,
                            description="Vocabulary of a tokenizer trained here (bpe, unigram).")
    url: str | None = Field(
        None, description="A tokenizer.json, or a folder holding one (a pretrained model's), "
        "at any fsspec URL (kind pretrained)."
    )
    eod_token: str | None = Field(
        None, description=f"End-of-document token of a pretrained tokenizer; default: the "
        f"first it has of {EOD_TOKEN}, </s>, <eos>, [SEP]."
    )

    @model_validator(mode="after")
    def _url_for_pretrained(self) -> TokenizerOptions:
        if self.kind == "pretrained" and not self.url:
            raise ConfigError("tokenizer.url", self.url, "needed for tokenizer kind 'pretrained'")
        if self.kind != "pretrained" and self.url:
            raise ConfigError("tokenizer.kind", self.kind,
                              "a tokenizer url is given: set kind 'pretrained'")
        return self


class DatasetConfig(Options):
    """How to turn a corpus of documents into fixed-length windows of tokens."""

    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=(), title="Data")

    source: str = Field(
        BUILTIN_CORPUS,
        description=f"'{BUILTIN_CORPUS}', or an fsspec URL / glob / folder of files in "
        "`format`, or a saved Hugging Face dataset folder.",
    )
    format: InputFormat = Field(
        "text", description="text (one document per file), jsonl or parquet (one document "
        "per row's text_column), hf_dataset (a datasets.save_to_disk folder)."
    )
    text_column: str = Field("text", description="The text column of jsonl, parquet and "
                             "hf_dataset rows.")
    tokenizer: TokenizerOptions = Field(default_factory=TokenizerOptions,
                                        description="How text becomes tokens.")
    window_tokens: int = Field(
        128, ge=1, description="Tokens the model sees per sample; each sample stores one more "
        "(the shifted target), consecutive windows overlapping by that one token."
    )
    val_fraction: float = Field(0.05, gt=0.0, lt=1.0, description="Share held out.")
    split_by: Literal["window", "document"] = Field(
        "window", description="Hold out windows (window) or whole documents (document: no "
        "document has windows on both sides)."
    )
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
    format: InputFormat = "text"
    documents: int | None = None


class TokenizerInfo(BaseModel):
    """The dataset's tokenizer as stored beside the manifest."""

    kind: TokenizerKind = "bytes"
    path: str | None = Field(None, description="tokenizer.json, relative to the manifest.")
    fingerprint: str = Field("bytes", description="SHA-256 of the tokenizer's JSON (or "
                             "'bytes').")
    vocab_size: int = VOCAB_SIZE
    eod_token_id: int = BYTE_EOD_TOKEN_ID


class DatasetManifest(BaseModel):
    """Published last, atomically: if it exists, every shard it names is complete."""

    format: Literal["forgeline.tokens/1"] = "forgeline.tokens/1"
    fingerprint: str = Field(description="Identity of the data: corpus hash, tokenizer and "
                             "split settings.")
    window_tokens: int
    sample_tokens: int
    vocab_size: int = VOCAB_SIZE
    token_dtype: Literal["uint8", "uint16", "uint32"] = Field(
        "uint8", description="Little-endian unsigned integer type of the stored tokens.")
    tokenizer: TokenizerInfo = Field(default_factory=TokenizerInfo)
    split_by: Literal["window", "document"] = "window"
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
    vocab_size: int = VOCAB_SIZE
    tokenizer: str = Field("bytes", description="Tokenizer kind.")
    tokenizer_url: str | None = Field(None, description="The tokenizer.json saved beside the "
                                      "manifest (None for bytes).")
    documents: int | None = None
