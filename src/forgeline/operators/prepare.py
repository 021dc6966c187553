"""PrepareDatasetOperator: corpus → Parquet token shards + manifest."""

from __future__ import annotations

from forgeline import pipeline
from forgeline.datasets import DatasetConfig, DatasetResult
from forgeline.operators.base import StageOperator
from forgeline.runs import RunLayout


class PrepareDatasetOperator(StageOperator):
    """Build the run's token dataset; kwargs are ``forgeline.datasets.DatasetConfig`` fields."""

    stage = "prepare"
    options_model = DatasetConfig

    def run(self, layout: RunLayout, options: DatasetConfig) -> DatasetResult:
        return pipeline.prepare(layout, options)
