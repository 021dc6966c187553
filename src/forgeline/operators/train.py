"""TrainOperator: Ray Train + DeepSpeed training of the decoder on the run's dataset."""

from __future__ import annotations

from forgeline import pipeline
from forgeline.operators.base import StageOperator
from forgeline.pipeline import TrainStageOptions
from forgeline.runs import RunLayout
from forgeline.train import TrainResult


class TrainOperator(StageOperator):
    """Train on the run's dataset; kwargs are ``forgeline.pipeline.TrainStageOptions`` fields
    (``forgeline.train.TrainOptions`` plus data access: cache, throttling)."""

    stage = "train"
    options_model = TrainStageOptions

    def run(self, layout: RunLayout, options: TrainStageOptions) -> TrainResult:
        return pipeline.train(layout, options)
