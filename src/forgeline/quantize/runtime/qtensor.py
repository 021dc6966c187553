"""Integer weight and activation formats: quantize, dequantize, pack. Torch only.

One ``QuantizedWeight`` holds the integers plus per-row (int8) or per-group (int4)
scales and zero-points of a weight flattened to ``[rows, cols]`` (Linear: out x in;
Conv: out x in*k*k; Embedding: vocab x dim). The quantization error of round-to-nearest
is at most ``scale / 2`` per element, for both formats.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

INT8_QMAX = 127  # symmetric int8: codes -127..127, zero-point 0
INT4_QMAX = 15  # asymmetric uint4: codes 0..15 with an integer zero-point per group


@dataclass
class QuantizedWeight:
    """Integer codes of a ``[rows, cols]`` weight and what it takes to decode them.

    ``qdata``: int8 ``[rows, cols]`` (bits=8) or uint8 ``[rows * cols / 2]`` with two
    4-bit codes per byte (bits=4). ``scale``: bf16 ``[rows]`` (bits=8) or fp32
    ``[rows, cols / group_size]`` (bits=4). ``zero_point``: uint8 like ``scale`` for
    4 bits, ``None`` for symmetric int8.
    """

    qdata: torch.Tensor
    scale: torch.Tensor
    zero_point: torch.Tensor | None
    bits: int
    group_size: int | None
    shape: tuple[int, int]

    def nbytes(self) -> int:
        """Bytes stored for this weight: codes + scales + zero-points."""
        zp = 0 if self.zero_point is None else _nbytes(self.zero_point)
        return _nbytes(self.qdata) + _nbytes(self.scale) + zp

    def dequantize(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The ``[rows, cols]`` float weight these codes stand for."""
        rows, cols = self.shape
        if self.bits == 8:
            return (self.qdata.to(torch.float32) * self.scale.to(torch.float32)[:, None]).to(dtype)
        codes = unpack_int4(self.qdata, rows * cols).view(rows, cols // self.group_size, -1)
        zp = self.zero_point.to(torch.float32)[..., None]
        w = (codes.to(torch.float32) - zp) * self.scale[..., None]
        return w.reshape(rows, cols).to(dtype)


def _nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def bf16_scale_at_least(ideal: torch.Tensor) -> torch.Tensor:
    """``ideal`` (positive fp32) as bf16, rounded *up* so that ``|w| / scale <= qmax`` holds.

    bf16 keeps fp32's exponent range at half the bytes; rounding up costs at most 0.8%
    of resolution and keeps the round-to-nearest error within the stored ``scale / 2``.
    """
    scale = ideal.to(torch.bfloat16)
    low = scale.to(torch.float32) < ideal
    bumped = (scale.view(torch.int16) + 1).view(torch.bfloat16)  # next bf16 up (positive)
    return torch.where(low, bumped, scale)


def quantize_int8_per_channel(w: torch.Tensor) -> QuantizedWeight:
    """Symmetric int8 per output row: ``scale >= max|w_row| / 127`` (bf16), zero-point 0."""
    w2 = w.detach().reshape(w.shape[0], -1).to(torch.float32)
    amax = w2.abs().amax(dim=1)
    scale = bf16_scale_at_least(torch.where(amax > 0, amax / INT8_QMAX, torch.ones_like(amax)))
    q = torch.round(w2 / scale.to(torch.float32)[:, None])
    q = torch.clamp(q, -INT8_QMAX, INT8_QMAX).to(torch.int8)
    return QuantizedWeight(q, scale, None, 8, None, (w2.shape[0], w2.shape[1]))


def int4_group_params(wg: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Asymmetric uint4 ``(scale, zero_point)`` over the last dim of ``wg``.

    The range always includes 0 (as GPTQ does), so an all-zero group decodes exactly
    and the integer zero-point keeps the rounding error within ``scale / 2``.
    """
    lo = torch.clamp(wg.amin(dim=-1), max=0.0)
    hi = torch.clamp(wg.amax(dim=-1), min=0.0)
    span = hi - lo
    scale = torch.where(span > 0, span / INT4_QMAX, torch.ones_like(span))
    zero = torch.clamp(torch.round(-lo / scale), 0, INT4_QMAX)
    return scale, zero


def quantize_int4_codes(wg: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor) -> torch.Tensor:
    """uint4 codes (as uint8) of ``wg`` on the grid ``(q - zero) * scale``."""
    q = torch.round(wg / scale[..., None]) + zero[..., None]
    return torch.clamp(q, 0, INT4_QMAX).to(torch.uint8)


def quantize_int4_groupwise(w: torch.Tensor, group_size: int) -> QuantizedWeight:
    """Round-to-nearest uint4 with one scale and zero-point per ``group_size`` inputs."""
    w2 = w.detach().reshape(w.shape[0], -1).to(torch.float32)
    rows, cols = w2.shape
    if cols % group_size:
        raise ValueError(f"group_size {group_size} does not divide {cols} input columns")
    wg = w2.view(rows, cols // group_size, group_size)
    scale, zero = int4_group_params(wg)
    codes = quantize_int4_codes(wg, scale, zero)
    return QuantizedWeight(
        pack_int4(codes.reshape(-1)), scale, zero.to(torch.uint8), 4, group_size, (rows, cols)
    )


def pack_int4(codes: torch.Tensor) -> torch.Tensor:
    """Pack a flat uint8 tensor of 4-bit codes two per byte (low nibble first)."""
    flat = codes.reshape(-1).to(torch.uint8)
    if flat.numel() % 2:
        flat = torch.cat([flat, flat.new_zeros(1)])
    pairs = flat.view(-1, 2)
    return pairs[:, 0] | (pairs[:, 1] << 4)


def unpack_int4(packed: torch.Tensor, numel: int) -> torch.Tensor:
    """Inverse of :func:`pack_int4`: the first ``numel`` 4-bit codes as uint8."""
    out = torch.stack([packed & 0x0F, packed >> 4], dim=1).reshape(-1)
    return out[:numel]


# --- activations -----------------------------------------------------------------------


def uniform_act_params(lo: float, hi: float, qmax: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-tensor asymmetric ``(scale, zero_point)`` for codes 0..qmax over ``[lo, hi]``.

    The range is widened to include 0 so that zero (padding, ReLU) is exact.
    """
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    span = hi - lo
    scale = span / qmax if span > 0 else 1.0
    zero = min(max(round(-lo / scale), 0), qmax)
    return torch.tensor(scale, dtype=torch.float32), torch.tensor(zero, dtype=torch.int32)


def fake_quant_uniform(
    x: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, qmax: int
) -> torch.Tensor:
    """Quantize ``x`` to codes 0..qmax with ``(scale, zero)`` and decode it again."""
    q = torch.clamp(torch.round(x / scale) + zero, 0, qmax)
    return (q - zero) * scale


def fake_quant_pwlq(x: torch.Tensor, knots: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
    """Piecewise-linear quantization (PWLQ) of ``x`` and back.

    ``knots = [lo, a, b, hi]``: the dense middle ``[a, b]`` gets ``levels[0]`` evenly
    spaced levels, the sparse tails ``[lo, a)`` and ``(b, hi]`` get ``levels[1]`` and
    ``levels[2]``. Dense middle + sparse tails keep resolution where most values lie
    while still covering asymmetric outliers (e.g. activations before LayerNorm).
    """
    lo, a, b, hi = (knots[i] for i in range(4))
    n_mid, n_left, n_right = (int(levels[i]) for i in range(3))
    step_mid = (b - a) / max(n_mid - 1, 1)
    mid = a + torch.round((torch.clamp(x, a, b) - a) / step_mid) * step_mid
    out = mid
    if n_left > 0:
        step_l = (a - lo) / n_left
        k = torch.clamp(torch.round((a - x) / step_l), 0, n_left)
        out = torch.where(x < a, a - k * step_l, out)
    if n_right > 0:
        step_r = (hi - b) / n_right
        k = torch.clamp(torch.round((x - b) / step_r), 0, n_right)
        out = torch.where(x > b, b + k * step_r, out)
    return out.to(x.dtype)


def pwlq_levels(lo: float, a: float, b: float, hi: float, bits: int) -> torch.Tensor:
    """Split ``2**bits`` codes: half to the middle, half to the tails by their lengths."""
    half = 2 ** (bits - 1)
    left, right = max(a - lo, 0.0), max(hi - b, 0.0)
    n_left = round(half * left / (left + right)) if left + right > 0 else 0
    return torch.tensor([half, n_left, half - n_left], dtype=torch.int32)
