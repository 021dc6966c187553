"""Importance-aware sample cache (iCache/SHADE class) between remote storage and training.

Names are imported lazily, so that ``forgeline.cache.config`` (the options model, read by
the stage table and the CLI) imports neither torch nor Ray. The ``throttled://`` protocol
is registered once, by the ``fsspec.specs`` entry point, in every process (Ray workers too).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "CachedBatches": "batches",
    "CacheConfig": "config",
    "available_memory_bytes": "config",
    "CachedDataset": "dataset",
    "ImportanceTable": "importance",
    "importance_file": "importance",
    "ImportanceSampler": "sampler",
    "CacheClient": "server",
    "CacheServer": "server",
    "connect": "server",
    "shutdown": "server",
    "CacheStore": "store",
    "WarmupResult": "warmup",
    "warm_cache": "warmup",
}

__all__ = [
    "CacheClient",
    "CacheConfig",
    "CacheServer",
    "CacheStore",
    "CachedBatches",
    "CachedDataset",
    "ImportanceSampler",
    "ImportanceTable",
    "WarmupResult",
    "available_memory_bytes",
    "connect",
    "importance_file",
    "shutdown",
    "warm_cache",
]

if TYPE_CHECKING:
    from forgeline.cache.batches import CachedBatches
    from forgeline.cache.config import CacheConfig, available_memory_bytes
    from forgeline.cache.dataset import CachedDataset
    from forgeline.cache.importance import ImportanceTable, importance_file
    from forgeline.cache.sampler import ImportanceSampler
    from forgeline.cache.server import CacheClient, CacheServer, connect, shutdown
    from forgeline.cache.store import CacheStore
    from forgeline.cache.warmup import WarmupResult, warm_cache


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"forgeline.cache.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'forgeline.cache' has no attribute {name!r}")
