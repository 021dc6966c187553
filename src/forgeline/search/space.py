"""The search space and its enumeration into candidate arrays, with memory pruning.

Dimensions: TP x PP x DP factorisations, interleaving chunks, micro-batch size (the
gradient-accumulation steps follow, ``global = micro x accum x dp``), ZeRO stage, recompute,
sequence parallelism, offload and context parallelism. Invalid combinations never enter
(heads and FFN must divide; stages may be uneven but each holds a layer; ZeRO-2/3 combine
with pipelining only where the framework profile says so; optimizer offload needs
ZeRO >= 1, parameter offload ZeRO-3; interleaving needs p >= 2 and m divisible by p).

By default every data-parallel size that divides the batch and fits the devices is
tried (a plan may leave devices idle when the batch does not split over all of them), and
every tensor-parallel size that divides heads and FFN, across nodes too.

Pruning before the full evaluation: each (t, p, d, ZeRO, offload) is probed at its
smallest footprint (smallest micro-batch, no interleaving, sequence parallelism if
allowed, each recompute mode); if none of those fits, none of its micro-batch x chunks x
recompute x SP expansions can (activation memory never falls as b or v grows), so they
are dropped unevaluated. Optional caps (``max_tensor_parallel``,
``data_parallel_per_shape``) shrink the space further for callers who want that.
"""

from __future__ import annotations

from math import gcd

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from forgeline.search.cost_model import CANDIDATE_FIELDS, evaluate
from forgeline.search.plan import OFFLOAD_CODES, RECOMPUTE_CODES, Offload, Recompute
from forgeline.search.specs import ClusterSpec, ModelSpec, TrainingSpec


class SearchSpace(BaseModel):
    """Which values each dimension may take; ``None`` means every valid value.

    Every field is a list of candidate values for the :class:`ParallelConfig` field it
    names: the parallel degrees keep the config's (singular) names, the rest are plural
    (``micro_batch_sizes``, ``zero_stages``); a config holds one value of each."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    tensor_parallel: list[int] | None = None
    pipeline_parallel: list[int] | None = None
    data_parallel: list[int] | None = None
    context_parallel: list[int] = Field(
        default_factory=lambda: [1], description="CP degrees to try (each must divide seq_len; "
        "> 1 needs flash attention); [1] by default to keep the space small")
    virtual_stages: list[int] | None = None
    micro_batch_sizes: list[int] | None = None
    zero_stages: list[int] = Field(default_factory=lambda: [0, 1, 2, 3])
    recompute: list[Recompute] = Field(
        default_factory=lambda: list(RECOMPUTE_CODES),
        description="recompute modes to try; 'op' only where the framework has it")
    sequence_parallel: list[bool] = Field(default_factory=lambda: [False, True])
    offload: list[Offload] = Field(default_factory=lambda: ["none", "optimizer", "parameters"])
    max_tensor_parallel: int | None = Field(
        None, gt=0, description="largest TP degree; None = no cap (any divisor of the heads)"
    )
    data_parallel_per_shape: int | None = Field(
        None, gt=0, description="keep only the largest n data-parallel sizes per (t, p)"
    )


def _divisors(n: int) -> list[int]:
    small = [i for i in range(1, int(n**0.5) + 1) if n % i == 0]
    return sorted(set(small + [n // i for i in small]))


class Enumeration(BaseModel):
    """Candidate arrays plus the counts the result reports."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    candidates: dict[str, np.ndarray]
    enumerated: int
    pruned: int
    probe: dict[str, np.ndarray] = Field(description="smallest-footprint probe per shape")
    probe_results: dict[str, np.ndarray]
    empty_reason: str | None = None


def _shapes(model: ModelSpec, cluster: ClusterSpec, training: TrainingSpec,
            space: SearchSpace) -> list[tuple[int, int, int, int]]:
    n_dev, batch = cluster.total_devices, training.global_batch_size
    max_t = space.max_tensor_parallel or n_dev
    tps = space.tensor_parallel or [t for t in _divisors(gcd(model.heads, model.ffn_hidden))
                                    if t <= max_t]
    pps = space.pipeline_parallel or _divisors(model.layers)
    cps = [c for c in space.context_parallel
           if model.seq_len % c == 0 and (c == 1 or training.flash_attention)]
    shapes = []
    for t in tps:
        if model.heads % t or model.ffn_hidden % t:
            continue
        for p in pps:
            if p > model.layers:
                continue
            for c in cps:
                if t * p * c > n_dev:
                    continue
                ds = [d for d in (space.data_parallel or _divisors(batch))
                      if batch % d == 0 and t * p * c * d <= n_dev]
                if space.data_parallel is None and space.data_parallel_per_shape:
                    ds = sorted(ds)[-space.data_parallel_per_shape:]
                shapes.extend((t, p, d, c) for d in ds)
    return shapes


def _state_combos(space: SearchSpace, p: int, training: TrainingSpec) -> list[tuple[int, int]]:
    combos = []
    for z in space.zero_stages:
        if z >= 2 and p > 1 and not training.profile.zero_with_pipeline:
            continue
        for name in space.offload:
            off = OFFLOAD_CODES[name]
            if (off == 1 and z == 0) or (off == 2 and z != 3):
                continue
            combos.append((z, off))
    return combos


def _inner_options(model: ModelSpec, training: TrainingSpec, space: SearchSpace, p: int,
                   d: int) -> list[tuple[int, int]]:
    """Valid (chunks v, micro-batch b) pairs for a (p, d)."""
    per_replica = training.global_batch_size // d
    mbs = [b for b in (space.micro_batch_sizes or _divisors(per_replica)) if per_replica % b == 0]
    vs = space.virtual_stages or _divisors(-(-model.layers // p))
    out = []
    for v in vs:
        if p * v > model.layers:
            continue
        for b in mbs:
            m = per_replica // b
            if v == 1 or (p >= 2 and m % p == 0):
                out.append((v, b))
    return out


def enumerate_space(model: ModelSpec, cluster: ClusterSpec, training: TrainingSpec,
                    space: SearchSpace | None = None) -> Enumeration:
    """All valid candidates left after pruning, as arrays of :data:`CANDIDATE_FIELDS`."""
    space = space or SearchSpace()
    rcs = [RECOMPUTE_CODES[r] for r in space.recompute]
    if training.flash_attention and 0 in rcs:
        rcs = [r for r in rcs if r != 1]  # nothing to recompute selectively with fused attention
    if not training.profile.op_recompute:
        rcs = [r for r in rcs if r != RECOMPUTE_CODES["op"]]
    shapes = _shapes(model, cluster, training, space)
    rows, inner_counts, inner_cache = [], [], {}
    for t, p, d, c in shapes:
        key = (p, d)
        if key not in inner_cache:
            inner_cache[key] = _inner_options(model, training, space, p, d)
        if not inner_cache[key]:
            continue
        sps = [s for s in space.sequence_parallel if t > 1 or not s]
        for z, off in _state_combos(space, p, training):
            rows.append((t, p, d, z, off, c))
            inner_counts.append(len(inner_cache[key]) * len(rcs) * len(sps))
    if not rows or not rcs:
        return Enumeration(candidates={k: np.zeros(0, np.int64) for k in CANDIDATE_FIELDS},
                           enumerated=0, pruned=0, probe={}, probe_results={},
                           empty_reason=_why_empty(model, cluster, training, space, shapes))
    base = np.asarray(rows, dtype=np.int64)
    counts = np.asarray(inner_counts, dtype=np.int64)

    # ---- probe each shape x state combo at its smallest footprint ---------------------
    n = len(base)
    min_b = np.asarray([min(b for _, b in inner_cache[(r[1], r[2])]) for r in rows])
    probe = {
        "tp": np.repeat(base[:, 0], len(rcs)), "pp": np.repeat(base[:, 1], len(rcs)),
        "dp": np.repeat(base[:, 2], len(rcs)), "vpp": np.ones(n * len(rcs), np.int64),
        "mb": np.repeat(min_b, len(rcs)), "zero": np.repeat(base[:, 3], len(rcs)),
        "rc": np.tile(np.asarray(rcs, np.int64), n),
        "sp": np.repeat((base[:, 0] > 1) & (True in space.sequence_parallel), len(rcs)),
        "off": np.repeat(base[:, 4], len(rcs)), "cp": np.repeat(base[:, 5], len(rcs)),
    }
    probe_res = evaluate(probe, model, cluster, training)
    fits_any = probe_res["fits"].reshape(n, len(rcs)).any(axis=1)
    keep = np.nonzero(fits_any)[0]
    pruned = int(counts[~fits_any].sum())

    # ---- expand survivors: (v, b) x recompute x sequence parallel ------------------------
    cols: dict[str, list[np.ndarray]] = {k: [] for k in CANDIDATE_FIELDS}
    for i in keep:
        t, p, d, z, off, cpd = (int(x) for x in base[i])
        vb = np.asarray(inner_cache[(p, d)], dtype=np.int64)
        sps = [s for s in space.sequence_parallel if t > 1 or not s]
        reps = len(rcs) * len(sps)
        total = len(vb) * reps
        cols["tp"].append(np.full(total, t))
        cols["pp"].append(np.full(total, p))
        cols["dp"].append(np.full(total, d))
        cols["zero"].append(np.full(total, z))
        cols["off"].append(np.full(total, off))
        cols["cp"].append(np.full(total, cpd))
        cols["vpp"].append(np.repeat(vb[:, 0], reps))
        cols["mb"].append(np.repeat(vb[:, 1], reps))
        cols["rc"].append(np.tile(np.repeat(np.asarray(rcs, np.int64), len(sps)), len(vb)))
        cols["sp"].append(np.tile(np.asarray(sps, np.int64), len(vb) * len(rcs)))
    cand = {k: (np.concatenate(v) if v else np.zeros(0, np.int64)) for k, v in cols.items()}
    return Enumeration(candidates=cand, enumerated=int(counts.sum()), pruned=pruned,
                       probe=probe, probe_results=probe_res)


def _why_empty(model: ModelSpec, cluster: ClusterSpec, training: TrainingSpec,
               space: SearchSpace, shapes: list[tuple[int, int, int, int]]) -> str:
    if not shapes:
        return (f"no tensor x pipeline x data split of {cluster.total_devices} devices fits "
                f"heads={model.heads}, ffn_hidden={model.ffn_hidden}, layers={model.layers} and "
                f"global_batch_size={training.global_batch_size} within the allowed values "
                f"(tensor_parallel={space.tensor_parallel}, pipeline_parallel="
                f"{space.pipeline_parallel}, data_parallel={space.data_parallel})")
    return ("no micro-batch size / ZeRO stage / offload / recompute combination is allowed "
            f"for any split (micro_batch_sizes={space.micro_batch_sizes}, zero_stages="
            f"{space.zero_stages}, offload={space.offload}, recompute={space.recompute})")
