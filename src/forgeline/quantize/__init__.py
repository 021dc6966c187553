"""Post-training quantization: calibrated int8/int4 schemes, sensitivity and
accuracy- and latency-aware mixed precision (the algorithm side, here), plus
``forgeline.quantize.runtime`` (layers, kernels, export, loader; torch + safetensors only).

Names are imported lazily so that ``forgeline.quantize.runtime`` can be used for inference
without pydantic or the training stack.
"""

from __future__ import annotations

from forgeline._lazy import lazy_exports

_EXPORTS = {
    "load_float_state": "api", "quantize_model": "api",
    "ActivationConfig": "config", "MixedPrecisionConfig": "config", "QuantizeConfig": "config",
    "SCHEMES": "config", "SensitivityConfig": "config",
    "QuantizeOptions": "options", "QuantizeResult": "options", "SchemeName": "options",
    "LayerReport": "report", "QuantizeReport": "report",
    "QuantizedModel": "runtime", "available_backends": "runtime", "load_quantized": "runtime",
    "read_map": "runtime", "save_quantized": "runtime",
    "plot_sensitivity": "sensitivity",
    "quantize_stage": "stage",
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
