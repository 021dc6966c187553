"""Chunked, deduplicated, compressed, asynchronous checkpoints on any fsspec URL.

Names are imported lazily, so that the option models (``forgeline.checkpoint.config``,
``forgeline.checkpoint.training``) load without torch.
"""

from __future__ import annotations

from forgeline._lazy import lazy_exports

_EXPORTS = {
    "CODECS": "config", "CheckpointConfig": "config", "RetentionPolicy": "config",
    "TierConfig": "config",
    "CheckpointCorruptError": "errors", "CheckpointNotFoundError": "errors",
    "CheckpointWriteError": "errors",
    "consolidate_zero_fp32": "export", "consolidated_fp32": "export",
    "export_safetensors": "export",
    "planning_mtbf_s": "interval", "young_daly_interval_s": "interval",
    "ChunkRef": "format", "Manifest": "format", "TensorEntry": "format",
    "CheckpointReader": "reader", "Restored": "reader", "committed_steps": "reader",
    "TierRestore": "resume", "restore_fastest": "resume", "tier_urls": "resume",
    "TieredStore": "tiers",
    "GCResult": "retention", "apply_retention": "retention", "collect_garbage": "retention",
    "capture_rng": "state", "flatten_state": "state", "restore_rng": "state",
    "unflatten_state": "state",
    "CheckpointStore": "writer", "SaveInfo": "writer",
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
