"""Ray Train adapters: worker-side helpers and controller-side ``UserCallback``s."""

from forgeline.ray import _train_v2  # noqa: F401  (first: Train V2 flag and version floor)
from forgeline.ray import cache as _cache
from forgeline.ray.cache import *  # noqa: F403  (the cache adapters: cache.__all__)
from forgeline.ray.checkpoint_callbacks import CheckpointRetention, FailureStatistics
from forgeline.ray.checkpointer import (
    Checkpointer,
    planning_mtbf_s,
    read_pointer,
    young_daly_interval_s,
)
from forgeline.ray.metrics import MetricsLogger, read_metrics

__all__ = [
    *_cache.__all__,
    "CheckpointRetention",
    "Checkpointer",
    "FailureStatistics",
    "MetricsLogger",
    "planning_mtbf_s",
    "read_metrics",
    "read_pointer",
    "young_daly_interval_s",
]
