"""Tensor ↔ bytes, fixed-size chunk spans, and content hashes (sha256: ~1 GB/s here)."""

from __future__ import annotations

import hashlib

import numpy as np
import torch

from forgeline.checkpoint.state import TensorLike


def sha256(data: np.ndarray | bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def tensor_bytes(value: TensorLike) -> np.ndarray:
    """The tensor's bytes as a flat uint8 array (a view when it is already contiguous on CPU)."""
    if isinstance(value, torch.Tensor):
        t = value.detach()
        if t.device.type != "cpu":
            t = t.cpu()
        t = t.contiguous().reshape(-1)
        return t.view(torch.uint8).numpy() if t.numel() else np.empty(0, np.uint8)
    return np.ascontiguousarray(value).reshape(-1).view(np.uint8)


def dtype_name(value: TensorLike) -> str:
    if isinstance(value, torch.Tensor):
        return str(value.dtype).removeprefix("torch.")
    return "np:" + value.dtype.str


def itemsize(value: TensorLike) -> int:
    return value.element_size() if isinstance(value, torch.Tensor) else value.dtype.itemsize


def from_bytes(raw: np.ndarray, dtype: str, shape: list[int]) -> TensorLike:
    """Rebuild a tensor (``torch`` dtypes) or array (``np:`` dtypes) that owns ``raw``."""
    if dtype.startswith("np:"):
        return raw.view(np.dtype(dtype[3:])).reshape(shape)
    t = torch.from_numpy(raw) if raw.size else torch.empty(0, dtype=torch.uint8)
    return t.view(getattr(torch, dtype)).reshape(shape)


def chunk_spans(nbytes: int, chunk_bytes: int, item: int) -> list[tuple[int, int]]:
    """``(offset, length)`` slices; chunk size rounded down to whole items."""
    step = max(item, chunk_bytes - chunk_bytes % item)
    return [(off, min(step, nbytes - off)) for off in range(0, nbytes, step)]
