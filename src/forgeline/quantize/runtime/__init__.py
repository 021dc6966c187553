"""The quantized-model runtime: formats, layers, kernels, the artifact writer and loader.

Torch + safetensors only (fsspec for non-local URLs), so inference code can load an
artifact without pydantic, Ray or the training stack. The algorithm side
(``forgeline.quantize``: calibration, schemes, sensitivity) builds what lives here.

- ``qtensor``: integer weight/activation formats (quantize, dequantize, pack).
- ``qmodules``: ``QuantModule``, the quantized stand-in of one float layer.
- ``qmodel``: ``QuantizedModel``, a float model with its layers swapped.
- ``backends``: kernels per device (``dequant``, ``cpu_int8``, ``fbgemm``, ``torchao`` …).
- ``conv1d``: transformers' ``Conv1D`` (GPT-2) as the ``nn.Linear`` it is, and back.
- ``architecture``: the JSON module tree an artifact records and checks against.
- ``export`` / ``loader``: write and read the safetensors + ``quantization.json`` artifact.
"""

from __future__ import annotations

from forgeline.quantize.runtime.backends import (
    BACKENDS,
    Backend,
    available_backends,
    install_backend,
    resolve_backend,
)
from forgeline.quantize.runtime.export import save_quantized
from forgeline.quantize.runtime.loader import load_quantized, read_map
from forgeline.quantize.runtime.qmodel import QuantizedModel
from forgeline.quantize.runtime.qmodules import QuantModule
from forgeline.quantize.runtime.qtensor import QuantizedWeight

__all__ = [
    "BACKENDS",
    "Backend",
    "QuantModule",
    "QuantizedModel",
    "QuantizedWeight",
    "available_backends",
    "install_backend",
    "load_quantized",
    "read_map",
    "resolve_backend",
    "save_quantized",
]
