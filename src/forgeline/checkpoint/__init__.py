"""Chunked, deduplicated, compressed, asynchronous checkpoints on any fsspec URL.

Names are imported lazily, so that the option models (``forgeline.checkpoint.config``,
``forgeline.checkpoint.training``) load without torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "CODECS": "config",
    "CheckpointConfig": "config",
    "RetentionPolicy": "config",
    "consolidate_zero_fp32": "export",
    "consolidated_fp32": "export",
    "export_safetensors": "export",
    "ChunkRef": "format",
    "Manifest": "format",
    "TensorEntry": "format",
    "GCResult": "retention",
    "apply_retention": "retention",
    "collect_garbage": "retention",
    "capture_rng": "state",
    "flatten_state": "state",
    "restore_rng": "state",
    "unflatten_state": "state",
    "CheckpointCorruptError": "errors",
    "CheckpointNotFoundError": "errors",
    "CheckpointWriteError": "errors",
    "CheckpointReader": "reader",
    "Restored": "reader",
    "committed_steps": "reader",
    "CheckpointStore": "writer",
    "SaveInfo": "writer",
}

__all__ = [
    "CODECS",
    "CheckpointConfig",
    "CheckpointCorruptError",
    "CheckpointNotFoundError",
    "CheckpointReader",
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

if TYPE_CHECKING:
    from forgeline.checkpoint.config import CODECS, CheckpointConfig, RetentionPolicy
    from forgeline.checkpoint.errors import (
        CheckpointCorruptError,
        CheckpointNotFoundError,
        CheckpointWriteError,
    )
    from forgeline.checkpoint.export import (
        consolidate_zero_fp32,
        consolidated_fp32,
        export_safetensors,
    )
    from forgeline.checkpoint.format import ChunkRef, Manifest, TensorEntry
    from forgeline.checkpoint.reader import CheckpointReader, Restored, committed_steps
    from forgeline.checkpoint.retention import GCResult, apply_retention, collect_garbage
    from forgeline.checkpoint.state import (
        capture_rng,
        flatten_state,
        restore_rng,
        unflatten_state,
    )
    from forgeline.checkpoint.writer import CheckpointStore, SaveInfo


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"forgeline.checkpoint.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'forgeline.checkpoint' has no attribute {name!r}")
