"""Training FLOPs against hand-computed values and the papers' closed forms."""

from __future__ import annotations

import pytest

from forgeline.search.flops import (
    attention_core_forward_flops,
    hardware_flops_per_iteration,
    layer_forward_flops,
    logits_forward_flops,
    model_flops_per_iteration,
    narayanan_flops_per_iteration,
    recompute_flops_per_iteration,
)

# A toy shape small enough to count by hand: B=1, s=4, L=2, h=8, V=16, f=32 (= 4h).
B, S, L, H, V, F = 1, 4, 2, 8, 16, 32


def test_layer_forward_by_hand():
    # GEMMs 2*b*s*(4h^2 + 2hf) = 8 * (256 + 512) = 6144; attention 4*b*s^2*h = 512
    assert layer_forward_flops(B, S, H, F) == 6656
    assert attention_core_forward_flops(B, S, H) == 512
    assert logits_forward_flops(B, S, H, V) == 2 * 4 * 8 * 16 == 1024
    assert layer_forward_flops(B, S, H, F, t=4) == 6656 / 4


def test_model_flops_by_hand_and_korthikanti_closed_form():
    # 3 x (2 layers x 6656 + 1024) = 43008
    assert model_flops_per_iteration(B, S, L, H, V) == 43008
    closed = 72 * B * S * L * H**2 * (1 + S / (6 * H) + V / (12 * L * H))
    assert closed == pytest.approx(43008)


def test_full_recompute_is_narayanan_eq3():
    # 43008 + 2 x 6656 = 56320 = 96 B s l h^2 (1 + s/6h + V/16lh)
    assert hardware_flops_per_iteration(B, S, L, H, V, "full") == 56320
    assert narayanan_flops_per_iteration(B, S, L, H, V) == pytest.approx(56320)


def test_selective_recompute_adds_the_attention_core_only():
    assert recompute_flops_per_iteration(B, S, L, H, "selective") == 2 * 512
    assert hardware_flops_per_iteration(B, S, L, H, V, "selective") == 43008 + 1024
    assert hardware_flops_per_iteration(B, S, L, H, V, "none") == 43008


def test_gpt3_175b_iteration_flops():
    """GPT-3 175B, batch 1536: 72 B s l h^2 (1 + s/6h + V/12lh) worked out by hand:
    72*1536*2048*96*12288^2 = 3.28312e18; factor 1 + 2048/73728 + 51200/14155776 = 1.031395."""
    model = model_flops_per_iteration(1536, 2048, 96, 12288, 51200)
    assert model == pytest.approx(3.28312e18 * 1.031395, rel=1e-5)
    ratio = narayanan_flops_per_iteration(1536, 2048, 96, 12288, 51200) / model
    assert ratio == pytest.approx(4 / 3, rel=0.01)  # recompute ~ one more forward


def test_unknown_recompute_mode_is_rejected():
    with pytest.raises(ValueError, match="recompute='sometimes'"):
        recompute_flops_per_iteration(B, S, L, H, "sometimes")


def test_grouped_query_and_gated_layer_by_hand():
    # b=1, s=4, h=8, f=16, kv width 4 (GQA), three MLP matrices (SwiGLU):
    # projections 2h^2 + 2h kv + 3hf = 128 + 64 + 384 = 576 -> 2bs x 576 = 4608; attention
    # 4 b s^2 h = 512
    assert layer_forward_flops(1, 4, 8, 16, kv=4, mlp_matrices=3) == 4608 + 512
    # kv = h and two matrices is the plain GPT layer
    assert layer_forward_flops(1, 4, 8, 32, kv=8, mlp_matrices=2) == layer_forward_flops(
        1, 4, 8, 32)


def test_spec_model_flops_of_llama3_8b():
    from forgeline.search.flops import spec_model_flops
    from forgeline.search.published import LLAMA3_8B, _llama

    model = _llama("llama3-8b", LLAMA3_8B, 8192, 128256)
    per_token = float(spec_model_flops(model, 1)) / 8192
    # 6 x (the layers' matrices + output head) + 12 L h s attention (norm weights do no
    # matmul work)
    dense = model.layers * (model.params_per_layer - 2 * 4096) + model.vocab * model.hidden
    assert per_token == pytest.approx(6 * dense + 12 * 32 * 4096 * 8192, rel=1e-9)


def test_op_recompute_reruns_every_second_gemm_by_hand():
    # torchtitan's block calls wq, wk, wv, wo, w1, w3, w2 and re-runs the even ones:
    # gated, kv width 4: wk 8x4 + wo 8x8 + w3 8x32 = 352 -> 2 b s 352 = 2816 per layer
    assert recompute_flops_per_iteration(B, S, L, H, "op", F, kv=4, gated=True) == 2 * 2816
    # no gate (wq, wk, wv, wo, w1, w2): wk 8x8 + wo 8x8 + w2 32x8 = 384 -> 3072 per layer
    assert recompute_flops_per_iteration(B, S, L, H, "op", F) == 2 * 3072
