"""Training stage: a preset, Hugging Face or factory model trained by Ray Train + DeepSpeed."""

from __future__ import annotations

from forgeline._lazy import lazy_exports

_EXPORTS = {
    "BatchSource": "batches", "ShuffledBatches": "batches",
    "ModelConfig": "config", "ModelKind": "config", "ModelOptions": "config",
    "ModelSize": "config", "ThrottleOptions": "config",
    "TrainCache": "config", "TrainConfig": "config", "TrainOptions": "config",
    "TrainResult": "config", "default_deepspeed_config": "config",
    "skip_unused_deepspeed_ops": "deepspeed_ops",
    "MODEL_CONFIG_FILE": "loop", "MODEL_FILE": "loop", "evaluate": "loop",
    "train_loop_per_worker": "loop",
    "DecoderLM": "model", "count_params": "model", "lm_loss": "model",
    "per_sample_loss": "model",
    "HFCausalLM": "models", "build_model": "models", "build_saved_model": "models",
    "describe_model": "models", "load_safetensors_folder": "models",
    "resolve_model": "models", "save_hf_folder": "models", "save_trained_model": "models",
    "run_training": "run",
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)

