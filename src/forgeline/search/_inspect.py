"""Read a decoder transformer's shape off a ``torch.nn.Module`` (for ``ModelSpec.from_module``)."""

from __future__ import annotations

from typing import Any

from forgeline.errors import ConfigError

_HEAD_ATTRS = ("num_heads", "n_head", "n_heads", "num_attention_heads", "nhead", "heads")
_DTYPES = {"torch.float32": "fp32", "torch.bfloat16": "bf16", "torch.float16": "fp16"}


def _blocks(module: Any) -> Any:
    """The ModuleList of identical blocks holding the most parameters."""
    from torch import nn

    best, best_params = None, 0
    for sub in module.modules():
        if isinstance(sub, nn.ModuleList) and len(sub) > 0:
            kinds = {type(child) for child in sub}
            params = sum(p.numel() for p in sub.parameters())
            if len(kinds) == 1 and params > best_params:
                best, best_params = sub, params
    return best


def _heads(block: Any) -> int | None:
    from torch import nn

    for sub in block.modules():
        if isinstance(sub, nn.MultiheadAttention):
            return int(sub.num_heads)
        for attr in _HEAD_ATTRS:
            value = getattr(sub, attr, None)
            if isinstance(value, int) and value > 0:
                return value
    return None


def inspect_module(module: Any) -> dict[str, Any]:
    """Fields of ``ModelSpec`` (all but seq_len/name) read from ``module``."""
    from torch import nn

    embeddings = [m for m in module.modules() if isinstance(m, nn.Embedding)]
    if not embeddings:
        raise ConfigError("module", type(module).__name__, "has no nn.Embedding (token table)")
    word = max(embeddings, key=lambda e: e.num_embeddings)
    hidden, vocab = int(word.embedding_dim), int(word.num_embeddings)
    positional = any(e is not word and e.embedding_dim == hidden for e in embeddings)

    blocks = _blocks(module)
    if blocks is None:
        raise ConfigError("module", type(module).__name__, "has no nn.ModuleList of blocks")
    block = blocks[0]
    heads = _heads(block)
    if heads is None:
        raise ConfigError("module", type(module).__name__,
                          f"cannot find the head count (nn.MultiheadAttention or {_HEAD_ATTRS})")

    ffn = 0
    for lin in (m for m in block.modules() if isinstance(m, nn.Linear)):
        if lin.in_features == hidden and lin.out_features not in (hidden, 2 * hidden, 3 * hidden):
            ffn = max(ffn, int(lin.out_features))
        elif lin.out_features == hidden and lin.in_features != hidden:
            ffn = max(ffn, int(lin.in_features))
    if ffn == 0 and isinstance(getattr(block, "linear1", None), nn.Linear):
        ffn = int(block.linear1.out_features)

    heads_out = [m for m in module.modules() if isinstance(m, nn.Linear)
                 and m.out_features == vocab and m.in_features == hidden]
    tied = not heads_out or any(lin.weight is word.weight for lin in heads_out)
    dropout = any(isinstance(m, nn.Dropout) and m.p > 0 for m in module.modules())
    dropout = dropout or any(float(getattr(m, "dropout", 0.0) or 0.0) > 0
                             for m in block.modules() if isinstance(m, nn.MultiheadAttention))
    dtype = _DTYPES.get(str(next(module.parameters()).dtype), "fp32")
    return {
        "layers": len(blocks), "hidden": hidden, "heads": heads, "ffn_hidden": ffn or 4 * hidden,
        "vocab": vocab, "tied_embeddings": tied, "learned_position_embeddings": positional,
        "dropout": dropout, "param_dtype": dtype, "grad_dtype": dtype,
    }
