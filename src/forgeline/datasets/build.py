"""Build a token dataset: corpus → windows → seeded split → Parquet shards → manifest."""

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
from forgeline.datasets.corpus import read_corpus
from forgeline.errors import ConfigError

log = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.json"
TOKENS_COLUMN = "tokens"


def window_starts(n_tokens: int, window_tokens: int) -> np.ndarray:
    """Start offsets of the samples: each holds ``window_tokens + 1`` tokens."""
    count = (n_tokens - 1) // window_tokens
    return np.arange(count, dtype=np.int64) * window_tokens


def split_indices(n_windows: int, val_fraction: float, seed: int) -> dict[str, np.ndarray]:
    """Deterministic split of window indices by ``seed``; each split kept in corpus order."""
    n_val = min(n_windows - 1, max(1, round(n_windows * val_fraction)))
    perm = np.random.default_rng(seed).permutation(n_windows)
    return {"train": np.sort(perm[n_val:]), "validation": np.sort(perm[:n_val])}


def _fingerprint(config: DatasetConfig, corpus_sha256: str) -> str:
    key = f"{corpus_sha256}:{config.window_tokens}:{config.val_fraction}:{config.seed}"
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def _write_shard(url: str, samples: np.ndarray, rows_per_group: int) -> tuple[int, str]:
    width = samples.shape[1]
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


def build_dataset(config: DatasetConfig, output_url: str) -> DatasetResult:
    """Write shards and, last, the manifest under ``output_url``; return the summary."""
    started = time.perf_counter()
    storage.ensure_writable(output_url, "output_url")
    tokens, source = read_corpus(config.source, config.max_source_bytes)
    if len(tokens) < 2 * config.window_tokens + 1:
        raise ConfigError(
            "window_tokens",
            config.window_tokens,
            f"longer than the data allows: the corpus has {len(tokens)} tokens, and a train and "
            f"a validation window need at least {2 * config.window_tokens + 1}",
        )
    starts = window_starts(len(tokens), config.window_tokens)
    width = config.window_tokens + 1
    splits: dict[str, SplitInfo] = {}
    written = 0
    for split, indices in split_indices(len(starts), config.val_fraction, config.seed).items():
        shards = []
        for first in range(0, len(indices), config.samples_per_shard):
            chunk = starts[indices[first : first + config.samples_per_shard]]
            samples = tokens[chunk[:, None] + np.arange(width)]
            rel = f"{split}/part-{len(shards):05d}.parquet"
            size, digest = _write_shard(
                storage.join(output_url, rel), samples, config.rows_per_group
            )
            shards.append(
                ShardInfo(
                    path=rel, first_index=first, samples=len(chunk), bytes=size, sha256=digest
                )
            )
            written += size
        splits[split] = SplitInfo(samples=len(indices), shards=shards)
        log.info("wrote %s: %d samples in %d shards", split, len(indices), len(shards))
    manifest = DatasetManifest(
        fingerprint=_fingerprint(config, source.sha256),
        window_tokens=config.window_tokens,
        sample_tokens=width,
        seed=config.seed,
        val_fraction=config.val_fraction,
        source=source,
        splits=splits,
        created_unix_s=time.time(),
    )
    manifest_url = storage.join(output_url, MANIFEST_NAME)
    storage.write_json_atomic(manifest_url, manifest.model_dump(mode="json"))
    return DatasetResult(
        manifest_url=manifest_url,
        fingerprint=manifest.fingerprint,
        source=config.source,
        source_files=source.files,
        source_bytes=source.bytes,
        window_tokens=config.window_tokens,
        train_samples=splits["train"].samples,
        validation_samples=splits["validation"].samples,
        bytes_written=written,
        wall_s=round(time.perf_counter() - started, 3),
    )
