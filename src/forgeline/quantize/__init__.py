"""Post-training quantization: calibrated int8/int4 schemes, sensitivity and
accuracy- and latency-aware mixed precision (the algorithm side, here), plus
``forgeline.quantize.runtime`` (layers, kernels, export, loader; torch + safetensors only).

Names are imported lazily so that ``forgeline.quantize.runtime`` can be used for inference
without pydantic or the training stack.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "quantize_model": "api",
    "QuantizeOptions": "options",
    "QuantizeResult": "options",
    "SchemeName": "options",
    "quantize_stage": "stage",
    "load_float_state": "api",
    "QuantizeConfig": "config",
    "ActivationConfig": "config",
    "SensitivityConfig": "config",
    "MixedPrecisionConfig": "config",
    "SCHEMES": "config",
    "QuantizeReport": "report",
    "LayerReport": "report",
    "QuantizedModel": "runtime",
    "save_quantized": "runtime",
    "load_quantized": "runtime",
    "read_map": "runtime",
    "available_backends": "runtime",
    "plot_sensitivity": "sensitivity",
}

__all__ = [
    "ActivationConfig",
    "LayerReport",
    "MixedPrecisionConfig",
    "QuantizeConfig",
    "QuantizeOptions",
    "QuantizeReport",
    "QuantizeResult",
    "QuantizedModel",
    "SCHEMES",
    "SchemeName",
    "SensitivityConfig",
    "available_backends",
    "load_float_state",
    "load_quantized",
    "plot_sensitivity",
    "quantize_model",
    "quantize_stage",
    "read_map",
    "save_quantized",
]

if TYPE_CHECKING:
    from forgeline.quantize.api import load_float_state, quantize_model
    from forgeline.quantize.config import (
        SCHEMES,
        ActivationConfig,
        MixedPrecisionConfig,
        QuantizeConfig,
        SensitivityConfig,
    )
    from forgeline.quantize.options import QuantizeOptions, QuantizeResult, SchemeName
    from forgeline.quantize.report import LayerReport, QuantizeReport
    from forgeline.quantize.runtime import (
        QuantizedModel,
        available_backends,
        load_quantized,
        read_map,
        save_quantized,
    )
    from forgeline.quantize.sensitivity import plot_sensitivity
    from forgeline.quantize.stage import quantize_stage


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"forgeline.quantize.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'forgeline.quantize' has no attribute {name!r}")
