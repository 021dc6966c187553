"""QuantizedModel: a float model whose supported layers were swapped for QuantModules.

Torch only. Its ``state_dict()`` is the artifact's tensors and ``quantization_map()`` the
artifact's JSON, so what runs in memory is exactly what ``save_quantized`` writes.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from forgeline.quantize.runtime.qmodules import QuantModule

FORMAT = "forgeline.quantize/1"


def replace_submodule(root: nn.Module, name: str, new: nn.Module) -> nn.Module:
    """Put ``new`` at dotted path ``name`` inside ``root``; return what was there."""
    parent_name, _, child = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    old = getattr(parent, child)
    setattr(parent, child, new)
    return old


class QuantizedModel(nn.Module):
    """Inference wrapper: ``forward`` is the wrapped model's; kernels come from a backend."""

    def __init__(self, model: nn.Module, architecture: dict[str, Any]) -> None:
        super().__init__()
        self.model = model
        self.architecture = architecture
        self.backend = "dequant"
        """What runs: each kernel and how many layers use it (see ``set_backend``)."""
        self.kernels: dict[str, str] = {}

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.model(*args, **kwargs)

    def layers(self) -> dict[str, QuantModule]:
        """Quantized layers by module name (relative to the wrapped model)."""
        return {n: m for n, m in self.model.named_modules() if isinstance(m, QuantModule)}

    def quantization_map(self) -> dict[str, Any]:
        """The JSON map: format, architecture, and every quantized layer's spec."""
        return {
            "format": FORMAT,
            "architecture": self.architecture,
            "layers": {n: m.spec for n, m in self.layers().items()},
        }

    def set_backend(self, name: str = "auto") -> dict[str, str]:
        """Install a runtime backend's kernels; returns layer -> kernel actually used.

        Call it again after moving the model to another device (kernels keep packed or
        decoded weights on the device they were installed on)."""
        from forgeline.quantize.runtime.backends import install_backend, kernel_summary

        self.kernels = install_backend(self.model, name)
        self.backend = kernel_summary(self.kernels)
        return self.kernels

    def resident_bytes(self) -> int:
        """Bytes this model holds in memory now: parameters, buffers and what kernels keep
        (decoded fp32 caches, packed int8 weights), each storage counted once."""
        seen: set[int] = set()
        total = 0
        tensors = list(self.parameters()) + list(self.buffers())
        for m in self.layers().values():
            tensors += [t for t in m.runtime_state.values() if isinstance(t, torch.Tensor)]
            total += m.runtime_state.get("packed_bytes", 0)
        for t in tensors:
            key = t.untyped_storage().data_ptr()
            if key not in seen:
                seen.add(key)
                total += t.untyped_storage().nbytes()
        return total

    def linear_weight_bytes(self) -> tuple[int, int]:
        """``(fp32 bytes, stored bytes)`` of ``nn.Linear`` weights (quantized ones only)."""
        fp, q = 0, 0
        for m in self.layers().values():
            if m.spec["kind"] == "linear":
                fp += m.rows * m.cols * 4
                q += m.quantized_nbytes()
        return fp, q

    def stored_bytes(self) -> int:
        """Bytes of every tensor the artifact holds (quantized and float parts)."""
        return sum(t.numel() * t.element_size() for t in self.state_dict().values())


__all__ = ["FORMAT", "QuantizedModel", "replace_submodule"]
