"""``ImportanceSampler``: each epoch's sample order for one rank, cache-aware.

The order is a seeded permutation split into disjoint per-rank shares (as
``DistributedSampler``). With a cached dataset, the sampler plans ``window`` samples ahead:
one batched lookup tells which samples miss and which are of low importance; a low-importance
miss is replaced by a cached low-importance sample (iCache) while the epoch's substitution
budget (``substitution_ratio`` × share) lasts; the remaining misses are handed to the
dataset's background readers, one window ahead of the loop (NoPFS-style clairvoyant
prefetch). ``substitution_ratio=0`` gives exact epochs: every sample exactly once.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
from torch.utils.data import Sampler

from forgeline.cache.dataset import CachedDataset
from forgeline.errors import ConfigError


def _world() -> tuple[int, int]:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class ImportanceSampler(Sampler[int]):
    """Yields sample indices of this rank's share of each epoch (endless if ``epochs`` is
    None, else that many epochs); ``rank``/``world`` default to ``torch.distributed``'s;
    ``multiple`` cuts the share to whole micro-batches."""

    def __init__(self, size: int | CachedDataset, seed: int = 0, rank: int | None = None,
                 world: int | None = None, substitution_ratio: float = 0.0,
                 window: int = 64, epochs: int | None = 1, multiple: int = 1) -> None:
        self.dataset = size if isinstance(size, CachedDataset) else None
        self.size = len(size) if isinstance(size, CachedDataset) else int(size)
        if not 0.0 <= substitution_ratio <= 1.0:
            raise ConfigError("substitution_ratio", substitution_ratio, "must be within [0, 1]")
        if substitution_ratio > 0 and self.dataset is None:
            raise ConfigError("substitution_ratio", substitution_ratio,
                              "substitution needs a CachedDataset to know what is cached")
        default_rank, default_world = _world()
        self.rank = default_rank if rank is None else rank
        self.world = default_world if world is None else world
        if not 0 <= self.rank < self.world:
            raise ConfigError("rank", self.rank, f"must be within [0, {self.world})")
        if self.size < self.world:
            raise ConfigError("world", self.world, f"more ranks than the {self.size} samples")
        if multiple < 1:
            raise ConfigError("multiple", multiple, "must be >= 1")
        self.multiple = multiple
        self.seed, self.ratio, self.window, self.epochs = seed, substitution_ratio, window, epochs
        self.epoch, self.position = 0, 0
        self.substitutions = 0
        self.substituted: dict[int, bytes] = {}
        self._yielding: set[int] = set()  # the planned window being handed out

    def set_epoch(self, epoch: int) -> None:
        self.epoch, self.position = epoch, 0

    def share(self, epoch: int | None = None) -> np.ndarray:
        """This rank's planned samples of ``epoch``, before any substitution."""
        epoch = self.epoch if epoch is None else epoch
        order = np.random.default_rng((self.seed, epoch)).permutation(self.size)
        per_rank = self.size // self.world
        return order[self.rank * per_rank : self.rank * per_rank + len(self)]

    def __len__(self) -> int:
        """This rank's samples per epoch: its share, cut to a multiple of ``multiple`` (the
        micro-batch) so nothing is planned or prefetched that the loop would drop."""
        return self.size // self.world // self.multiple * self.multiple

    def _plan(self, chunk: list[int], budget: int) -> tuple[list[int], int]:
        """Substitute low-importance misses of ``chunk`` (each cached sample at most once per
        window, as iCache draws from its L part); prefetch the other misses."""
        ds = self.dataset
        if ds is None:
            return chunk, budget
        cached, low = ds.client.lookup(ds.namespace, chunk)
        out, plain_misses = list(chunk), []
        wanted = [p for p, i in enumerate(chunk) if not cached[p] and low[p]][:budget]
        # never a sample already on its way to the loop: its data would be taken twice
        busy = set(chunk) | self._yielding | set(self.substituted) | ds.pending()
        subs = ds.client.substitutes(ds.namespace, len(wanted), sorted(busy)) if wanted else {}
        for p, (sub, data) in zip(wanted, subs.items(), strict=False):
            out[p] = sub
            self.substituted[sub] = data
        budget -= len(subs)
        self.substitutions += len(subs)
        replaced = set(wanted[: len(subs)])
        plain_misses = [(i, False) for p, i in enumerate(chunk) if not cached[p]
                        and p not in replaced]
        if plain_misses:
            ds.prefetch([i for i, _ in plain_misses], [c for _, c in plain_misses])
        return out, budget

    def __iter__(self) -> Iterator[int]:
        while self.epochs is None or self.epoch < self.epochs:
            share = self.share().tolist()
            budget = int(self.ratio * len(share)) if self.dataset is not None else 0
            start = self.position
            planned, next_first = self._plan(share[start : start + self.window], budget)
            budget = next_first
            first = start
            while first < len(share):
                following = first + self.window
                upcoming = share[following : following + self.window]
                self._yielding = set(planned)
                after, budget = self._plan(upcoming, budget) if upcoming else ([], budget)
                for index in planned:
                    self.position += 1
                    yield index
                planned, first = after, following
            self.epoch, self.position = self.epoch + 1, 0

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "position": self.position,
                "substitutions": self.substitutions}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
        self.substitutions = int(state.get("substitutions", 0))
