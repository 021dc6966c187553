"""Training stage: a small decoder LM trained by Ray Train (TorchTrainer) with DeepSpeed."""

from forgeline.train.batches import BatchSource, ShuffledBatches
from forgeline.train.config import (
    TrainConfig,
    TrainOptions,
    TrainResult,
    default_deepspeed_config,
)
from forgeline.train.loop import MODEL_CONFIG_FILE, MODEL_FILE, evaluate, train_loop_per_worker
from forgeline.train.model import (
    DecoderLM,
    ModelConfig,
    ModelSize,
    count_params,
    lm_loss,
    per_sample_loss,
)
from forgeline.train.run import run_training

__all__ = [
    "MODEL_CONFIG_FILE",
    "MODEL_FILE",
    "BatchSource",
    "DecoderLM",
    "ModelConfig",
    "ModelSize",
    "ShuffledBatches",
    "TrainConfig",
    "TrainOptions",
    "TrainResult",
    "count_params",
    "default_deepspeed_config",
    "evaluate",
    "lm_loss",
    "per_sample_loss",
    "run_training",
    "train_loop_per_worker",
]
