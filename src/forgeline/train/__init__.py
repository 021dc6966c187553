"""Training stage: a small decoder LM trained by Ray Train (TorchTrainer) with DeepSpeed."""

from __future__ import annotations

from forgeline._lazy import lazy_exports

_EXPORTS = {
    "BatchSource": "batches", "ShuffledBatches": "batches",
    "ModelConfig": "config", "ModelSize": "config", "ThrottleOptions": "config",
    "TrainCache": "config", "TrainConfig": "config", "TrainOptions": "config",
    "TrainResult": "config", "default_deepspeed_config": "config",
    "MODEL_CONFIG_FILE": "loop", "MODEL_FILE": "loop", "evaluate": "loop",
    "train_loop_per_worker": "loop",
    "DecoderLM": "model", "count_params": "model", "lm_loss": "model",
    "per_sample_loss": "model",
    "run_training": "run",
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)

