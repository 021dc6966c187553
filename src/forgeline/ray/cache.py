"""Ray Train adapters of the sample cache.

Worker side (inside a user's ``train_func``): ``cached_batches`` gives the rank's batch source
reading through this node's shared cache actor. Controller side: ``CacheStatsCallback`` sums
every worker's ``cache_*`` counters from each ``ray.train.report`` and keeps the totals
(optionally written to ``{root}/runs/{id}/train/cache_stats.json``); ``node_cache_stats``
reads every node's server.
"""

from __future__ import annotations

import time
from typing import Any

from ray.train import UserCallback

from forgeline import storage
from forgeline.cache import CacheClient, CacheConfig, CachedBatches, CachedDataset, connect
from forgeline.cache import ImportanceSampler as ImportanceSampler
from forgeline.cache.server import ACTOR_NAMESPACE, actor_name

ImportanceCacheClient = CacheClient
"""The worker-side client of the node's cache server (batched get/put/feedback)."""


def cache_client(config: CacheConfig) -> CacheClient:
    """This worker's client of its node's cache server (created on first use)."""
    return connect(config)


def cached_batches(config: CacheConfig, manifest_url: str, micro_batch: int,
                   seed: int = 0) -> CachedBatches:
    """This rank's micro-batches through the cache; rank/world from Ray Train's context."""
    import ray.train

    context = ray.train.get_context()
    return CachedBatches.from_config(
        config, manifest_url, micro_batch, seed, context.get_world_rank(),
        context.get_world_size(),
    )


def node_cache_stats(config: CacheConfig) -> dict[str, dict[str, Any]]:
    """Each alive node's cache server statistics, by node id (nodes without one are left
    out; a dead node's server died with it)."""
    import ray

    out = {}
    for node in ray.nodes():
        if not node.get("Alive"):
            continue
        node_id = node["NodeID"]
        try:
            handle = ray.get_actor(actor_name(config, node_id), namespace=ACTOR_NAMESPACE)
            info, stats = ray.get([handle.ping.remote(), handle.stats.remote()], timeout=30)
        except (ValueError, ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError):
            continue
        out[node_id] = {**stats, "server_node_id": info["node_id"]}
    return out


_SUMMED = ("cache_hits", "cache_substitutions", "cache_misses", "cache_remote_bytes",
           "cache_wait_s")


def aggregate_cache_stats(per_worker: list[dict[str, Any]]) -> dict[str, float]:
    """Sum the workers' cache counters; hit rate over all of them; max wait of one worker."""
    totals = {k: float(sum(m.get(k, 0.0) or 0.0 for m in per_worker)) for k in _SUMMED}
    served = totals["cache_hits"] + totals["cache_substitutions"]
    totals["cache_hit_rate"] = served / max(1.0, served + totals["cache_misses"])
    totals["cache_wait_s_max_worker"] = max(
        (float(m.get("cache_wait_s", 0.0) or 0.0) for m in per_worker), default=0.0
    )
    totals["workers"] = float(len(per_worker))
    return totals


class CacheStatsCallback(UserCallback):
    """Controller-side: aggregates cache statistics across workers at every report."""

    def __init__(self, stats_url: str | None = None) -> None:
        self.stats_url = stats_url
        self.history: list[dict[str, float]] = []

    def after_report(
        self, run_context: Any, metrics: list[dict[str, Any]], checkpoint: Any
    ) -> None:
        if not any("cache_hits" in m for m in metrics):
            return
        record = {"step": float(metrics[0].get("step", len(self.history))),
                  "wall_time_unix_s": time.time(), **aggregate_cache_stats(metrics)}
        self.history.append(record)
        if self.stats_url:
            storage.write_json_atomic(self.stats_url, {"latest": record, "history": self.history})

    @property
    def latest(self) -> dict[str, float]:
        return self.history[-1] if self.history else {}


__all__ = [
    "CacheStatsCallback",
    "CachedDataset",
    "ImportanceCacheClient",
    "ImportanceSampler",
    "aggregate_cache_stats",
    "cache_client",
    "cached_batches",
    "node_cache_stats",
]
