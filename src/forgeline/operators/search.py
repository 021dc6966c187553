"""StrategySearchOperator: choose the training stage's DeepSpeed config and worker count."""

from __future__ import annotations

from forgeline import pipeline
from forgeline.operators.base import StageOperator
from forgeline.runs import RunLayout
from forgeline.search.stage import StrategyOptions, StrategyResult


class StrategySearchOperator(StageOperator):
    """Search plans; kwargs are ``forgeline.search.stage.StrategyOptions`` fields. The run's
    train stage then runs the best plan as is."""

    stage = "search"
    options_model = StrategyOptions

    def run(self, layout: RunLayout, options: StrategyOptions) -> StrategyResult:
        return pipeline.search(layout, options)
