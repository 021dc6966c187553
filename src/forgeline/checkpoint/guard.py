"""Snapshot-before-mutation guard: an optimizer step waits until the overlapped snapshot of
the last save is complete, so a save followed at once by a step still persists the pre-step
state.

The hook sits on every ``torch.optim.Optimizer`` reached through ``.optimizer`` attributes
(a DeepSpeed engine → its ZeRO / fp16 wrapper → the torch optimizer), i.e. at the innermost
place where parameters and optimizer state are mutated, whatever calls it (``opt.step()``,
``engine.step()``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from forgeline.errors import ConfigError


def find_optimizers(target: Any) -> list[torch.optim.Optimizer]:
    """``target`` itself and the ``.optimizer`` chain below it, torch optimizers only."""
    found, seen, obj = [], set(), target
    while obj is not None and id(obj) not in seen:
        seen.add(id(obj))
        if isinstance(obj, torch.optim.Optimizer):
            found.append(obj)
        obj = getattr(obj, "optimizer", None)
    return found


def guard_optimizer_steps(target: Any, wait: Callable[[], Any]) -> list[Any]:
    """Call ``wait()`` before every step of ``target``'s optimizer(s); returns hook handles."""
    optimizers = find_optimizers(target)
    if not optimizers:
        raise ConfigError("optimizer", type(target).__name__,
                          "no torch.optim.Optimizer found to guard: pass the optimizer, or a "
                          "DeepSpeed engine / wrapper whose .optimizer leads to one")

    def hook(*_: Any) -> None:  # a pre-hook must return None
        wait()

    return [opt.register_step_pre_hook(hook) for opt in optimizers]
