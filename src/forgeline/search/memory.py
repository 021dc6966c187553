"""Memory per device: activations (Korthikanti et al. 2022) and model states (ZeRO, Rajbhandari
et al. SC'20), plus the DeepSpeed-specific buffers the ZeRO paper leaves out.

All functions accept numpy arrays as well as numbers; results are bytes.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from forgeline.search.flops import RECOMPUTE_MODES

FP32_GRAD_BYTES = 4
"""DeepSpeed converts a shard's 16-bit gradient to fp32 before the optimizer step."""

DEFAULT_SUB_GROUP_ELEMENTS = 1_000_000_000
"""DeepSpeed ZeRO-3 ``sub_group_size`` default: the fp32 gradient lives one sub-group at a time."""


def activation_bytes_per_layer(s: Any, b: Any, h: Any, heads: Any, ffn: Any = None, t: Any = 1,
                               *, sequence_parallel: Any = False, recompute: Any = "none",
                               act_bytes: int = 2, dropout: bool = True,
                               flash_attention: bool = False, kv: Any = None,
                               gated: bool = False) -> Any:
    """Activation bytes one layer keeps for backward, per tensor-parallel rank.

    Korthikanti et al. Table 2 with f = 4h, 16-bit activations and 1-byte dropout masks:
    ``sbh(34 + 5as/h)`` alone, ``sbh(10 + 24/t + 5as/(ht))`` with TP, ``sbh/t(34 + 5as/h)``
    with TP+SP, ``sbh(10 + 24/t)`` TP+selective, ``34sbh/t`` TP+SP+selective, ``2sbh``
    full recomputation (``2sbh/t`` with SP). Generalised here to any f, element size and
    no-dropout / fused-attention models. Op-level selective recomputation (torchtitan) keeps
    the layer input, the outputs of the GEMMs it does not re-run (wq, wv, w1 and, with a
    gate, w2: :func:`~forgeline.search.flops.op_recomputed_gemms`) and the attention output
    with its softmax statistics: ``sbh(2 + 2/t + kv/(ht)) + sbf/t`` elements gated (the w2
    output counts with the input, split by SP), one ``sbh`` less without a gate.
    ``recompute`` is a mode name or an array of codes
    (:data:`~forgeline.search.flops.RECOMPUTE_MODES` positions).
    """
    ffn = 4 * h if ffn is None else ffn
    code = _recompute_code(recompute)
    e, mask = act_bytes, (1 if dropout else 0)
    sbh, sbf, att = s * b * h, s * b * ffn, heads * s * s * b
    sp_div = np.where(sequence_parallel, t, 1)
    # LayerNorm inputs, QKV input, FC1 input, two dropout masks: not split by TP alone.
    replicated = sbh * (4 * e + 2 * mask)
    # Q, K, V, projection input, GeLU input and output: split by TP. Grouped-query
    # attention narrows K and V to kv; a gated MLP keeps gate, up and their product.
    kv_ratio = 1.0 if kv is None else kv / h
    split = sbh * (2 + 2 * kv_ratio) * e + sbf * (3 if gated else 2) * e
    # softmax output, dropout mask and output; fused attention keeps only an fp32
    # log-sum-exp per row (no s x s matrix)
    core = heads * s * b * 4 if flash_attention else att * (e * (2 if dropout else 1) + mask)
    keep_core = np.where(code == 1, 0, core)
    layer = replicated / sp_div + (split + keep_core) / t
    full = e * sbh / sp_div
    # op-level: wq, attention and wv outputs, w1 output (split); input (+ w2 output if gated)
    op = (e * sbh * (2 if gated else 1) / sp_div
          + (sbh * (2 + kv_ratio) * e + sbf * e + core) / t)
    return np.select([code == 2, code == 3], [full, op], layer)


def recompute_working_bytes(s: Any, b: Any, h: Any, heads: Any, ffn: Any = None, t: Any = 1,
                            *, sequence_parallel: Any = False, recompute: Any = "none",
                            act_bytes: int = 2, dropout: bool = True,
                            flash_attention: bool = False, kv: Any = None,
                            gated: bool = False) -> Any:
    """Extra bytes alive while one layer is recomputed during backward."""
    code = _recompute_code(recompute)
    kw = dict(sequence_parallel=sequence_parallel, act_bytes=act_bytes, dropout=dropout,
              flash_attention=flash_attention, kv=kv, gated=gated)
    whole = activation_bytes_per_layer(s, b, h, heads, ffn, t, recompute="none", **kw)
    without_core = activation_bytes_per_layer(s, b, h, heads, ffn, t, recompute="selective", **kw)
    op = activation_bytes_per_layer(s, b, h, heads, ffn, t, recompute="op", **kw)
    return np.select([code == 2, code == 1, code == 3], [whole, whole - without_core, whole - op],
                     0)


def zero_model_state_bytes(params: Any, dp: Any, stage: Any, param_bytes: int = 2,
                           grad_bytes: int = 2, optimizer_bytes: int = 12) -> Any:
    """Model states per device as in the ZeRO paper (Fig. 1): (2 + 2 + K) Psi with K = 12.

    stage 0: ``(p+g+K) Psi``; 1: ``(p+g) Psi + K Psi/N``; 2: ``p Psi + (g+K) Psi/N``;
    3: ``(p+g+K) Psi/N``.
    """
    stage = np.asarray(stage)
    p, g, k = params * param_bytes, params * grad_bytes, params * optimizer_bytes
    return np.select(
        [stage == 0, stage == 1, stage == 2],
        [p + g + k, p + g + k / dp, p + (g + k) / dp],
        (p + g + k) / dp,
    )


def deepspeed_model_state_bytes(params: Any, dp: Any, stage: Any, offload: Any = 0, *,
                                param_bytes: int = 2, grad_bytes: int = 2,
                                optimizer_bytes: int = 12, largest_module_params: Any = 0,
                                sub_group_elements: int = DEFAULT_SUB_GROUP_ELEMENTS) -> Any:
    """Device bytes of model states as DeepSpeed allocates them.

    Differences from :func:`zero_model_state_bytes`: stages 1-3 add the fp32 gradient
    of the local shard made before the step (stage 3: one sub-group at a time); stage 3
    also holds the largest module's gathered parameters and gradients; ``offload``
    (0 none, 1 optimizer, 2 parameters) moves optimizer states and the gradient shard
    (1) and also the parameter shard (2) to the host, as DeepSpeed's estimators assume.
    """
    stage, offload = np.asarray(stage), np.asarray(offload)
    fp32g = FP32_GRAD_BYTES if grad_bytes < FP32_GRAD_BYTES else 0
    shard = params / dp
    p, g, k = param_bytes, grad_bytes, optimizer_bytes
    working3 = largest_module_params * (p + g)
    on_device = np.select(
        [stage == 0, stage == 1, stage == 2],
        [params * (p + g + k),
         params * (p + g) + shard * (k + fp32g),
         params * p + shard * (g + k + fp32g)],
        shard * (p + g + k) + np.minimum(shard, sub_group_elements) * fp32g + working3,
    )
    offloaded = np.select(
        [stage == 0, stage == 1, stage == 2],
        [params * (p + g + k), params * (p + g), params * p],
        shard * p + working3,
    )
    params_off = working3
    return np.where(offload == 2, params_off, np.where(offload == 1, offloaded, on_device))


def host_offload_bytes(params: Any, dp: Any, offload: Any, param_bytes: int = 2,
                       optimizer_bytes: int = 12) -> Any:
    """Host bytes one device's offloaded shard needs: fp32 gradient + optimizer states
    (+ the 16-bit parameter shard when parameters are offloaded too)."""
    offload = np.asarray(offload)
    shard = params / dp
    opt = shard * (optimizer_bytes + FP32_GRAD_BYTES)
    return np.where(offload == 0, 0.0, np.where(offload == 2, opt + shard * param_bytes, opt))


def _recompute_code(recompute: Any) -> Any:
    if isinstance(recompute, str):
        return np.asarray(RECOMPUTE_MODES.index(recompute))
    return np.asarray(recompute)
