"""What a training checkpoint holds, and putting it back: model, optimizer (DeepSpeed ZeRO
0–2 partition of this rank), LR scheduler, RNG states, DeepSpeed step counters, the batch
source's position (and the importance cache's state through the same ``BatchSource`` seam),
the step, and the ZeRO layout needed to consolidate the fp32 weights on export.

Resume on another world size (N ranks saved, M resume), through ``load_training_state``:
the *model* is saved whole on every rank under ZeRO 0–2, so any rank restores it; ZeRO-0
optimizer state is replicated likewise. ZeRO-1/2 optimizer state is resharded exactly: each
flat fp32 group's saved partitions are concatenated in rank order, the tail padding stripped,
and the group re-padded and re-split the way DeepSpeed partitions it over M ranks. Where that
is impossible (the ZeRO stage changed between 0 and 1/2, round-robin gradient partitioning,
a non-fp32 module, a different model) a ``ConfigError`` names the reason; the explicit
fallback is ``load_optimizer=False`` (``checkpoint.resume_optimizer=False`` in a training
config): a weights-only resume — model, step, LR schedule and data position restored, the
optimizer's moments restart from zero. ZeRO-3 is not supported for checkpointing.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from forgeline.errors import ConfigError

if TYPE_CHECKING:
    import torch

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
                           zero_stage: int, *, saved_world_size: int, world_size: int,
                           load_optimizer: bool = True) -> int:
    """Put ``state`` back into the engine, scheduler, batch source and RNGs; return the step.

    ``load_optimizer=False`` restores everything but the optimizer (weights-only resume).
    A state saved by another world size must come through ``load_training_state``.
    """
    from forgeline.checkpoint.state import restore_rng

    if zero_stage == 3:
        raise ConfigError("zero_stage", 3, "checkpointing supports ZeRO stages 0–2")
    if load_optimizer and zero_stage in (1, 2) and saved_world_size != world_size:
        raise ConfigError(
            "num_workers", world_size,
            f"the checkpoint's ZeRO-{zero_stage} optimizer state is partitioned over "
            f"{saved_world_size} ranks; resharding optimizer state is done by "
            "load_training_state (or restore the model only with load_optimizer=False)")
    engine.module.load_state_dict(state["model"])
    if load_optimizer:
        _check_optimizer_fits(state, engine, zero_stage)
        if zero_stage in (1, 2):
            # fp32 module weights are the master weights: rebuild the partitions from them
            engine.optimizer.load_state_dict([state["optimizer"]] * world_size,
                                             load_optimizer_states=True,
                                             load_from_fp32_weights=False)
        else:
            engine.optimizer.load_state_dict(state["optimizer"])
    if scheduler is not None and state.get("scheduler") is not None:
        scheduler.load_state_dict(state["scheduler"])
        if not load_optimizer:  # a fresh optimizer: give it the schedule's current LR
            for group, lr in zip(engine.optimizer.param_groups, scheduler.get_lr(), strict=True):
                group["lr"] = lr
    for key, value in state["engine"].items():
        setattr(engine, key, int(value))
    source.load_state_dict(state["data"])
    restore_rng(state["rng"])
    return int(state["step"])


_FALLBACK = "resume weights-only with checkpoint.resume_optimizer=False (load_optimizer=False)"


def _check_optimizer_fits(state: dict[str, Any], engine: Any, zero_stage: int) -> None:
    """A clear error, before DeepSpeed's own, when the saved optimizer state cannot load."""
    import torch

    saved_stage = int(state.get("zero", {}).get("stage", zero_stage))
    if (saved_stage == 0) != (zero_stage == 0):
        raise ConfigError("zero_stage", zero_stage,
                          f"the checkpoint's optimizer state was saved under ZeRO-{saved_stage}; "
                          f"its layout differs between stage 0 and 1/2 — {_FALLBACK}")
    if zero_stage not in (1, 2):
        return
    if state["zero"].get("resharded_from") and engine.optimizer.round_robin_gradients:
        raise ConfigError("zero_optimization.round_robin_gradients", True,
                          "round-robin partitions are ordered by the world size, so a resharded "
                          f"optimizer state does not fit them — {_FALLBACK}")
    if not all(p.dtype == torch.float32 for p in engine.module.parameters()):
        raise ConfigError("model dtype", "non-fp32",
                          f"exact ZeRO resume is implemented for fp32 modules only — {_FALLBACK}")
    groups = state["optimizer"]["base_optimizer_state"]["state"]
    for group, partition in enumerate(engine.optimizer.single_partition_of_fp32_groups):
        saved = [v for v in groups.get(group, {}).values()
                 if isinstance(v, torch.Tensor) and v.dim() == 1 and v.numel() > 1]
        if any(v.numel() != partition.numel() for v in saved):
            raise ConfigError(
                "checkpoint", f"group {group}",
                f"the saved optimizer partition has {saved[0].numel()} elements, this rank's "
                f"has {partition.numel()} (a different model or ZeRO layout) — {_FALLBACK}")


def load_training_state(store: Any, step: int, rank: int, world_size: int,
                        load_optimizer: bool = True) -> dict[str, Any]:
    """Rank ``rank`` of ``world_size``'s training state at ``step`` from ``store`` (a
    ``CheckpointStore``), whatever world size saved it: ZeRO-1/2 optimizer partitions are
    resharded exactly (module docstring); the other per-rank parts (RNG states) come from
    saved rank ``min(rank, N - 1)``."""
    saved_world = store.manifest(step, 0).world_size
    if saved_world == world_size:
        return store.restore(step, rank=rank).state
    state = store.restore(step, rank=min(rank, saved_world - 1)).state
    if "consumed" not in state["data"]:
        raise ConfigError(
            "num_workers", world_size,
            f"the checkpoint's sampler position {sorted(state['data'])} is per rank of the "
            f"{saved_world} ranks that saved it (e.g. the importance cache's sampler); "
            f"resume it on {saved_world} workers")
    if load_optimizer and int(state["zero"]["stage"]) in (1, 2):
        state["optimizer"] = _reshard_zero_optimizer(store, step, state, saved_world, rank,
                                                     world_size)
    state["zero"] = {**state["zero"], "resharded_from": saved_world}
    return state


def zero_partition_size(flat_numel: int, world_size: int) -> int:
    """Elements per rank of a ZeRO-1/2 flat group of ``flat_numel`` unpadded elements:
    DeepSpeed pads each group to a multiple of ``2 × world_size`` and splits it evenly."""
    alignment = 2 * world_size  # DeepSpeed's nccl_start_alignment_factor (2) × dp
    return math.ceil(flat_numel / alignment) * alignment // world_size


def reshard_zero_partition(parts: dict[int, torch.Tensor], saved_size: int, flat_numel: int,
                           rank: int, world_size: int) -> torch.Tensor:
    """Rank ``rank`` of ``world_size``'s partition of a flat group saved as equal partitions
    of ``saved_size`` elements (``parts``: saved rank → partition, at least those that overlap
    this rank's range); elements past ``flat_numel`` (the padding) are zero."""
    import torch

    size = zero_partition_size(flat_numel, world_size)
    out = torch.zeros(size, dtype=next(iter(parts.values())).dtype)
    lo, hi = rank * size, min((rank + 1) * size, flat_numel)
    for saved_rank in range(lo // saved_size, math.ceil(hi / saved_size)) if hi > lo else ():
        first = saved_rank * saved_size
        a, b = max(lo, first), min(hi, first + saved_size)
        out[a - lo : b - lo] = parts[saved_rank].reshape(-1)[a - first : b - first]
    return out


def _overlapping_ranks(saved_size: int, flat_numel: int, rank: int, world_size: int) -> range:
    size = zero_partition_size(flat_numel, world_size)
    lo, hi = rank * size, min((rank + 1) * size, flat_numel)
    return range(lo // saved_size, math.ceil(hi / saved_size)) if hi > lo else range(0)


def _reshard_zero_optimizer(store: Any, step: int, state: dict[str, Any], saved_world: int,
                            rank: int, world_size: int) -> dict[str, Any]:
    """The ZeRO-1/2 optimizer state of ``rank`` of ``world_size`` from ``saved_world``
    partitions. In each group's base-optimizer state, tensors of the partition's size (Adam's
    moments) are partitioned; the rest (the step count) is the same on every rank."""
    import torch

    from forgeline.checkpoint.state import unflatten_state

    optimizer = dict(state["optimizer"])
    base = optimizer["base_optimizer_state"]
    if not isinstance(base, dict) or "state" not in base:
        raise ConfigError("zero_optimization.elastic_checkpoint", True,
                          f"elastic ZeRO checkpoints are not resharded — {_FALLBACK}")
    manifests = [store.manifest(step, r) for r in range(saved_world)]
    skeletons = [m.skeleton["optimizer"] for m in manifests]
    # the saved flat groups: equal partitions; the tail padding is the ranks' paddings summed
    sizes = [sum(math.prod(shape) for _, shape in group) for group in state["zero"]["param_shapes"]]
    total_padding = [sum(int(s["group_paddings"][g]) for s in skeletons)
                     for g in range(len(sizes))]
    saved_sizes = [(n + pad) // saved_world for n, pad in zip(sizes, total_padding, strict=True)]
    peers: dict[int, dict[str, Any]] = {}

    def peer(saved_rank: int) -> dict[str, Any]:
        if saved_rank not in peers:
            names = [e.name for e in manifests[saved_rank].tensors
                     if e.name.startswith("optimizer/")]
            tensors = store.restore(step, rank=saved_rank, names=names).state
            peers[saved_rank] = unflatten_state(skeletons[saved_rank], tensors)
        return peers[saved_rank]

    new_groups, fp32, paddings = {}, [], []
    for g, group_state in base["state"].items():
        numel, saved_size = sizes[g], saved_sizes[g]
        if saved_size * saved_world != numel + total_padding[g]:
            raise ConfigError("checkpoint", f"optimizer group {g}",
                              f"{saved_world} partitions of {saved_size} elements do not hold "
                              f"{numel} parameters plus {total_padding[g]} padding "
                              f"(parameter alignment or round-robin layout) — {_FALLBACK}")
        needed = _overlapping_ranks(saved_size, numel, rank, world_size)

        def reshard(get: Any, numel: int = numel, saved_size: int = saved_size,
                    needed: range = needed) -> torch.Tensor:
            parts = {r: torch.nn.functional.pad(t := get(peer(r)).reshape(-1),
                                                (0, saved_size - t.numel()))
                     for r in needed}
            return reshard_zero_partition(parts, saved_size, numel, rank, world_size)

        new_groups[g] = {
            key: reshard(lambda o, key=key, g=g: o["base_optimizer_state"]["state"][g][key])
            if isinstance(value, torch.Tensor) and value.numel() == saved_size else value
            for key, value in group_state.items()}
        size = zero_partition_size(numel, world_size)
        padding = max(0, min(size, (rank + 1) * size - numel))
        fp32.append(reshard(lambda o, g=g: o["single_partition_of_fp32_groups"][g])[
            : size - padding])
        paddings.append(padding)
    optimizer["base_optimizer_state"] = {**base, "state": new_groups}
    optimizer["single_partition_of_fp32_groups"] = fp32
    optimizer["group_paddings"] = paddings
    optimizer["partition_count"] = [world_size] * len(new_groups)
    return optimizer
