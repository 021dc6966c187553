"""Pipeline stage: warm the cache with the previous run's most important samples."""

from __future__ import annotations

import time

from pydantic import BaseModel

from forgeline.cache.config import CacheConfig
from forgeline.cache.dataset import CachedDataset
from forgeline.cache.server import CacheClient, connect
from forgeline.errors import ConfigError


class WarmupResult(BaseModel):
    """The small result of the warm-up stage (XCom-sized)."""

    namespace: str
    warm_importance: bool
    samples: int
    bytes: int
    wall_s: float


def warm_cache(config: CacheConfig, manifest_url: str, split: str = "train",
               client: CacheClient | None = None) -> WarmupResult:
    """Load the persisted importance of this dataset and read its highest-importance samples
    (as many as the H part holds) into the cache server, before training asks for them."""
    if not config.importance_url:
        raise ConfigError("importance_url", None, "warm-up needs the saved importance's folder")
    started = time.perf_counter()
    client = client or connect(config)
    dataset = CachedDataset(
        manifest_url, client, split, prefetch_threads=0, mode=config.importance,
        ema_decay=config.ema_decay, rank_normalize=config.rank_normalize,
        low_quantile=config.low_importance_quantile, importance_url=config.importance_url,
    )
    try:
        budget = int(config.capacity_bytes * (config.h_fraction if config.policy == "importance"
                                              else 1.0))
        # the cache holds a sample's token bytes (uint16 tokens for a vocabulary over 256)
        k = budget // (dataset.sample_tokens * dataset.source.token_dtype.itemsize)
        top = client.top(dataset.namespace, k) if dataset.warm else []
        for first in range(0, len(top), 64):
            dataset.get_many(top[first : first + 64])  # misses are read and offered to the cache
    finally:
        dataset.close()
    return WarmupResult(
        namespace=dataset.namespace, warm_importance=dataset.warm, samples=len(top),
        bytes=int(dataset.counters["remote_bytes"]),
        wall_s=round(time.perf_counter() - started, 3),
    )
