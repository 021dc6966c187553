"""Parallel-strategy search: specs, analytical cost model, search and DeepSpeed emitter.

    from forgeline.search import ModelSpec, ClusterSpec, TrainingSpec, search, emit
    result = search(model, ClusterSpec.preset("a100-80gb", nodes=128), training, top_k=5)
    emitted = emit(result.best, model, training)  # DeepSpeed config + worker count

Names are imported lazily: ``forgeline.search.options`` (the stage's options) loads
without numpy, torch or Ray. The formulas (``flops``, ``memory``, ``comm``, ``schedule``)
and the published reference runs (``reference``) are public in their own modules.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "ModelSpec": "specs",
    "ClusterSpec": "specs",
    "TrainingSpec": "specs",
    "PRESET_NAMES": "presets",
    "this_machine_cpu": "machine",
    "ParallelConfig": "plan",
    "Plan": "plan",
    "SearchResult": "plan",
    "SearchSpace": "space",
    "search": "ranking",
    "estimate": "cost_model",
    "emit": "emitter",
    "EmittedConfig": "emitter",
    "for_cpu": "emitter",
    "validate_deepspeed_config": "emitter",
    "Observation": "calibration",
    "Calibration": "calibration",
    "calibrate": "calibration",
    "TrialResult": "trials",
    "run_trials": "trials",
    "StrategyOptions": "options",
    "StrategyResult": "options",
    "plan_strategy": "stage",
}

__all__ = [
    "Calibration",
    "ClusterSpec",
    "EmittedConfig",
    "ModelSpec",
    "Observation",
    "PRESET_NAMES",
    "ParallelConfig",
    "Plan",
    "SearchResult",
    "SearchSpace",
    "StrategyOptions",
    "StrategyResult",
    "TrainingSpec",
    "TrialResult",
    "calibrate",
    "emit",
    "estimate",
    "for_cpu",
    "plan_strategy",
    "run_trials",
    "search",
    "this_machine_cpu",
    "validate_deepspeed_config",
]

if TYPE_CHECKING:
    from forgeline.search.calibration import Calibration, Observation, calibrate
    from forgeline.search.cost_model import estimate
    from forgeline.search.emitter import EmittedConfig, emit, for_cpu, validate_deepspeed_config
    from forgeline.search.machine import this_machine_cpu
    from forgeline.search.options import StrategyOptions, StrategyResult
    from forgeline.search.plan import ParallelConfig, Plan, SearchResult
    from forgeline.search.presets import PRESET_NAMES
    from forgeline.search.ranking import search
    from forgeline.search.space import SearchSpace
    from forgeline.search.specs import ClusterSpec, ModelSpec, TrainingSpec
    from forgeline.search.stage import plan_strategy
    from forgeline.search.trials import TrialResult, run_trials


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"forgeline.search.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'forgeline.search' has no attribute {name!r}")
