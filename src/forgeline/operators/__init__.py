"""Airflow operators, one per pipeline stage, all thin adapters over ``forgeline.stages``."""

from forgeline.operators.assets import DATASET, MODEL, QUANTIZED_MODEL
from forgeline.operators.base import StageOperator, run_name
from forgeline.operators.hooks import RayHook
from forgeline.operators.params import params_from, pipeline_params, pipeline_params_from
from forgeline.operators.stages import (
    STAGE_OPERATORS,
    ExportOperator,
    PrepareDatasetOperator,
    QuantizeOperator,
    ReportOperator,
    StrategySearchOperator,
    TrainOperator,
    WarmCacheOperator,
)
from forgeline.operators.validate import ValidateOperator

__all__ = [
    "DATASET",
    "MODEL",
    "QUANTIZED_MODEL",
    "RayHook",
    "ValidateOperator",
    "STAGE_OPERATORS",
    "ExportOperator",
    "PrepareDatasetOperator",
    "QuantizeOperator",
    "ReportOperator",
    "StageOperator",
    "StrategySearchOperator",
    "TrainOperator",
    "WarmCacheOperator",
    "params_from",
    "pipeline_params",
    "pipeline_params_from",
    "run_name",
]
