"""Trained model → a Hugging Face GPT-2 checkpoint (``model.safetensors`` + ``config.json``).

forgeline's ``DecoderLM`` is GPT-2's architecture exactly: learned token and position
embeddings, pre-LayerNorm blocks (eps 1e-5) with one fused qkv projection split q|k|v and
then into heads, causal attention scaled by 1/sqrt(head_dim), an MLP d → ffn_mult·d → d with
exact (erf) GELU, a final LayerNorm and an LM head without bias. The mapping:

====================================  =========================================
forgeline                             ``GPT2LMHeadModel``
====================================  =========================================
``tok.weight`` / ``pos.weight``       ``transformer.wte`` / ``transformer.wpe``
``blocks.i.ln1`` / ``ln2``            ``transformer.h.i.ln_1`` / ``ln_2``
``blocks.i.qkv``                      ``transformer.h.i.attn.c_attn`` (Conv1D)
``blocks.i.proj``                     ``transformer.h.i.attn.c_proj`` (Conv1D)
``blocks.i.fc1`` / ``fc2``            ``transformer.h.i.mlp.c_fc`` / ``c_proj`` (Conv1D)
``ln_f`` / ``head``                   ``transformer.ln_f`` / ``lm_head`` (untied)
====================================  =========================================

GPT-2's ``Conv1D`` stores its weight as ``[in, out]``, so every Linear weight is transposed.
``activation_function="gelu"`` (not GPT-2's default tanh ``gelu_new``) and
``tie_word_embeddings=False`` make the layout exact; tokens are bytes (no BOS/EOS ids).
"""

from __future__ import annotations

from typing import Any

import torch

from forgeline import storage

HF_WEIGHTS_FILE = "model.safetensors"
HF_CONFIG_FILE = "config.json"

_BLOCK_LINEARS = {"qkv": "attn.c_attn", "proj": "attn.c_proj", "fc1": "mlp.c_fc",
                  "fc2": "mlp.c_proj"}
_BLOCK_NORMS = {"ln1": "ln_1", "ln2": "ln_2"}


def gpt2_config(model: dict[str, Any]) -> dict[str, Any]:
    """The ``GPT2Config`` (as ``config.json``) of a forgeline ``ModelConfig`` dump."""
    dropout = float(model.get("dropout", 0.0))
    return {
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "vocab_size": model["vocab_size"],
        "n_positions": model["seq_len"],
        "n_embd": model["d_model"],
        "n_layer": model["n_layers"],
        "n_head": model["n_heads"],
        "n_inner": model["ffn_mult"] * model["d_model"],
        "activation_function": "gelu",
        "layer_norm_epsilon": 1e-5,
        "resid_pdrop": dropout,
        "embd_pdrop": dropout,
        "attn_pdrop": dropout,
        "scale_attn_weights": True,
        "scale_attn_by_inverse_layer_idx": False,
        "reorder_and_upcast_attn": False,
        "tie_word_embeddings": False,
        "bos_token_id": None,
        "eos_token_id": None,
        "torch_dtype": "float32",
    }


def _gpt2_name(name: str) -> tuple[str, bool]:
    """The GPT-2 name of a forgeline parameter, and whether its weight is transposed."""
    top = {"tok.weight": "transformer.wte.weight", "pos.weight": "transformer.wpe.weight",
           "ln_f.weight": "transformer.ln_f.weight", "ln_f.bias": "transformer.ln_f.bias",
           "head.weight": "lm_head.weight"}
    if name in top:
        return top[name], False
    parts = name.split(".")
    if len(parts) == 4 and parts[0] == "blocks":
        _, index, module, kind = parts
        if module in _BLOCK_LINEARS:
            return f"transformer.h.{index}.{_BLOCK_LINEARS[module]}.{kind}", kind == "weight"
        if module in _BLOCK_NORMS:
            return f"transformer.h.{index}.{_BLOCK_NORMS[module]}.{kind}", False
    raise ValueError(f"no GPT-2 counterpart for parameter {name!r}")


def to_gpt2_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """forgeline ``DecoderLM`` weights → ``GPT2LMHeadModel`` weights (fp32, contiguous)."""
    out = {}
    for name, tensor in state.items():
        target, transpose = _gpt2_name(name)
        tensor = tensor.detach().float()
        out[target] = (tensor.t() if transpose else tensor).contiguous()
    return out


def export_hf_model(model_url: str, model_config: dict[str, Any], out_url: str) -> str:
    """Write the GPT-2 ``model.safetensors`` and ``config.json`` of the model at ``model_url``
    under ``out_url`` (each file atomically, the config last); return ``out_url``."""
    from safetensors.torch import load, save

    fs, path = storage.filesystem(model_url, "model_url")
    state = to_gpt2_state_dict(load(fs.cat_file(path)))
    storage.write_bytes_atomic(storage.join(out_url, HF_WEIGHTS_FILE),
                               save(state, metadata={"format": "pt"}))
    storage.write_json_atomic(storage.join(out_url, HF_CONFIG_FILE), gpt2_config(model_config))
    return out_url
