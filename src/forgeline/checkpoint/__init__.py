"""Chunked, deduplicated, compressed, asynchronous checkpoints on any fsspec URL."""

from forgeline.checkpoint.config import CODECS, CheckpointConfig, RetentionPolicy
from forgeline.checkpoint.export import consolidate_zero_fp32, consolidated_fp32, export_safetensors
from forgeline.checkpoint.format import ChunkRef, Manifest, TensorEntry
from forgeline.checkpoint.retention import GCResult, apply_retention, collect_garbage
from forgeline.checkpoint.state import capture_rng, flatten_state, restore_rng, unflatten_state
from forgeline.checkpoint.store import (
    CheckpointNotFoundError,
    CheckpointStore,
    CheckpointWriteError,
    Restored,
    SaveInfo,
    committed_steps,
)

__all__ = [
    "CODECS",
    "CheckpointConfig",
    "CheckpointNotFoundError",
    "CheckpointStore",
    "CheckpointWriteError",
    "ChunkRef",
    "GCResult",
    "Manifest",
    "Restored",
    "RetentionPolicy",
    "SaveInfo",
    "TensorEntry",
    "apply_retention",
    "capture_rng",
    "collect_garbage",
    "committed_steps",
    "consolidate_zero_fp32",
    "consolidated_fp32",
    "export_safetensors",
    "flatten_state",
    "restore_rng",
    "unflatten_state",
]
