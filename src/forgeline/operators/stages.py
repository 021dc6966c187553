"""One operator per pipeline stage; each is its stage-table entry as an Airflow task."""

from __future__ import annotations

from datetime import timedelta

from forgeline.operators.base import StageOperator


class PrepareDatasetOperator(StageOperator):
    """Build the run's token dataset; kwargs are ``forgeline.datasets.DatasetConfig`` fields."""

    stage = "prepare"


class StrategySearchOperator(StageOperator):
    """Rank parallel strategies; kwargs are ``forgeline.search.stage.StrategyOptions`` fields.
    The run's train stage then runs the best plan as is.

    Its measured trials are short Ray Train runs: with the Ray connection ``ray_conn_id`` it
    runs as a Ray job and defers, like the train stage."""

    stage = "search"
    runs_on_ray = True


class WarmCacheOperator(StageOperator):
    """Warm the cache server before training; kwargs are ``forgeline.train.TrainOptions``
    fields (the same data access the train stage will use). Useful on a long-lived Ray
    cluster (``RAY_ADDRESS``)."""

    stage = "cache"


class TrainOperator(StageOperator):
    """Train on the run's dataset with Ray Train + DeepSpeed; kwargs are
    ``forgeline.train.TrainOptions`` fields (sections: checkpoint, cache, throttle).

    With the Ray connection ``ray_conn_id`` it runs as a Ray job and defers. Retries
    (default 2) resume from the newest committed checkpoint (``checkpoint_resume``)."""

    stage = "train"
    runs_on_ray = True

    def __init__(self, **kwargs: object) -> None:
        kwargs.setdefault("retries", 2)
        kwargs.setdefault("retry_delay", timedelta(seconds=10))
        super().__init__(**kwargs)


class QuantizeOperator(StageOperator):
    """Quantize the run's trained model; kwargs are ``QuantizeOptions`` fields."""

    stage = "quantize"


class ReportOperator(StageOperator):
    """Build ``report.html`` / ``report.md`` from ``run.json`` and ``metrics.jsonl``."""

    stage = "report"


class ExportOperator(StageOperator):
    """Export the run's model, checkpoint and plan in standard formats; kwargs are
    ``forgeline.export.ExportOptions`` fields."""

    stage = "export"


STAGE_OPERATORS: dict[str, type[StageOperator]] = {
    op.stage: op for op in (PrepareDatasetOperator, StrategySearchOperator, WarmCacheOperator,
                            TrainOperator, QuantizeOperator, ReportOperator, ExportOperator)
}
"""The operator of every stage in ``forgeline.stages.STAGES``."""
