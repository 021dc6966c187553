"""Training-state capture: nested state ↔ (JSON skeleton, named tensors), and RNG states.

Tensors (torch or numpy) become named leaves stored as chunks; everything else (ints,
floats, strings, tuples, dicts with int keys as in optimizer state) goes into the manifest's
JSON skeleton. Anything else is refused with its path, so nothing is pickled.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from forgeline.errors import ConfigError

TensorLike = torch.Tensor | np.ndarray


def flatten_state(state: Any) -> tuple[Any, dict[str, TensorLike]]:
    """Split ``state`` into a JSON-able skeleton and ``{name: tensor}`` (names are paths)."""
    tensors: dict[str, TensorLike] = {}

    def name_for(path: list[str]) -> str:
        base = "/".join(path) or "tensor"
        name, n = base, 1
        while name in tensors:
            name, n = f"{base}#{n}", n + 1
        return name

    def walk(obj: Any, path: list[str]) -> Any:
        if isinstance(obj, torch.Tensor):
            name = name_for(path)
            tensors[name] = obj
            return {"__t__": name}
        if isinstance(obj, np.ndarray):
            name = name_for(path)
            tensors[name] = obj
            return {"__np__": name}
        if obj is None or isinstance(obj, (bool, str)):
            return obj
        if isinstance(obj, int):
            return int(obj)
        if isinstance(obj, float):
            return float(obj) if math.isfinite(obj) else {"__f__": repr(float(obj))}
        if isinstance(obj, (np.integer, np.floating, np.bool_)):
            return walk(obj.item(), path)
        if isinstance(obj, torch.dtype):
            return {"__dtype__": str(obj).removeprefix("torch.")}
        if isinstance(obj, tuple):
            return {"__tuple__": [walk(v, [*path, str(i)]) for i, v in enumerate(obj)]}
        if isinstance(obj, list):
            return [walk(v, [*path, str(i)]) for i, v in enumerate(obj)]
        if isinstance(obj, Mapping):
            plain = all(isinstance(k, str) and not k.startswith("__") for k in obj)
            if plain:
                return {k: walk(v, [*path, k]) for k, v in obj.items()}
            items = []
            for k, v in obj.items():
                if not (k is None or isinstance(k, (bool, int, float, str))):
                    raise ConfigError("/".join(path) or "state", k,
                                      "dict keys must be str, int, float, bool or None")
                items.append([walk(k, path), walk(v, [*path, str(k)])])
            return {"__kv__": items}
        raise ConfigError("/".join(path) or "state", type(obj).__name__,
                          "cannot be checkpointed (tensors, arrays, numbers, strings, "
                          "lists, tuples and dicts only)")

    return walk(state, []), tensors


def unflatten_state(skeleton: Any, tensors: Mapping[str, TensorLike]) -> Any:
    """Inverse of :func:`flatten_state`; numpy leaves come back as numpy arrays."""
    if isinstance(skeleton, list):
        return [unflatten_state(v, tensors) for v in skeleton]
    if not isinstance(skeleton, dict):
        return skeleton
    if "__t__" in skeleton:
        value = tensors[skeleton["__t__"]]
        return value if isinstance(value, torch.Tensor) else torch.from_numpy(value)
    if "__np__" in skeleton:
        value = tensors[skeleton["__np__"]]
        return value.numpy() if isinstance(value, torch.Tensor) else value
    if "__f__" in skeleton:
        return float(skeleton["__f__"])
    if "__dtype__" in skeleton:
        return getattr(torch, skeleton["__dtype__"])
    if "__tuple__" in skeleton:
        return tuple(unflatten_state(v, tensors) for v in skeleton["__tuple__"])
    if "__kv__" in skeleton:
        return {unflatten_state(k, tensors): unflatten_state(v, tensors)
                for k, v in skeleton["__kv__"]}
    return {k: unflatten_state(v, tensors) for k, v in skeleton.items()}


def capture_rng() -> dict[str, Any]:
    """Python, numpy and torch (CPU, and CUDA when present) generator states."""
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: Mapping[str, Any]) -> None:
    """Put back the generator states captured by :func:`capture_rng`."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    np.random.set_state(tuple(state["numpy"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(list(state["cuda"]))
