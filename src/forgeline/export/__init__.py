"""A run's artifacts in standard formats: the trained model as a Hugging Face GPT-2
checkpoint, a training checkpoint as an fp32 safetensors state dict and a torch DCP folder,
the search plan as ``ds_config.json`` + a launch command file, the quantized model in the
compressed-tensors layout."""

from __future__ import annotations

from forgeline._lazy import lazy_exports

_EXPORTS = {
    "CheckpointExport": "checkpoint", "export_checkpoint": "checkpoint",
    "write_dcp": "checkpoint",
    "export_hf_model": "hf_model", "gpt2_config": "hf_model",
    "to_gpt2_state_dict": "hf_model",
    "PlanExport": "plan", "export_plan": "plan", "launch_script": "plan",
    "export_quantized": "quantized",
    "ExportOptions": "stage", "ExportResult": "stage", "export_run": "stage",
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
