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
    set, read in global batches of ``world × micro_batch`` samples, rank r taking the r-th
    micro-batch of each (the ranks' samples are disjoint, as with ``DistributedSampler``).

    The position is the number of the epoch's samples all ranks have consumed together, so it
    does not depend on the world size: a run resumed on another worker count (or micro-batch)
    continues at the same sample; nothing is read twice or skipped. An epoch ends when fewer
    than a global batch of samples are left (those are dropped, as ``drop_last``).
    """

    def __init__(self, dataset: TokenDataset, micro_batch: int, seed: int, rank: int = 0,
                 world: int = 1) -> None:
        if len(dataset) < micro_batch * world:
            raise ConfigError("micro_batch_size", micro_batch,
                              f"{world} ranks × {micro_batch} exceeds the {len(dataset)} "
                              "training samples")
        self.dataset, self.micro_batch, self.seed = dataset, micro_batch, seed
        self.rank, self.world = rank, world
        self.epoch, self.consumed = 0, 0

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        global_batch = self.world * self.micro_batch
        while True:
            order = np.random.default_rng((self.seed, self.epoch)).permutation(len(self.dataset))
            while self.consumed + global_batch <= len(order):
                first = self.consumed + self.rank * self.micro_batch
                indices = order[first : first + self.micro_batch]
                self.consumed += global_batch
                tokens = torch.from_numpy(self.dataset.get_many(indices)).long()
                yield torch.from_numpy(indices.astype(np.int64)), tokens
            self.epoch, self.consumed = self.epoch + 1, 0

    def feedback(self, indices: torch.Tensor, losses: torch.Tensor) -> None:
        return None

    def stats(self) -> dict[str, float]:
        return {"epoch": float(self.epoch)}

    def state_dict(self) -> dict[str, Any]:
        """``consumed``: samples of the epoch's permutation read by all ranks together."""
        return {"epoch": self.epoch, "consumed": self.consumed}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "consumed" not in state:
            raise ConfigError("data", sorted(state), "not a ShuffledBatches position "
                              "(expected 'epoch' and 'consumed')")
        self.epoch, self.consumed = int(state["epoch"]), int(state["consumed"])

    def close(self) -> None:
        return None
