"""``ImportanceSampler``: each epoch's sample order for one rank, cache-aware.

The order is a seeded permutation split into disjoint per-rank shares (as
``DistributedSampler``). With a cached dataset, the sampler plans ``window`` samples ahead:
one batched lookup tells which samples miss and which are of low importance; a low-importance
miss is replaced by a cached low-importance sample (iCache) while the epoch's substitution
budget (``substitution_ratio`` × share) lasts; the remaining misses are handed to the
dataset's background readers, one window ahead of the loop (NoPFS-style clairvoyant
prefetch). ``substitution_ratio=0`` gives exact epochs: every sample exactly once.

A substitute is never a sample served or on its way in the same epoch (the exclusion set is
per epoch). ``state_dict`` carries the decisions taken this epoch, and the substitutes are
drawn with a seed from (seed, epoch, rank, window), so a restored sampler hands out exactly
the samples an uninterrupted one would, given the same cache contents.
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
        self._decisions: dict[int, int] = {}  # this epoch: position -> substitute sample
        self._planned_upto = 0  # this epoch's positions [0, planned_upto) are decided

    def set_epoch(self, epoch: int) -> None:
        self.epoch, self.position = epoch, 0
        self._decisions, self._planned_upto = {}, 0

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

    def _plan(self, order: list[int], first: int, budget: int, busy: set[int]) -> int:
        """Decide the window ``order[first:first + window]`` in place: substitute its
        low-importance misses by cached low-importance samples not in ``busy`` (this epoch's
        samples served or on their way), prefetch its other misses; return the budget left.
        The substitutes' choice is seeded by (seed, epoch, rank, first), so the same cache
        contents give the same decisions."""
        ds = self.dataset
        chunk = order[first : first + self.window]
        busy.update(chunk)
        self._planned_upto = first + len(chunk)
        if ds is None or not chunk:
            return budget
        cached, low = ds.client.lookup(ds.namespace, chunk)
        wanted = [p for p, i in enumerate(chunk) if not cached[p] and low[p]][:budget]
        subs: list[int] = []
        if wanted:
            seed = int(np.random.default_rng((self.seed, self.epoch, self.rank, first))
                       .integers(2**63))
            subs = ds.client.substitutes(ds.namespace, len(wanted), sorted(busy), seed)
        for p, sub in zip(wanted, subs, strict=False):
            order[first + p] = sub
            self._decisions[first + p] = sub
            busy.add(sub)
        self.substitutions += len(subs)
        replaced = set(wanted[: len(subs)])
        misses = [i for p, i in enumerate(chunk) if not cached[p] and p not in replaced]
        if misses:
            ds.prefetch(misses, [False] * len(misses))
        return budget - len(subs)

    def _order(self) -> list[int]:
        """This epoch's order with the decisions taken so far applied."""
        order = self.share().tolist()
        for position, sub in self._decisions.items():
            order[position] = sub
        return order

    def _resume_prefetch(self, order: list[int]) -> None:
        """After a restore, the decided but unread misses are announced again."""
        ds = self.dataset
        if ds is not None and self._planned_upto > self.position:
            ds.prefetch(order[self.position : self._planned_upto])

    def __iter__(self) -> Iterator[int]:
        while self.epochs is None or self.epoch < self.epochs:
            order = self._order()
            budget = (int(self.ratio * len(order)) - len(self._decisions)
                      if self.dataset is not None else 0)
            # per epoch (the last epoch's samples do not count): this epoch's decided samples,
            # the planned ones and their substitutes, as ``_plan`` collected them
            busy = set(order[: self._planned_upto]) | set(
                self.share()[: self._planned_upto].tolist())
            if self.dataset is not None:
                self.dataset.client.new_epoch(self.dataset.namespace, self.epoch)
            if self._planned_upto == 0:
                budget = self._plan(order, 0, budget, busy)
            else:
                self._resume_prefetch(order)
            while self.position < len(order):
                # one window ahead: decide the next window before handing out this one
                window_end = min(len(order), (self.position // self.window + 1) * self.window)
                if self._planned_upto <= window_end and window_end < len(order):
                    budget = self._plan(order, window_end, budget, busy)
                while self.position < window_end:
                    index = order[self.position]
                    self.position += 1
                    yield index
            self.set_epoch(self.epoch + 1)

    def state_dict(self) -> dict[str, Any]:
        """Everything that decides the rest of the order: epoch, position, the positions
        decided so far this epoch and this epoch's substitutions (a log of the decisions)."""
        positions = sorted(self._decisions)
        return {"epoch": self.epoch, "position": self.position,
                "substitutions": self.substitutions, "planned_upto": self._planned_upto,
                "sub_positions": positions,
                "sub_indices": [self._decisions[p] for p in positions]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
        self.substitutions = int(state.get("substitutions", 0))
        self._planned_upto = int(state.get("planned_upto", 0))
        self._decisions = {int(p): int(i) for p, i in zip(
            state.get("sub_positions", []), state.get("sub_indices", []), strict=True)}
