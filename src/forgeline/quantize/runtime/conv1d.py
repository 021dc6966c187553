"""Hugging Face ``Conv1D`` (GPT-2, GPT, ...) seen as the ``nn.Linear`` it is.

``transformers.pytorch_utils.Conv1D`` keeps its weight as ``(in, out)`` and computes
``x @ W + b``: a Linear with the weight transposed. Quantization swaps each one for a
:class:`LinearFromConv1D` whose weight is a transposed *view* of the same storage (no
copy; the same ``addmm`` call, so fp32 outputs are bit-identical), quantizes it like any
Linear, and records the original type and args so an artifact matches a float skeleton
built from ``transformers``. Torch only: the class is recognized by name, never imported.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

CONV1D_TYPE = "transformers.pytorch_utils.Conv1D"


def _conv1d_class(m: nn.Module) -> type | None:
    """The transformers ``Conv1D`` class ``m`` is (or derives from without overriding
    ``forward``), else ``None``."""
    for cls in type(m).__mro__:
        if f"{cls.__module__}.{cls.__qualname__}" == CONV1D_TYPE:
            return cls if type(m).forward is cls.forward else None
    return None


def is_hf_conv1d(m: nn.Module) -> bool:
    return _conv1d_class(m) is not None


def conv1d_args(m: nn.Module) -> dict[str, Any]:
    """Constructor args ``Conv1D(nf, nx)`` of a Conv1D (from its weight's shape)."""
    nx, nf = m.weight.shape
    return {"nf": int(nf), "nx": int(nx)}


class LinearFromConv1D(nn.Linear):
    """A ``Conv1D`` as ``nn.Linear`` (same ``forward`` as Linear); ``origin`` is the
    Conv1D class and ``float_type`` / ``float_args`` what an artifact records."""

    float_type = CONV1D_TYPE

    def __init__(self, conv: nn.Module) -> None:
        nx, nf = conv.weight.shape
        with torch.device("meta"):  # no throw-away weights
            super().__init__(nx, nf, bias=conv.bias is not None)
        self.weight = nn.Parameter(conv.weight.detach().t(), conv.weight.requires_grad)
        self.bias = None if conv.bias is None else conv.bias
        self.origin = type(conv)
        self.float_args = conv1d_args(conv)

    def to_conv1d(self) -> nn.Module:
        """The ``Conv1D`` again, its weight a view of this layer's (no copy)."""
        with torch.device("meta"):
            conv = self.origin(self.out_features, self.in_features)
        conv.weight = nn.Parameter(self.weight.detach().t(), self.weight.requires_grad)
        conv.bias = self.bias
        return conv


class DecodedConv1D(nn.Module):
    """A float layer with ``Conv1D``'s tensors (``weight`` ``(in, out)``, ``bias``) and
    forward, for writing decoded weights where transformers expects a Conv1D."""

    def __init__(self, weight_out_in: torch.Tensor, bias: torch.Tensor | None) -> None:
        super().__init__()
        self.nf, self.nx = weight_out_in.shape
        self.weight = nn.Parameter(weight_out_in.detach().t().contiguous())
        self.bias = nn.Parameter(bias.detach().clone()) if bias is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x.reshape(-1, self.nx) @ self.weight
        y = y + self.bias if self.bias is not None else y
        return y.view(*x.shape[:-1], self.nf)


def float_identity(m: nn.Module) -> tuple[str, dict[str, Any]] | None:
    """``(type, args)`` to record for a layer that stands in for a Conv1D, else ``None``."""
    if isinstance(m, LinearFromConv1D):
        return m.float_type, dict(m.float_args)
    return None


def _set(root: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(root.get_submodule(parent_name) if parent_name else root, child, new)


@contextmanager
def linearized(model: nn.Module) -> Iterator[dict[str, nn.Module]]:
    """Swap every Conv1D inside ``model`` for a :class:`LinearFromConv1D` (sharing its
    tensors) for the duration of the block; the originals are put back on exit, also on
    error. Yields ``{name: original Conv1D}``."""
    originals = {n: m for n, m in model.named_modules() if n and is_hf_conv1d(m)}
    try:
        for name, conv in originals.items():
            _set(model, name, LinearFromConv1D(conv))
        yield originals
    finally:
        for name, conv in originals.items():
            _set(model, name, conv)


def restore_conv1d(model: nn.Module) -> int:
    """Turn every :class:`LinearFromConv1D` still in ``model`` (layers left float) back
    into its Conv1D; returns how many."""
    left = [(n, m) for n, m in model.named_modules() if isinstance(m, LinearFromConv1D)]
    for name, m in left:
        _set(model, name, m.to_conv1d())
    return len(left)


__all__ = ["CONV1D_TYPE", "DecodedConv1D", "LinearFromConv1D", "conv1d_args", "float_identity",
           "is_hf_conv1d", "linearized", "restore_conv1d"]
