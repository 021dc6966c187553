"""Build a token dataset: documents → tokens (+ end-of-document) → windows → seeded split →
Parquet shards, the tokenizer beside them, and last the manifest."""

from __future__ import annotations

import hashlib
import logging
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from forgeline import storage
from forgeline.datasets.config import (
    DatasetConfig,
    DatasetManifest,
    DatasetResult,
    ShardInfo,
    SplitInfo,
)
from forgeline.datasets.corpus import Corpus, read_documents
from forgeline.datasets.tokenizer import TOKENIZER_FILE, TextTokenizer, make_tokenizer
from forgeline.errors import ConfigError

log = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.json"
TOKENS_COLUMN = "tokens"


def window_starts(n_tokens: int, window_tokens: int) -> np.ndarray:
    """Start offsets of the samples: each holds ``window_tokens + 1`` tokens."""
    count = max(0, (n_tokens - 1) // window_tokens)
    return np.arange(count, dtype=np.int64) * window_tokens


def split_indices(n_windows: int, val_fraction: float, seed: int) -> dict[str, np.ndarray]:
    """Deterministic split of window indices by ``seed``; each split kept in corpus order."""
    n_val = min(n_windows - 1, max(1, round(n_windows * val_fraction)))
    perm = np.random.default_rng(seed).permutation(n_windows)
    return {"train": np.sort(perm[n_val:]), "validation": np.sort(perm[:n_val])}


def split_documents(lengths: list[int], val_fraction: float, seed: int) -> dict[str, np.ndarray]:
    """Whole documents for validation (seeded order) until they hold ``val_fraction`` of the
    tokens; at least one document each side; each split kept in corpus order."""
    if len(lengths) < 2:
        raise ConfigError("split_by", "document", f"needs at least 2 documents, the corpus "
                          f"has {len(lengths)}")
    perm = np.random.default_rng(seed).permutation(len(lengths))
    target, taken = val_fraction * sum(lengths), 0
    n_val = 0
    while n_val < len(perm) - 1 and (n_val == 0 or taken < target):
        taken += lengths[perm[n_val]]
        n_val += 1
    return {"train": np.sort(perm[n_val:]), "validation": np.sort(perm[:n_val])}


def _fingerprint(config: DatasetConfig, corpus_sha256: str, tokenizer: TextTokenizer) -> str:
    key = f"{corpus_sha256}:{config.window_tokens}:{config.val_fraction}:{config.seed}"
    if tokenizer.kind != "bytes" or config.split_by != "window" or config.format != "text":
        key += f":{tokenizer.fingerprint}:{config.split_by}:{config.format}:{config.text_column}"
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def _write_shard(url: str, samples: np.ndarray, rows_per_group: int) -> tuple[int, str]:
    width = samples.shape[1] * samples.dtype.itemsize
    column = pa.FixedSizeBinaryArray.from_buffers(
        pa.binary(width), len(samples), [None, pa.py_buffer(samples.tobytes())]
    )
    sink = pa.BufferOutputStream()
    pq.write_table(
        pa.table({TOKENS_COLUMN: column}), sink, row_group_size=rows_per_group, compression="zstd"
    )
    data = sink.getvalue().to_pybytes()
    storage.write_bytes_atomic(url, data)
    return len(data), hashlib.sha256(data).hexdigest()


def _split_windows(config: DatasetConfig, corpus: Corpus,
                   tokenizer: TextTokenizer) -> dict[str, np.ndarray]:
    """Each split's samples ``[n, window_tokens + 1]``."""
    width = config.window_tokens + 1
    if tokenizer.kind == "bytes" and config.split_by == "window":  # the corpus bytes as is
        streams = {"all": np.frombuffer(corpus.joined(), dtype=np.uint8)}
    else:
        docs = tokenizer.encode(corpus.documents)
        if config.split_by == "window":
            streams = {"all": np.concatenate(docs)}
        else:
            parts = split_documents([len(d) for d in docs], config.val_fraction, config.seed)
            streams = {s: np.concatenate([docs[i] for i in idx]) for s, idx in parts.items()}
    total = sum(len(s) for s in streams.values())
    for name, tokens in streams.items():
        if len(window_starts(len(tokens), config.window_tokens)) < (2 if name == "all" else 1):
            raise ConfigError(
                "window_tokens", config.window_tokens,
                f"longer than the data allows: the corpus has {total} tokens"
                + ("" if name == "all" else f", its {name} documents {len(tokens)}")
                + f", and a train and a validation window need at least {2 * width - 1}",
            )
    if "all" not in streams:
        return {s: t[window_starts(len(t), config.window_tokens)[:, None] + np.arange(width)]
                for s, t in streams.items()}
    tokens = streams["all"]
    starts = window_starts(len(tokens), config.window_tokens)
    return {split: tokens[starts[idx][:, None] + np.arange(width)]
            for split, idx in split_indices(len(starts), config.val_fraction,
                                            config.seed).items()}


def build_dataset(config: DatasetConfig, output_url: str) -> DatasetResult:
    """Write shards, the tokenizer and, last, the manifest under ``output_url``."""
    started = time.perf_counter()
    storage.ensure_writable(output_url, "output_url")
    if config.tokenizer.kind == "pretrained":  # a bad tokenizer URL fails before reading
        make_tokenizer(config.tokenizer, [])
    corpus = read_documents(config)
    tokenizer = make_tokenizer(config.tokenizer, corpus.documents)
    samples_of = _split_windows(config, corpus, tokenizer)
    splits: dict[str, SplitInfo] = {}
    written = 0
    for split in ("train", "validation"):
        samples_all = samples_of[split].astype(tokenizer.dtype, copy=False)
        shards = []
        for first in range(0, len(samples_all), config.samples_per_shard):
            samples = samples_all[first : first + config.samples_per_shard]
            rel = f"{split}/part-{len(shards):05d}.parquet"
            size, digest = _write_shard(
                storage.join(output_url, rel), samples, config.rows_per_group
            )
            shards.append(ShardInfo(path=rel, first_index=first, samples=len(samples),
                                    bytes=size, sha256=digest))
            written += size
        splits[split] = SplitInfo(samples=len(samples_all), shards=shards)
        log.info("wrote %s: %d samples in %d shards", split, len(samples_all), len(shards))
    tokenizer_json = tokenizer.to_json()
    if tokenizer_json is not None:
        storage.write_bytes_atomic(storage.join(output_url, TOKENIZER_FILE),
                                   tokenizer_json.encode())
    manifest = DatasetManifest(
        fingerprint=_fingerprint(config, corpus.info.sha256, tokenizer),
        window_tokens=config.window_tokens,
        sample_tokens=config.window_tokens + 1,
        vocab_size=tokenizer.vocab_size,
        token_dtype=tokenizer.dtype,  # type: ignore[arg-type]
        tokenizer=tokenizer.info(TOKENIZER_FILE if tokenizer_json is not None else None),
        split_by=config.split_by,
        seed=config.seed,
        val_fraction=config.val_fraction,
        source=corpus.info,
        splits=splits,
        created_unix_s=time.time(),
    )
    manifest_url = storage.join(output_url, MANIFEST_NAME)
    storage.write_json_atomic(manifest_url, manifest.model_dump(mode="json"))
    return DatasetResult(
        manifest_url=manifest_url,
        fingerprint=manifest.fingerprint,
        source=config.source,
        source_files=corpus.info.files,
        source_bytes=corpus.info.bytes,
        window_tokens=config.window_tokens,
        train_samples=splits["train"].samples,
        validation_samples=splits["validation"].samples,
        bytes_written=written,
        wall_s=round(time.perf_counter() - started, 3),
        vocab_size=tokenizer.vocab_size,
        tokenizer=tokenizer.kind,
        tokenizer_url=storage.join(output_url, TOKENIZER_FILE) if tokenizer_json else None,
        documents=corpus.info.documents,
    )
