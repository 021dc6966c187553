"""Observers: statistics of a layer's inputs gathered by forward-pre-hooks during calibration.

- :class:`RangeObserver` - per-tensor range (min/max, top-k extremes, a value sample).
- :class:`ChannelAbsMaxObserver` - per-input-channel max |x| (SmoothQuant).
- :class:`HessianObserver` - ``2/n * X^T X`` of the layer's input columns (GPTQ).
- :class:`RowSampler` - a sample of input rows (the SmoothQuant strength search).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

_MAX_SAMPLE_VALUES = 1 << 18


class RangeObserver:
    """Range statistics of every value flowing into a layer, over all batches."""

    def __init__(self, topk: int = 32, sample_per_batch: int = 4096, seed: int = 0) -> None:
        self.topk, self.sample_per_batch = topk, sample_per_batch
        self.min = float("inf")
        self.max = float("-inf")
        self.top = torch.empty(0)
        self.bottom = torch.empty(0)
        self.samples: list[torch.Tensor] = []
        self.count = 0
        self._gen = torch.Generator().manual_seed(seed)

    def observe(self, x: torch.Tensor) -> None:
        flat = x.detach().reshape(-1).to(torch.float32).cpu()
        if flat.numel() == 0:
            return
        self.count += flat.numel()
        self.min = min(self.min, float(flat.min()))
        self.max = max(self.max, float(flat.max()))
        k = min(self.topk, flat.numel())
        self.top = (
            torch.cat([self.top, flat.topk(k).values])
            .topk(min(self.topk, self.top.numel() + k))
            .values
        )
        self.bottom = (
            torch.cat([self.bottom, flat.topk(k, largest=False).values])
            .topk(min(self.topk, self.bottom.numel() + k), largest=False)
            .values
        )
        n = min(self.sample_per_batch, flat.numel())
        idx = torch.randperm(flat.numel(), generator=self._gen)[:n]
        self.samples.append(flat[idx])
        if sum(s.numel() for s in self.samples) > _MAX_SAMPLE_VALUES:
            merged = torch.cat(self.samples)
            keep = torch.randperm(merged.numel(), generator=self._gen)[: _MAX_SAMPLE_VALUES // 2]
            self.samples = [merged[keep]]

    def sample(self) -> torch.Tensor:
        return torch.cat(self.samples) if self.samples else torch.empty(0)

    def range(self, method: str, percentile_pct: float = 99.99) -> tuple[float, float]:
        """``(lo, hi)`` by ``minmax``, ``percentile`` or ``topk_median``."""
        if self.count == 0:
            raise ValueError("observer saw no values")
        if method == "minmax":
            return self.min, self.max
        if method == "percentile":
            s = self.sample()
            q = torch.tensor([1.0 - percentile_pct / 100.0, percentile_pct / 100.0])
            lo, hi = torch.quantile(s, q).tolist()
            return lo, hi
        if method == "topk_median":
            return float(self.bottom.median()), float(self.top.median())
        raise ValueError(f"unknown range method {method!r}")


class ChannelAbsMaxObserver:
    """max |x| per input channel (last dim for Linear, dim 1 for Conv)."""

    def __init__(self, channel_dim: int = -1) -> None:
        self.channel_dim = channel_dim
        self.absmax: torch.Tensor | None = None

    def observe(self, x: torch.Tensor) -> None:
        x = x.detach().to(torch.float32)
        dims = [d for d in range(x.dim()) if d != self.channel_dim % x.dim()]
        a = x.abs().amax(dim=dims).cpu() if dims else x.abs().cpu()
        self.absmax = a if self.absmax is None else torch.maximum(self.absmax, a)


class HessianObserver:
    """Running ``H = 2/n * sum(x x^T)`` over the input columns a layer's weight sees."""

    def __init__(self, module: nn.Module) -> None:
        self.module = module
        self.h: torch.Tensor | None = None
        self.n = 0

    def _columns(self, x: torch.Tensor) -> torch.Tensor:
        m = self.module
        if isinstance(m, nn.Linear):
            return x.reshape(-1, x.shape[-1])
        if isinstance(m, nn.Conv1d | nn.Conv2d):
            if isinstance(m, nn.Conv1d):
                x = x.unsqueeze(2)
                k, d, p, s = (1, *m.kernel_size), (1, *m.dilation), (0, *m.padding), (1, *m.stride)
            else:
                k, d, p, s = m.kernel_size, m.dilation, m.padding, m.stride
            cols = F.unfold(x, k, dilation=d, padding=p, stride=s)  # [B, C*k, L]
            return cols.transpose(1, 2).reshape(-1, cols.shape[1])
        raise TypeError(f"no Hessian for {type(m).__name__}")

    def observe(self, x: torch.Tensor) -> None:
        cols = self._columns(x.detach().to(torch.float32)).cpu()
        n_new = cols.shape[0]
        if self.h is None:
            self.h = torch.zeros(cols.shape[1], cols.shape[1])
        self.h *= self.n / (self.n + n_new)
        self.n += n_new
        cols = cols * (2.0 / self.n) ** 0.5
        self.h += cols.t() @ cols


class RowSampler:
    """A random sample of at most ``max_rows`` input rows of a Linear (SmoothQuant search)."""

    def __init__(self, max_rows: int = 512, seed: int = 0) -> None:
        self.max_rows = max_rows
        self.rows = torch.empty(0)
        self._gen = torch.Generator().manual_seed(seed)

    def observe(self, x: torch.Tensor) -> None:
        x = x.detach().to(torch.float32).reshape(-1, x.shape[-1]).cpu()
        merged = torch.cat([self.rows.reshape(-1, x.shape[-1]), x])
        if len(merged) > self.max_rows:
            keep = torch.randperm(len(merged), generator=self._gen)[: self.max_rows]
            merged = merged[keep]
        self.rows = merged
