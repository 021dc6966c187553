"""Importance-aware sample cache (iCache/SHADE class) between remote storage and training.

Names are imported lazily, so that ``forgeline.cache.config`` (the options model, read by
the stage table and the CLI) imports neither torch nor Ray. The ``throttled://`` protocol
is registered once, by the ``fsspec.specs`` entry point, in every process (Ray workers too).
"""

from __future__ import annotations

from forgeline._lazy import lazy_exports

_EXPORTS = {
    "CachedBatches": "batches",
    "CacheConfig": "config", "available_memory_bytes": "config",
    "CachedDataset": "dataset",
    "ImportanceTable": "importance", "importance_file": "importance",
    "ImportanceSampler": "sampler",
    "CacheClient": "server", "CacheServer": "server", "connect": "server", "shutdown": "server",
    "CacheStore": "store",
    "WarmupResult": "warmup", "warm_cache": "warmup",
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
