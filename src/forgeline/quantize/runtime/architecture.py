"""A JSON description of a module tree: every module's name, type and constructor args.

Used two ways. (1) To *check* that a user-supplied float skeleton matches an artifact
(names, types, shapes) before any tensor is loaded. (2) To *rebuild* the model with no
user code at all, which is possible only when the whole tree is ``nn.Sequential`` of
torch built-in layers from a fixed allow-list (their forward is defined by the tree).
Types are never imported by name from the JSON: the allow-list maps names to classes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from forgeline.quantize.runtime.conv1d import conv1d_args, float_identity, is_hf_conv1d
from forgeline.quantize.runtime.qmodules import QuantModule


def _type_name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _conv_args(m: nn.Module) -> dict[str, Any]:
    return {
        "in_channels": m.in_channels,
        "out_channels": m.out_channels,
        "kernel_size": list(m.kernel_size),
        "stride": list(m.stride),
        "padding": m.padding if isinstance(m.padding, str) else list(m.padding),
        "dilation": list(m.dilation),
        "groups": m.groups,
        "bias": m.bias is not None,
        "padding_mode": m.padding_mode,
    }


_ARGS: dict[type, Callable[[Any], dict[str, Any]]] = {
    nn.Sequential: lambda m: {},
    nn.Linear: lambda m: {
        "in_features": m.in_features,
        "out_features": m.out_features,
        "bias": m.bias is not None,
    },
    nn.Conv1d: _conv_args,
    nn.Conv2d: _conv_args,
    nn.Embedding: lambda m: {
        "num_embeddings": m.num_embeddings,
        "embedding_dim": m.embedding_dim,
        "padding_idx": m.padding_idx,
    },
    nn.LayerNorm: lambda m: {
        "normalized_shape": list(m.normalized_shape),
        "eps": m.eps,
        "elementwise_affine": m.elementwise_affine,
        "bias": getattr(m, "bias", None) is not None,
    },
    nn.ReLU: lambda m: {},
    nn.GELU: lambda m: {"approximate": m.approximate},
    nn.SiLU: lambda m: {},
    nn.Tanh: lambda m: {},
    nn.Sigmoid: lambda m: {},
    nn.Identity: lambda m: {},
    nn.Dropout: lambda m: {"p": m.p},
    nn.Flatten: lambda m: {"start_dim": m.start_dim, "end_dim": m.end_dim},
    nn.Softmax: lambda m: {"dim": m.dim},
    nn.LogSoftmax: lambda m: {"dim": m.dim},
}
_BY_NAME = {_type_name(cls): cls for cls in _ARGS}


def constructor_args(m: nn.Module) -> dict[str, Any] | None:
    """JSON constructor args of an allow-listed torch layer (or of the allow-listed class
    it derives from), ``{nf, nx}`` of a transformers ``Conv1D``, else ``None``."""
    if is_hf_conv1d(m):
        return conv1d_args(m)
    fn = next((_ARGS[c] for c in type(m).__mro__ if c in _ARGS), None)
    return None if fn is None else fn(m)


def type_name(m: nn.Module) -> str:
    """The qualified class name; for a Linear standing in for a ``Conv1D``, Conv1D's."""
    identity = float_identity(m)
    return identity[0] if identity else _type_name(type(m))


def describe(model: nn.Module) -> dict[str, Any]:
    """``{"modules": [{"name", "type", "args"}...], "rebuildable": bool}`` of ``model``.

    Quantized layers describe the float layer they replaced, so a quantized model and
    its float original have the same description (a quantized ``Conv1D`` records the
    Conv1D: its spec's ``float_args``).
    """
    mods = []
    for name, m in model.named_modules():
        if isinstance(m, QuantModule):
            entry = {"name": name, "type": m.spec["float_type"],
                     "args": m.spec.get("float_args", m.spec["args"])}
        else:
            identity = float_identity(m)  # a Linear standing in for a Conv1D
            entry = {"name": name, "type": type_name(m),
                     "args": identity[1] if identity else constructor_args(m)}
        mods.append(entry)
    rebuildable = (
        bool(mods)
        and mods[0]["type"] == _type_name(nn.Sequential)
        and all(e["type"] in _BY_NAME for e in mods)
    )
    return {"modules": mods, "rebuildable": rebuildable}


def rebuild(desc: dict[str, Any]) -> nn.Module:
    """Construct the float model of a rebuildable description (fresh weights)."""
    if not desc.get("rebuildable"):
        raise ValueError("architecture is not a pure nn.Sequential of built-in layers")
    root: nn.Module | None = None
    for e in desc["modules"]:
        args = dict(e["args"])
        for k in ("kernel_size", "stride", "dilation", "normalized_shape"):
            if isinstance(args.get(k), list):
                args[k] = tuple(args[k])
        if isinstance(args.get("padding"), list):
            args["padding"] = tuple(args["padding"])
        m = _BY_NAME[e["type"]](**args)
        if e["name"] == "":
            root = m
        else:
            parent_name, _, child = e["name"].rpartition(".")
            root.get_submodule(parent_name).add_module(child, m)
    return root


def differences(desc: dict[str, Any], model: nn.Module) -> list[str]:
    """Where ``model`` (a float skeleton) departs from ``desc``; empty when it matches."""
    have = {e["name"]: e for e in describe(model)["modules"]}
    out = []
    for e in desc["modules"]:
        got = have.get(e["name"])
        label = e["name"] or "<root>"
        if got is None:
            out.append(f"module '{label}' ({e['type']}) missing")
        elif got["type"] != e["type"]:
            out.append(f"module '{label}' is {got['type']}, artifact has {e['type']}")
        elif e["args"] is not None and got["args"] != e["args"]:
            out.append(f"module '{label}' has {got['args']}, artifact has {e['args']}")
    extra = sorted(set(have) - {e["name"] for e in desc["modules"]})
    out += [f"module '{n}' not in the artifact" for n in extra]
    return out
