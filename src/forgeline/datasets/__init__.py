"""Token datasets: build Parquet shards + manifest from a corpus; read samples anywhere."""

from forgeline.datasets.build import MANIFEST_NAME, build_dataset, split_indices, window_starts
from forgeline.datasets.config import (
    BUILTIN_CORPUS,
    VOCAB_SIZE,
    DatasetConfig,
    DatasetManifest,
    DatasetResult,
)
from forgeline.datasets.corpus import read_corpus
from forgeline.datasets.reader import TokenDataset, load_manifest

__all__ = [
    "BUILTIN_CORPUS",
    "MANIFEST_NAME",
    "VOCAB_SIZE",
    "DatasetConfig",
    "DatasetManifest",
    "DatasetResult",
    "TokenDataset",
    "build_dataset",
    "load_manifest",
    "read_corpus",
    "split_indices",
    "window_starts",
]
