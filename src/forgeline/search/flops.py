"""Training FLOPs of a GPT-style decoder (Narayanan et al. SC'21; Korthikanti et al. 2022).

Counting: a matmul of (m x k) by (k x n) is 2mkn FLOPs; backward is twice forward. One
layer's forward is ``2bs(4h^2 + 2hf)/t + 4bs^2h/t`` (QKV, projection, two MLP linears,
then QK^T and attention x V). With f = 4h this is Narayanan's ``24bsh^2 + 4bs^2h``.
All functions accept numpy arrays as well as numbers.
"""

from __future__ import annotations

from typing import Any

RECOMPUTE_MODES = ("none", "selective", "full", "op")
"""Activation recomputation: nothing, the attention core only, the whole layer, or the GEMMs
of :func:`op_recomputed_gemms` (torchtitan's op-level selective checkpointing). A mode's
position is its code in the cost model's arrays."""


def op_recomputed_gemms(h: Any, ffn: Any, kv: Any, gated: bool) -> tuple[tuple[Any, Any], ...]:
    """(input, output) widths of the GEMMs torchtitan's op-level selective checkpointing
    re-runs in backward.

    Its policy (``selective_ac_option = 'op'``, the Llama 3 8B toml's default) saves the
    output of every odd matmul of a block and recomputes the even ones. A block calls wq, wk,
    wv, wo, w1, w3, w2 (w3 only with a gated MLP), so it recomputes wk, wo and w3 — or w2
    without a gate."""
    return (h, kv), (h, h), ((h, ffn) if gated else (ffn, h))


def layer_forward_flops(b: Any, s: Any, h: Any, ffn: Any, t: Any = 1, *, kv: Any = None,
                        mlp_matrices: int = 2) -> Any:
    """Forward FLOPs of one transformer layer per tensor-parallel rank.

    ``kv`` is the key/value width (kv_heads x head_dim; ``None`` = h, multi-head);
    grouped-query attention shrinks the K and V projections only. ``mlp_matrices`` is 3
    for a gated (SwiGLU) MLP. With kv = h and two matrices: ``2bs(4h^2 + 2hf) + 4bs^2h``.
    """
    kv = h if kv is None else kv
    proj = 2 * h * h + 2 * h * kv + mlp_matrices * h * ffn
    return (2 * b * s * proj + 4 * b * s * s * h) / t


def attention_core_forward_flops(b: Any, s: Any, h: Any, t: Any = 1) -> Any:
    """QK^T and attention x V: what selective recomputation re-runs (Korthikanti §5)."""
    return 4 * b * s * s * h / t


def logits_forward_flops(b: Any, s: Any, h: Any, vocab: Any, t: Any = 1) -> Any:
    """Output projection to the vocabulary."""
    return 2 * b * s * h * vocab / t


def model_flops_per_iteration(batch: Any, s: Any, layers: Any, h: Any, vocab: Any,
                              ffn: Any = None, *, kv: Any = None, mlp_matrices: int = 2) -> Any:
    """Model FLOPs of one step (forward + backward, no recomputation).

    With ffn = 4h this equals ``72 B s l h^2 (1 + s/(6h) + V/(12 l h))`` (Korthikanti).
    """
    ffn = 4 * h if ffn is None else ffn
    layer = layer_forward_flops(batch, s, h, ffn, kv=kv, mlp_matrices=mlp_matrices)
    return 3 * (layers * layer + logits_forward_flops(batch, s, h, vocab))


def spec_model_flops(model: Any, batch: Any) -> Any:
    """:func:`model_flops_per_iteration` of a :class:`ModelSpec` for ``batch`` sequences."""
    return model_flops_per_iteration(batch, model.seq_len, model.layers, model.hidden,
                                     model.vocab, model.ffn_hidden, kv=model.kv_hidden,
                                     mlp_matrices=model.mlp_matrices)


def recompute_flops_per_iteration(batch: Any, s: Any, layers: Any, h: Any, recompute: str,
                                  ffn: Any = None, *, kv: Any = None, gated: bool = False
                                  ) -> Any:
    """Extra forward FLOPs spent re-creating dropped activations."""
    ffn = 4 * h if ffn is None else ffn
    kv = h if kv is None else kv
    if recompute == "none":
        return 0 * batch
    if recompute == "selective":
        return layers * attention_core_forward_flops(batch, s, h)
    if recompute == "full":
        return layers * layer_forward_flops(batch, s, h, ffn, kv=kv,
                                            mlp_matrices=3 if gated else 2)
    if recompute == "op":
        widths = op_recomputed_gemms(h, ffn, kv, gated)
        return layers * 2 * batch * s * sum(i * o for i, o in widths)
    raise ValueError(f"recompute={recompute!r}: choose from {RECOMPUTE_MODES}")


def hardware_flops_per_iteration(batch: Any, s: Any, layers: Any, h: Any, vocab: Any,
                                 recompute: str = "none", *, ffn: Any = None) -> Any:
    """Model FLOPs plus recomputation (Korthikanti's hardware FLOPs).

    With full recomputation and ffn = 4h this is Narayanan et al. eq. (3):
    ``96 B s l h^2 (1 + s/(6h) + V/(16 l h))``.
    """
    return (model_flops_per_iteration(batch, s, layers, h, vocab, ffn)
            + recompute_flops_per_iteration(batch, s, layers, h, recompute, ffn))


def narayanan_flops_per_iteration(batch: Any, s: Any, layers: Any, h: Any, vocab: Any) -> Any:
    """Narayanan et al. SC'21 eq. (3), the count behind their Table 1 teraFLOP/s."""
    return 96 * batch * s * layers * h * h * (1 + s / (6 * h) + vocab / (16 * layers * h))
