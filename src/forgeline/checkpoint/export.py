"""Export a checkpoint's model as one consolidated fp32 safetensors file.

For a training checkpoint with ZeRO-1/2 state, the parameters come from the fp32 master
partitions of *all* ranks (``single_partition_of_fp32_groups``), concatenated in rank order
and split by ZeRO's recorded parameter shapes — the exact fp32 weights even when the module
itself trains in bf16/fp16. Otherwise (or for buffers) the ``model/`` tensors are used:
replicated ones once, dim-0 shards concatenated, floating tensors cast to float32.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from forgeline import storage
from forgeline.checkpoint.reader import CheckpointReader
from forgeline.errors import IntegrityError

_FP32_GROUPS = "optimizer/single_partition_of_fp32_groups/"


def consolidate_zero_fp32(partitions: list[list[torch.Tensor]],
                          param_shapes: list[list[Any]]) -> dict[str, torch.Tensor]:
    """``partitions[rank][group]`` flat fp32 slices → ``{param name: fp32 tensor}``."""
    out: dict[str, torch.Tensor] = {}
    for group, shapes in enumerate(param_shapes):
        flat = torch.cat([ranks[group].reshape(-1) for ranks in partitions])
        offset = 0
        for name, shape in shapes:
            numel = math.prod(shape)
            if offset + numel > flat.numel():
                raise IntegrityError(f"ZeRO group {group} holds {flat.numel()} values, "
                                     f"too few for parameter {name!r} at offset {offset}")
            out[name] = flat[offset : offset + numel].reshape(shape).clone()
            offset += numel
    return out


def _zero_fp32_params(store: CheckpointReader, step: int) -> dict[str, torch.Tensor] | None:
    first = store.manifest(step, 0)
    zero = first.skeleton.get("zero") if isinstance(first.skeleton, dict) else None
    shapes = zero.get("param_shapes") if isinstance(zero, dict) else None
    if not shapes:
        return None
    partitions = []
    for rank in range(first.world_size):
        shard = first if rank == 0 else store.manifest(step, rank)
        names = sorted((e.name for e in shard.tensors if e.name.startswith(_FP32_GROUPS)),
                       key=lambda n: int(n.removeprefix(_FP32_GROUPS)))
        if not names:
            return None
        tensors = store.restore(step, rank=rank, names=names).state
        partitions.append([torch.as_tensor(tensors[n]).float() for n in names])
    return consolidate_zero_fp32(partitions, shapes)


def consolidated_fp32(store: CheckpointReader, step: int | None = None,
                      prefix: str = "model/") -> dict[str, torch.Tensor]:
    """The whole model at ``step``, names without ``prefix``, floating tensors as float32."""
    step = store.manifest(step, 0).step
    state = {name.removeprefix(prefix): t
             for name, t in store.load_resharded(step, prefix, rank=0, world_size=1).items()}
    state.update(_zero_fp32_params(store, step) or {})
    return {name: (t.float() if t.is_floating_point() else t).contiguous()
            for name, t in state.items()}


def export_safetensors(store_url: str, out_url: str, step: int | None = None,
                       prefix: str = "model/") -> str:
    """Write ``consolidated_fp32`` of ``step`` (default: latest) to ``out_url`` atomically."""
    from safetensors.torch import save

    state = consolidated_fp32(CheckpointReader(store_url), step, prefix)
    storage.write_bytes_atomic(out_url, save(state))
    return out_url
