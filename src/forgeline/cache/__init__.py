"""Importance-aware sample cache (iCache/SHADE class) between remote storage and training."""

import forgeline.throttled as _throttled  # noqa: F401  registers throttled:// in every worker
from forgeline.cache.batches import CachedBatches
from forgeline.cache.config import CacheConfig, available_memory_bytes
from forgeline.cache.dataset import CachedDataset
from forgeline.cache.importance import ImportanceTable, importance_file
from forgeline.cache.sampler import ImportanceSampler
from forgeline.cache.server import CacheClient, CacheServer, connect, shutdown
from forgeline.cache.store import CacheStore
from forgeline.cache.warmup import WarmupResult, warm_cache

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
