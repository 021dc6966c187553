"""The quantized model in the compressed-tensors layout that transformers and vLLM read.

Rebuilds the quantize stage's artifact on the trained model's skeleton (its ``model.json``)
and writes it with ``forgeline.quantize.runtime.hf_compressed`` (which layers map, and how, is
said there and in ``docs/quantize.md``).
"""

from __future__ import annotations

from typing import Any


def export_quantized(model_url: str, model_json_url: str, out_url: str) -> dict[str, Any]:
    """Write the quantized model at ``model_url`` under ``out_url``; return what
    ``save_compressed_tensors`` returns (``url``, ``mapped_layers``, ``ignored_layers`` …)."""
    from forgeline.quantize import load_quantized
    from forgeline.quantize.runtime.hf_compressed import save_compressed_tensors
    from forgeline.train.models import build_saved_model

    qmodel = load_quantized(model_url, lambda: build_saved_model(model_json_url),
                            backend="dequant")
    return save_compressed_tensors(qmodel, out_url)
