"""GPTQ-style uint4 group-wise quantization (Frantar et al., 2022).

Columns are quantized left to right; each column's rounding error is spread over the
not-yet-quantized columns through the inverse Hessian of the layer's inputs, so the
layer's *output* error (not the weight error) is minimized. Group scales and
zero-points are chosen from the error-updated weights as each group is reached.
Layers are quantized independently from the float model's inputs (no sequential
propagation of quantized activations), which keeps calibration to one pass.
"""

from __future__ import annotations

import torch

from forgeline.quantize.runtime.qtensor import (
    QuantizedWeight,
    int4_group_params,
    pack_int4,
    quantize_int4_codes,
)


def _inverse_hessian_upper(h: torch.Tensor, damp_ratio: float) -> torch.Tensor:
    """Upper Cholesky factor of ``H^-1`` with ``damp_ratio * mean(diag H)`` damping."""
    n = h.shape[0]
    diag_mean = float(torch.diag(h).mean())
    damp = damp_ratio * (diag_mean if diag_mean > 0 else 1.0)
    eye = torch.eye(n, dtype=h.dtype)
    for _ in range(6):
        try:
            chol = torch.linalg.cholesky(h + damp * eye)
            hinv = torch.cholesky_inverse(chol)
            return torch.linalg.cholesky(hinv, upper=True)
        except RuntimeError:
            damp *= 10.0
    raise RuntimeError("Hessian is not positive definite even with heavy damping")


@torch.no_grad()
def gptq_int4(
    weight: torch.Tensor,
    hessian: torch.Tensor,
    group_size: int,
    damp_ratio: float = 0.01,
    block_columns: int = 128,
) -> QuantizedWeight:
    """Quantize a ``[rows, cols]`` weight to uint4 groups using the input Hessian."""
    w = weight.detach().reshape(weight.shape[0], -1).to(torch.float64).clone()
    rows, cols = w.shape
    if cols % group_size:
        raise ValueError(f"group_size {group_size} does not divide {cols} input columns")
    h = hessian.to(torch.float64).clone()
    dead = torch.diag(h) == 0
    h[dead, dead] = 1.0
    w[:, dead] = 0.0
    hinv = _inverse_hessian_upper(h, damp_ratio)

    n_groups = cols // group_size
    codes = torch.zeros(rows, cols, dtype=torch.uint8)
    scales = torch.zeros(rows, n_groups, dtype=torch.float64)
    zeros = torch.zeros(rows, n_groups, dtype=torch.float64)
    for i1 in range(0, cols, block_columns):
        i2 = min(i1 + block_columns, cols)
        w1 = w[:, i1:i2].clone()
        err1 = torch.zeros_like(w1)
        hinv1 = hinv[i1:i2, i1:i2]
        for i in range(i2 - i1):
            col = i1 + i
            if col % group_size == 0:
                g = col // group_size
                # current (error-updated) values of this group's columns
                grp = torch.cat([w1[:, i:], w[:, i2:]], dim=1)[:, :group_size]
                s, z = int4_group_params(grp.to(torch.float32))
                scales[:, g], zeros[:, g] = s.double(), z.double()
            g = col // group_size
            s32, z32 = scales[:, g].float(), zeros[:, g].float()
            q = quantize_int4_codes(w1[:, i : i + 1].float(), s32, z32).squeeze(1)
            codes[:, col] = q
            deq = (q.double() - zeros[:, g]) * scales[:, g]
            e = (w1[:, i] - deq) / hinv1[i, i]
            w1[:, i:] -= e[:, None] * hinv1[i, i:][None, :]
            err1[:, i] = e
        w[:, i2:] -= err1 @ hinv[i1:i2, i2:]
    return QuantizedWeight(
        pack_int4(codes.reshape(-1)),
        scales.float(),
        zeros.to(torch.uint8),
        4,
        group_size,
        (rows, cols),
    )
