"""Opt-in lossy coding of float32 training state, ExCP-style (Li et al., ICML'24), with a
stated per-element error bound.

Each chunk is coded as a *residual against the previous checkpoint's reconstruction* of the
same chunk (or against zero on a keyframe), so the error never accumulates across checkpoints:
every restored value is within its bound of the true value at that step. Per block of
``BLOCK`` values with ``M`` = the block's max |x| (``S`` = max sqrt(x) for second moments):

- ``round`` (weights ε_w, momentum ε_m): ``x̂ = base + q·round((x - base)/q)``, ``q = 2·ε·M``,
  so ``|x - x̂| ≤ ε·M`` (plus float32 rounding of the sum). Residuals under ``ε·M`` become
  code 0: they are pruned, which is where most of the saving comes from.
- ``sqrt`` (Adam ``exp_avg_sq``, ε_v): a *relative* code. ``sqrt(x̂)`` is the level
  ``2^32·(1+ε)^-k`` nearest to sqrt(x) in ratio, so ``(1+ε)^-½ ≤ sqrt(x̂)/sqrt(x) ≤ (1+ε)^½``
  (for sqrt(x) ≥ 2^-62; zeros stay zero): every restored Adam denominator is within about
  ε/2 of the true one, unbiased, small second moments included (a max-scaled code would
  round them to zero and blow up their steps). The residual is the change of level index k.

Codes are stored in the narrowest integer width that holds them, then zstd-compressed; the
encoder returns its reconstruction so the next checkpoint's residual is taken against exactly
what a restore will produce. Reconstruction uses only IEEE-exact arithmetic (+, ×, and a
level table built by repeated float64 multiplication), so every machine decodes the same bits.
"""

from __future__ import annotations

import functools
import struct

import numpy as np

from forgeline.errors import IntegrityError

BLOCK = 256
_WIDTHS = {1: np.int8, 2: np.int16, 4: np.int32}
_SUB = struct.Struct("<Bf")  # code width in bytes, ε


@functools.lru_cache(maxsize=8)
def _levels(error: float) -> np.ndarray:
    """Squares of ``2^32·(1+ε)^-k`` (k = 0…K, while ≥ 2^-62) as float32, then 0 (k = K+1)."""
    ratio, value, roots = 1.0 / (1.0 + error), 2.0**32, []
    while value >= 2.0**-62:
        roots.append(value)
        value *= ratio
    root = np.array(roots, dtype=np.float64).astype(np.float32)
    return np.append(root * root, np.float32(0))


def _log_codes(x: np.ndarray, error: float, nearest: bool = False) -> np.ndarray:
    """Level index k of the smallest level ≥ x (exact: a search, no logarithms); with
    ``nearest``, of the nearer of the two levels around x in ratio (geometric midpoint)."""
    levels = _levels(error)
    ascending = levels[-2::-1]  # the non-zero levels, smallest first
    if x.size and float(x.max()) > float(ascending[-1]):
        raise IntegrityError(f"second moment {float(x.max())} is beyond the lossy code's range")
    top = levels.size - 2
    k = (top - np.searchsorted(ascending, x, side="left")).astype(np.int32)
    if nearest:
        below = np.minimum(k + 1, top)
        wide = x.astype(np.float64)
        lower = (wide * wide < levels[k].astype(np.float64) * levels[below]) & (k < top)
        k = np.where(lower, below, k).astype(np.int32)
    k[x == 0] = levels.size - 1
    return k


def _encode_log(x: np.ndarray, base: np.ndarray | None, error: float
                ) -> tuple[bytes, np.ndarray]:
    if (x < 0).any():
        raise IntegrityError("lossy sqrt mode needs non-negative values (Adam exp_avg_sq)")
    error = float(np.float32(error))  # the value the payload records, so both build one table
    codes = _log_codes(x, error, nearest=True)
    levels = _levels(error)
    if base is not None:
        previous = _log_codes(base, error)
        if np.array_equal(levels[previous], base):  # base is on the level grid: a residual
            codes = codes - previous
        else:
            raise OverflowError("base is not a reconstruction of this code")
    peak = int(np.abs(codes).max(initial=0))
    width = 1 if peak < 2**7 else 2 if peak < 2**15 else 4
    payload = _SUB.pack(width, error) + codes.astype(_WIDTHS[width]).tobytes()
    return payload, _decode_log(payload, x.size, base)


def _decode_log(payload: bytes | memoryview, n: int, base: np.ndarray | None) -> np.ndarray:
    width, error = _SUB.unpack_from(payload)
    if width not in _WIDTHS:
        raise IntegrityError(f"lossy chunk has code width {width}")
    codes = np.frombuffer(memoryview(payload)[_SUB.size :], dtype=_WIDTHS[width])
    if codes.size != n:
        raise IntegrityError(f"lossy chunk holds {codes.size} codes, header says {n}")
    levels = _levels(error)
    k = codes.astype(np.int32)
    if base is not None:
        k = k + _log_codes(base.view(np.float32), error)
    if k.size and (k.min() < 0 or k.max() >= levels.size):
        raise IntegrityError("lossy level index out of range")
    return levels[k]


def _blocks(x: np.ndarray) -> np.ndarray:
    pad = (-x.size) % BLOCK
    return (np.pad(x, (0, pad)) if pad else x).reshape(-1, BLOCK)


def _reconstruct(base: np.ndarray, codes: np.ndarray, q: np.ndarray) -> np.ndarray:
    """The decoder's arithmetic; the encoder calls it too, so both agree bit for bit."""
    out = base + codes.astype(np.float32) * q
    return np.where(q > 0, out, np.float32(0)).astype(np.float32, copy=False)


def encode(x: np.ndarray, base: np.ndarray | None, error: float, sqrt_mode: bool
           ) -> tuple[bytes, np.ndarray]:
    """float32 ``x`` (flat) → (payload, reconstruction); ``base`` = previous reconstruction."""
    if sqrt_mode:
        return _encode_log(x.astype(np.float32, copy=False), base, error)
    n = x.size
    xb = _blocks(x.astype(np.float32, copy=False))
    bb = np.zeros_like(xb) if base is None else _blocks(base)
    q = (np.abs(xb).max(axis=1, keepdims=True) * np.float32(2 * error)).astype(np.float32)
    codes = np.rint((xb - bb) / np.where(q > 0, q, np.float32(1)))
    if np.abs(codes).max(initial=0) >= 2**31 - 2:
        raise OverflowError("residual too large for the code width")  # caller re-keys
    codes = codes.astype(np.int32)
    recon = _reconstruct(bb, codes, q)
    peak = int(np.abs(codes).max(initial=0))
    width = 1 if peak < 2**7 else 2 if peak < 2**15 else 4
    payload = (_SUB.pack(width, error) + q.tobytes()
               + codes.reshape(-1)[:n].astype(_WIDTHS[width]).tobytes())
    return payload, recon.reshape(-1)[:n]


def decode(payload: bytes | memoryview, n: int, base: np.ndarray | None, sqrt_mode: bool
           ) -> np.ndarray:
    """Inverse of :func:`encode` (``n`` float32 values)."""
    if sqrt_mode:
        return _decode_log(payload, n, None if base is None else base.view(np.float32))
    width, _ = _SUB.unpack_from(payload)
    nblocks = -(-n // BLOCK)
    body = memoryview(payload)[_SUB.size :]
    q = np.frombuffer(body[: nblocks * 4], dtype=np.float32).reshape(-1, 1)
    if width not in _WIDTHS:
        raise IntegrityError(f"lossy chunk has code width {width}")
    codes = np.frombuffer(body[nblocks * 4 :], dtype=_WIDTHS[width])
    if codes.size != n or q.size != nblocks:
        raise IntegrityError(f"lossy chunk holds {codes.size} codes, header says {n}")
    bb = np.zeros((nblocks, BLOCK), np.float32) if base is None else _blocks(
        base.view(np.float32))
    return _reconstruct(bb, _blocks(codes.astype(np.int32)), q).reshape(-1)[:n]
