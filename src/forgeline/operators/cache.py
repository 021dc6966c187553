"""WarmCacheOperator: fill the cache server with the previous run's most important samples."""

from __future__ import annotations

from forgeline import pipeline
from forgeline.cache import WarmupResult
from forgeline.operators.base import StageOperator
from forgeline.pipeline import TrainStageOptions
from forgeline.runs import RunLayout


class WarmCacheOperator(StageOperator):
    """Warm the cache before training; kwargs are ``TrainStageOptions`` fields (the same data
    access the train stage will use). Useful on a long-lived Ray cluster (``RAY_ADDRESS``)."""

    stage = "cache"
    options_model = TrainStageOptions

    def run(self, layout: RunLayout, options: TrainStageOptions) -> WarmupResult:
        return pipeline.warm(layout, options)
