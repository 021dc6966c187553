"""TrainOperator: Ray Train + DeepSpeed training of the decoder on the run's dataset."""

from __future__ import annotations

from forgeline import pipeline
from forgeline.operators.base import StageOperator
from forgeline.runs import RunLayout
from forgeline.train import TrainOptions, TrainResult


class TrainOperator(StageOperator):
    """Train on the run's dataset; kwargs are :class:`~forgeline.train.TrainOptions` fields."""

    stage = "train"
    options_model = TrainOptions

    def run(self, layout: RunLayout, options: TrainOptions) -> TrainResult:
        return pipeline.train(layout, options)
