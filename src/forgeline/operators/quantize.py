"""QuantizeOperator: post-training quantization of the run's trained model."""

from __future__ import annotations

from forgeline import pipeline
from forgeline.operators.base import StageOperator
from forgeline.quantize.stage import QuantizeOptions, QuantizeResult
from forgeline.runs import RunLayout


class QuantizeOperator(StageOperator):
    """Quantize; kwargs are ``forgeline.quantize.stage.QuantizeOptions`` fields."""

    stage = "quantize"
    options_model = QuantizeOptions

    def run(self, layout: RunLayout, options: QuantizeOptions) -> QuantizeResult:
        return pipeline.quantize(layout, options)
