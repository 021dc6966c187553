"""Parallel-strategy search: specs, analytical cost model, search and DeepSpeed emitter.

    from forgeline.search import ModelSpec, ClusterSpec, TrainingSpec, search, emit
    result = search(model, ClusterSpec.preset("a100-80gb", nodes=128), training, top_k=5)
    emitted = emit(result.best, model, training)  # DeepSpeed config + worker count

Names are imported lazily: ``forgeline.search.options`` (the stage's options) loads
without numpy, torch or Ray. The formulas (``flops``, ``memory``, ``comm``, ``schedule``)
and the published reference runs (``reference``) are public in their own modules.
"""

from __future__ import annotations

from forgeline._lazy import lazy_exports

_EXPORTS = {
    "Calibration": "calibration", "Observation": "calibration", "calibrate": "calibration",
    "estimate": "cost_model",
    "EmittedConfig": "emitter", "emit": "emitter", "for_cpu": "emitter",
    "validate_deepspeed_config": "emitter",
    "this_machine_cpu": "machine",
    "StrategyOptions": "options", "StrategyResult": "options",
    "ParallelConfig": "plan", "Plan": "plan", "SearchResult": "plan",
    "PRESET_NAMES": "presets",
    "search": "ranking",
    "SearchSpace": "space",
    "ClusterSpec": "specs", "ModelSpec": "specs", "TrainingSpec": "specs",
    "plan_strategy": "stage",
    "TrialResult": "trials", "run_trials": "trials",
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
