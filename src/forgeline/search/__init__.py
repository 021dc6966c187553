"""Parallel-strategy search: specs, analytical cost model, search and DeepSpeed emitter.

    from forgeline.search import ModelSpec, ClusterSpec, TrainingSpec, search, emit
    result = search(model, ClusterSpec.preset("a100-80gb", nodes=128), training, top_k=5)
    emitted = emit(result.best, model, training)  # DeepSpeed config + worker count
"""

from __future__ import annotations

from forgeline.search.calibrate import (
    Calibration,
    CalibrationRow,
    Observation,
    calibrate,
    scaled_cluster,
)
from forgeline.search.comm import (
    collective_s,
    host_transfer_s,
    members_per_node,
    p2p_s,
    ring_all_reduce_s,
)
from forgeline.search.cost_model import estimate, evaluate
from forgeline.search.emit import (
    EmittedConfig,
    deepspeed_config,
    emit,
    megatron_args,
    validate_deepspeed_config,
)
from forgeline.search.flops import (
    attention_core_forward_flops,
    hardware_flops_per_iteration,
    layer_forward_flops,
    logits_forward_flops,
    model_flops_per_iteration,
    narayanan_flops_per_iteration,
    recompute_flops_per_iteration,
)
from forgeline.search.memory import (
    activation_bytes_per_layer,
    deepspeed_model_state_bytes,
    host_offload_bytes,
    recompute_working_bytes,
    zero_model_state_bytes,
)
from forgeline.search.pipeline import bubble_fraction, inflight_microbatches
from forgeline.search.plan import (
    MemoryBreakdown,
    ParallelConfig,
    Plan,
    SearchResult,
    StepTimeBreakdown,
)
from forgeline.search.presets import PRESET_NAMES, cluster_preset, this_machine_cpu
from forgeline.search.reference import (
    KORTHIKANTI_2022,
    NARAYANAN_TABLE1,
    korthikanti_observations,
    megatron_model,
    megatron_training,
)
from forgeline.search.search import search
from forgeline.search.space import SearchSpace, enumerate_space
from forgeline.search.specs import DTYPE_BYTES, ClusterSpec, ModelSpec, TrainingSpec
from forgeline.search.trials import TrialResult, run_trial, run_trials

__all__ = [
    "DTYPE_BYTES", "KORTHIKANTI_2022", "NARAYANAN_TABLE1", "korthikanti_observations",
    "megatron_model", "megatron_training", "PRESET_NAMES", "Calibration", "CalibrationRow",
    "ClusterSpec",
    "EmittedConfig", "MemoryBreakdown", "ModelSpec", "Observation", "ParallelConfig", "Plan",
    "SearchResult", "SearchSpace", "StepTimeBreakdown", "TrainingSpec",
    "activation_bytes_per_layer", "attention_core_forward_flops", "bubble_fraction",
    "calibrate", "cluster_preset", "collective_s", "deepspeed_config",
    "deepspeed_model_state_bytes", "emit", "enumerate_space", "estimate", "evaluate",
    "hardware_flops_per_iteration", "host_offload_bytes", "host_transfer_s",
    "inflight_microbatches", "layer_forward_flops", "logits_forward_flops", "megatron_args",
    "members_per_node", "model_flops_per_iteration", "narayanan_flops_per_iteration", "p2p_s",
    "recompute_flops_per_iteration", "recompute_working_bytes", "ring_all_reduce_s",
    "scaled_cluster", "search", "this_machine_cpu", "validate_deepspeed_config",
    "zero_model_state_bytes", "TrialResult", "run_trial", "run_trials",
]
