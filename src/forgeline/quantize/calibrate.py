"""Calibration: take the caller's batches, run the float model, feed per-layer observers.

A batch is a tensor (``model(batch)``), a tuple/list (``model(*batch)``) or a dict
(``model(**batch)``); its first dimension counts as samples. For the pipeline: windows
of byte tokens, ``LongTensor [batch, seq]``, from the dataset's validation split.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

import torch
from torch import nn

from forgeline.errors import ConfigError

Batch = Any


class Observer(Protocol):
    def observe(self, x: torch.Tensor) -> None: ...


def run_model(model: nn.Module, batch: Batch) -> Any:
    """Call ``model`` on one batch by the calling convention above."""
    if isinstance(batch, Mapping):
        return model(**batch)
    if isinstance(batch, tuple | list):
        return model(*batch)
    return model(batch)


def _rows(batch: Batch) -> int:
    """Samples in ``batch``: the first dimension of its first tensor (of any dict value or
    tuple element); a batch without one is a ``ConfigError``."""
    values = (list(batch.values()) if isinstance(batch, Mapping)
              else list(batch) if isinstance(batch, tuple | list) else [batch])
    for v in values:
        if isinstance(v, torch.Tensor) and v.dim():
            return int(v.shape[0])
    raise ConfigError("calibration_batches", f"<batch of {type(batch).__name__}>",
                      "a batch must hold a tensor whose first dimension counts samples "
                      "(a tensor, a tuple/list or a dict of tensors)")


def resize(batch: Batch, n: int) -> Batch:
    """``batch`` with exactly ``n`` samples: cut, or its rows repeated (latency inputs)."""
    def fit(v: Any) -> Any:
        if not isinstance(v, torch.Tensor) or not v.dim():
            return v
        reps = -(-n // v.shape[0])
        return v.repeat(reps, *([1] * (v.dim() - 1)))[:n].contiguous()

    if isinstance(batch, Mapping):
        return {k: fit(v) for k, v in batch.items()}
    if isinstance(batch, tuple | list):
        return type(batch)(fit(v) for v in batch)
    return fit(batch)


def _head(batch: Batch, n: int) -> Batch:
    if isinstance(batch, Mapping):
        return {k: v[:n] if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
    if isinstance(batch, tuple | list):
        return type(batch)(v[:n] if isinstance(v, torch.Tensor) else v for v in batch)
    return batch[:n]


def take_batches(batches: Iterable[Batch] | None, max_samples: int) -> list[Batch]:
    """The first ``max_samples`` samples (rows, not batches) of ``batches`` as a list, the
    last batch cut to fit.

    Raises ``ConfigError('calibration_batches', ...)`` when there is nothing to calibrate on.
    """
    if batches is None:
        raise ConfigError(
            "calibration_batches",
            None,
            "no calibration data given; this "
            "scheme needs input batches (e.g. the validation split)",
        )
    taken: list[Batch] = []
    rows = 0
    for b in batches:
        n = _rows(b)
        if n == 0:
            continue
        if rows + n > max_samples:
            b, n = _head(b, max_samples - rows), max_samples - rows
        taken.append(b)
        rows += n
        if rows >= max_samples:
            break
    if not taken:
        raise ConfigError(
            "calibration_batches",
            "<empty>",
            "the calibration set yielded no samples; check the data split",
        )
    return taken


def count_samples(batches: list[Batch]) -> int:
    """Samples (first-dimension rows) over ``batches``."""
    return sum(_rows(b) for b in batches)


@torch.no_grad()
def observe(
    model: nn.Module,
    batches: list[Batch],
    observers: dict[str, list[Observer]],
    transforms: dict[str, Callable[[torch.Tensor], torch.Tensor]] | None = None,
) -> None:
    """Run ``model`` over ``batches`` with each named module's input fed to its observers.

    ``transforms[name]`` rewrites that input before observing (e.g. SmoothQuant's
    division), without changing what the module itself receives.
    """
    transforms = transforms or {}
    handles = []
    for name, obs in observers.items():
        fn = transforms.get(name)

        def hook(_m, args, _obs=obs, _fn=fn):
            x = args[0]
            x = _fn(x) if _fn is not None else x
            for o in _obs:
                o.observe(x)

        handles.append(model.get_submodule(name).register_forward_pre_hook(hook))
    was_training = model.training
    model.eval()
    try:
        for b in batches:
            run_model(model, b)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
