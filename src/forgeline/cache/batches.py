"""``CachedBatches``: the training loop's ``BatchSource`` reading through the sample cache."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import torch

from forgeline.cache.config import CacheConfig
from forgeline.cache.dataset import CachedDataset
from forgeline.cache.sampler import ImportanceSampler
from forgeline.cache.server import CacheClient, connect
from forgeline.errors import ConfigError

log = logging.getLogger(__name__)


class CachedBatches:
    """Micro-batches from an ``ImportanceSampler`` over a ``CachedDataset``; per-sample
    losses go back to the cache's importance; ``stats()`` carries the cache counters."""

    def __init__(self, dataset: CachedDataset, sampler: ImportanceSampler, micro_batch: int,
                 importance_url: str | None = None, persist_every_batches: int = 50) -> None:
        if len(sampler) < micro_batch:
            raise ConfigError("micro_batch_size", micro_batch,
                              f"exceeds this rank's {len(sampler)} training samples")
        self.dataset, self.sampler, self.micro_batch = dataset, sampler, micro_batch
        self.importance_url, self.persist_every = importance_url, persist_every_batches
        self._feedbacks = 0

    @classmethod
    def from_config(cls, config: CacheConfig, manifest_url: str, micro_batch: int, seed: int,
                    rank: int = 0, world: int = 1, client: CacheClient | None = None,
                    ) -> CachedBatches:
        client = client or connect(config)
        dataset = CachedDataset(
            manifest_url, client, "train", config.prefetch_threads, config.importance,
            config.ema_decay, config.rank_normalize, config.low_importance_quantile,
            config.importance_url,
        )
        sampler = ImportanceSampler(dataset, seed, rank, world, config.substitution_ratio,
                                    window=config.lookahead_batches * micro_batch, epochs=None,
                                    multiple=micro_batch)
        return cls(dataset, sampler, micro_batch, config.importance_url,
                   config.persist_every_batches)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        per_epoch = (len(self.sampler) // self.micro_batch) * self.micro_batch
        batch: list[int] = []
        for index in self.sampler:
            if self.sampler.position > per_epoch:
                continue  # the epoch's last partial batch is dropped
            batch.append(index)
            if len(batch) == self.micro_batch:
                tokens = self.dataset.get_many(batch)
                indices = torch.tensor(batch, dtype=torch.int64)
                batch = []
                yield indices, torch.from_numpy(tokens).long()

    def feedback(self, indices: torch.Tensor, losses: torch.Tensor) -> None:
        ds = self.dataset
        ds.client.feedback(ds.namespace, indices.tolist(), losses.float().cpu().tolist())
        self._feedbacks += 1
        if self.importance_url and self.sampler.rank == 0 and (
            self._feedbacks % self.persist_every == 0
        ):
            self.save_importance()

    def save_importance(self) -> str | None:
        """Persist the importance table so the next run over this dataset starts warm."""
        if not self.importance_url:
            return None
        ds = self.dataset
        return ds.client.save_importance(ds.namespace, self.importance_url, ds.fingerprint)

    def stats(self) -> dict[str, float]:
        c = self.dataset.counters
        served = c["hits"]  # substitutes are read from the cache with their batch: hits too
        requested = max(1.0, served + c["misses"])
        return {
            "epoch": float(self.sampler.epoch),
            "cache_hits": float(c["hits"] - self.sampler.substitutions),
            "cache_substitutions": float(self.sampler.substitutions),
            "cache_misses": float(c["misses"]),
            "cache_remote_bytes": float(c["remote_bytes"]),
            "cache_wait_s": float(c["wait_s"]),
            "cache_hit_rate": float(served / requested),
        }

    def state_dict(self) -> dict[str, Any]:
        return self.sampler.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.sampler.load_state_dict(state)

    def close(self) -> None:
        """Persist the learned importance (rank 0), so the next run starts warm; stop the
        prefetch threads."""
        if self.sampler.rank == 0:
            self.save_importance()
        self.dataset.close()

