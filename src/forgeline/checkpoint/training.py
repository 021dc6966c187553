"""What a training checkpoint holds, and putting it back: model, optimizer (DeepSpeed ZeRO
0–2 partition of this rank), LR scheduler, RNG states, DeepSpeed step counters, the batch
source's position (and the importance cache's state through the same ``BatchSource`` seam),
the step, and the ZeRO layout needed to consolidate the fp32 weights on export.

Resharding: the *model* restores into any number of ranks (it is saved whole on every rank
under ZeRO 0–2, deduplicated by content). The ZeRO-1/2 *optimizer* partition of a rank is
restored only into the same number of data-parallel ranks; a different world size is refused
with a clear error (use ``load_optimizer=False`` for a weights-only warm start). ZeRO-3 is
not supported for checkpointing.
"""

from __future__ import annotations

from typing import Any

from forgeline.errors import ConfigError

# Keys of DeepSpeed's ZeRO optimizer state_dict that hold Python objects, not data:
# the loss scaler (rebuilt from the DeepSpeed config) and fragment address maps.
_ZERO_OBJECT_KEYS = ("loss_scaler", "param_slice_mappings")


def _optimizer_state(engine: Any, zero_stage: int) -> dict[str, Any]:
    state = engine.optimizer.state_dict()
    if zero_stage in (1, 2):
        state = {k: v for k, v in state.items() if k not in _ZERO_OBJECT_KEYS}
    return state


def zero_param_shapes(engine: Any) -> list[list[Any]]:
    """``[[name, shape], …]`` per parameter group, in ZeRO's flattening order."""
    if not hasattr(engine.optimizer, "single_partition_of_fp32_groups"):
        return []
    return [[[name, list(shape)] for name, shape in group.items()]
            for group in engine._get_zero_param_shapes()]


def capture_training_state(engine: Any, scheduler: Any, source: Any, step: int,
                           zero_stage: int, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """This rank's full training state (tensors are views; the store snapshots them)."""
    from forgeline.checkpoint.state import capture_rng

    if zero_stage == 3:
        raise ConfigError("zero_stage", 3, "checkpointing supports ZeRO stages 0–2")
    return {
        "step": step,
        "model": dict(engine.module.state_dict()),
        "optimizer": _optimizer_state(engine, zero_stage),
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "engine": {"global_steps": engine.global_steps, "global_samples": engine.global_samples,
                   "micro_steps": engine.micro_steps, "skipped_steps": engine.skipped_steps},
        "data": source.state_dict(),
        "rng": capture_rng(),
        "zero": {"stage": zero_stage, "param_shapes": zero_param_shapes(engine)},
        "extra": extra or {},
    }


def restore_training_state(state: dict[str, Any], engine: Any, scheduler: Any, source: Any,
                           zero_stage: int, saved_world_size: int, world_size: int,
                           load_optimizer: bool = True) -> int:
    """Put ``state`` back into the engine, scheduler, batch source and RNGs; return the step."""
    import torch

    from forgeline.checkpoint.state import restore_rng

    if zero_stage == 3:
        raise ConfigError("zero_stage", 3, "checkpointing supports ZeRO stages 0–2")
    if load_optimizer and zero_stage in (1, 2) and saved_world_size != world_size:
        raise ConfigError(
            "num_workers", world_size,
            f"the checkpoint's ZeRO-{zero_stage} optimizer state is partitioned over "
            f"{saved_world_size} ranks; resharding optimizer state is not supported "
            "(restore the model only with load_optimizer=False)")
    engine.module.load_state_dict(state["model"])
    if load_optimizer:
        if zero_stage in (1, 2):
            fp32 = all(p.dtype == torch.float32 for p in engine.module.parameters())
            if not fp32:
                raise ConfigError("model dtype", "non-fp32",
                                  "exact ZeRO resume is implemented for fp32 modules only")
            # fp32 module weights are the master weights: rebuild the partitions from them
            engine.optimizer.load_state_dict([state["optimizer"]] * world_size,
                                             load_optimizer_states=True,
                                             load_from_fp32_weights=False)
        else:
            engine.optimizer.load_state_dict(state["optimizer"])
        if scheduler is not None and state.get("scheduler") is not None:
            scheduler.load_state_dict(state["scheduler"])
        for key, value in state["engine"].items():
            setattr(engine, key, int(value))
    source.load_state_dict(state["data"])
    restore_rng(state["rng"])
    return int(state["step"])
