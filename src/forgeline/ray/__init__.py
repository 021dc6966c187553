"""Ray Train adapters: worker-side helpers and controller-side ``UserCallback``s."""

from forgeline.ray import _train_v2  # noqa: F401  (first: Train V2 flag and version floor)
from forgeline.ray.cache import (
    CachedDataset,
    CacheStatsCallback,
    ImportanceCacheClient,
    ImportanceSampler,
    aggregate_cache_stats,
    cache_client,
    cached_batches,
    node_cache_stats,
)
from forgeline.ray.checkpoint_callbacks import CheckpointRetention, FailureStatistics
from forgeline.ray.checkpointer import Checkpointer, read_pointer, young_daly_interval_s
from forgeline.ray.metrics import MetricsLogger, read_metrics

__all__ = [
    "CacheStatsCallback",
    "CachedDataset",
    "ImportanceCacheClient",
    "ImportanceSampler",
    "aggregate_cache_stats",
    "cache_client",
    "cached_batches",
    "node_cache_stats",
    "CheckpointRetention",
    "Checkpointer",
    "FailureStatistics",
    "MetricsLogger",
    "read_metrics",
    "read_pointer",
    "young_daly_interval_s",
]
