"""Airflow operators, one per pipeline stage, all thin adapters over ``forgeline.pipeline``."""

from forgeline.operators.base import StageOperator, run_name
from forgeline.operators.cache import WarmCacheOperator
from forgeline.operators.params import params_from, templated
from forgeline.operators.prepare import PrepareDatasetOperator
from forgeline.operators.quantize import QuantizeOperator
from forgeline.operators.report import ReportOperator
from forgeline.operators.search import StrategySearchOperator
from forgeline.operators.train import TrainOperator

__all__ = [
    "PrepareDatasetOperator",
    "QuantizeOperator",
    "ReportOperator",
    "StageOperator",
    "StrategySearchOperator",
    "TrainOperator",
    "WarmCacheOperator",
    "params_from",
    "run_name",
    "templated",
]
