"""Where the training loop gets its micro-batches from: the ``BatchSource`` seam.

The loop asks a source for ``(sample_indices, tokens)`` micro-batches, hands back each
sample's loss (importance-aware caching uses it), and checkpoints the source's position
so a resumed run continues the same sample order.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

from forgeline.datasets import TokenDataset
from forgeline.errors import ConfigError


@runtime_checkable
class BatchSource(Protocol):
    """Endless micro-batches of this rank's share of the training set."""

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield ``(indices [B] int64, tokens [B, sample_tokens] int64)``."""
        ...

    def feedback(self, indices: torch.Tensor, losses: torch.Tensor) -> None:
        """Per-sample losses of the batch just trained on."""
        ...

    def stats(self) -> dict[str, float]:
        """Counters to report with the training metrics (may be empty)."""
        ...

    def state_dict(self) -> dict[str, Any]:
        """Position in the sample order, for checkpoints."""
        ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...

    def close(self) -> None:
        """Training is over: flush what must outlive the run (e.g. learned importance)."""
        ...


class ShuffledBatches:
    """Uniform sampling without replacement: each epoch a seeded permutation of the training
    set, split into disjoint per-rank shares (as ``DistributedSampler`` does)."""

    def __init__(self, dataset: TokenDataset, micro_batch: int, seed: int, rank: int = 0,
                 world: int = 1) -> None:
        if len(dataset) < micro_batch * world:
            raise ConfigError("micro_batch_size", micro_batch,
                              f"{world} ranks × {micro_batch} exceeds the {len(dataset)} "
                              "training samples")
        self.dataset, self.micro_batch, self.seed = dataset, micro_batch, seed
        self.rank, self.world = rank, world
        self.epoch, self.batch_in_epoch = 0, 0

    def _epoch_order(self) -> np.ndarray:
        order = np.random.default_rng((self.seed, self.epoch)).permutation(len(self.dataset))
        per_rank = len(order) // self.world
        return order[self.rank * per_rank : (self.rank + 1) * per_rank]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        while True:
            order = self._epoch_order()
            batches = len(order) // self.micro_batch
            while self.batch_in_epoch < batches:
                first = self.batch_in_epoch * self.micro_batch
                indices = order[first : first + self.micro_batch]
                self.batch_in_epoch += 1
                tokens = torch.from_numpy(self.dataset.get_many(indices)).long()
                yield torch.from_numpy(indices.astype(np.int64)), tokens
            self.epoch, self.batch_in_epoch = self.epoch + 1, 0

    def feedback(self, indices: torch.Tensor, losses: torch.Tensor) -> None:
        return None

    def stats(self) -> dict[str, float]:
        return {"epoch": float(self.epoch)}

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch, self.batch_in_epoch = int(state["epoch"]), int(state["batch_in_epoch"])

    def close(self) -> None:
        return None
