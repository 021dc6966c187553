"""Rank every candidate of the space by predicted step time, subject to memory."""

from __future__ import annotations

import time

import numpy as np

from forgeline.errors import ConfigError
from forgeline.search.cost_model import evaluate, plan_from_row
from forgeline.search.plan import GIB, SearchResult
from forgeline.search.space import SearchSpace, enumerate_space
from forgeline.search.specs import ClusterSpec, ModelSpec, TrainingSpec

_CHUNK = 1_000_000
"""Candidates evaluated per numpy pass (bounds the temporary arrays to a few hundred MB)."""


def search(model: ModelSpec, cluster: ClusterSpec, training: TrainingSpec, top_k: int = 5,
           space: SearchSpace | None = None) -> SearchResult:
    """The ``top_k`` fastest configurations that fit, fastest first, each with its
    breakdown; or, if none fits, ``feasible=False`` and the reason."""
    if top_k <= 0:
        raise ConfigError("top_k", top_k, "must be at least 1")
    cluster.peak_for(training.precision)  # fail early on an unknown precision
    start = time.perf_counter()
    en = enumerate_space(model, cluster, training, space)
    cand = en.candidates
    n = len(cand["tp"])
    best_idx, best_step, best_mem = [], [], []
    feasible_count = 0
    for lo in range(0, n, _CHUNK):
        part = {k: v[lo:lo + _CHUNK] for k, v in cand.items()}
        res = evaluate(part, model, cluster, training)
        ok = np.nonzero(res["fits"])[0]
        feasible_count += len(ok)
        if len(ok):
            order = ok[np.lexsort((res["memory_bytes"][ok], res["step_s"][ok]))[:top_k]]
            best_idx.append(order + lo)
            best_step.append(res["step_s"][order])
            best_mem.append(res["memory_bytes"][order])
    plans = []
    if best_idx:
        idx, step, mem = (np.concatenate(x) for x in (best_idx, best_step, best_mem))
        top = idx[np.lexsort((mem, step))[:top_k]]
        chosen = {k: v[top] for k, v in cand.items()}
        res = evaluate(chosen, model, cluster, training)
        plans = [plan_from_row(chosen, res, i, model, cluster, training) for i in range(len(top))]
    reason = None if plans else _infeasible_reason(en, model, cluster, training)
    return SearchResult(
        plans=plans, feasible=bool(plans), reason=reason, model=model,
        cluster=cluster, devices=cluster.total_devices, training=training,
        candidates_enumerated=en.enumerated, candidates_pruned=en.pruned,
        candidates_evaluated=n, candidates_feasible=feasible_count,
        search_s=time.perf_counter() - start,
    )


def _infeasible_reason(en, model: ModelSpec, cluster: ClusterSpec,
                       training: TrainingSpec) -> str:
    if en.empty_reason:
        return en.empty_reason
    r = en.probe_results
    cap = cluster.device_memory_bytes / GIB
    device_ok = r["memory_bytes"] <= cluster.device_memory_bytes
    if device_ok.any():  # some footprint fits the device but its offload does not fit the host
        i = int(np.argmin(np.where(device_ok, r["host_bytes_per_node"], np.inf)))
        plan = plan_from_row(en.probe, r, i, model, cluster, training)
        return (f"the smallest footprint that fits a device ({plan.summary()}) offloads "
                f"{r['host_bytes_per_node'][i] / GIB:.0f} GiB per node; the node has "
                f"{cluster.host_memory_bytes / GIB:.0f} GiB of host memory "
                f"({cluster.nvme_bytes / GIB:.0f} GiB NVMe)")
    i = int(np.argmin(r["memory_bytes"]))
    plan = plan_from_row(en.probe, r, i, model, cluster, training)
    c = plan.config
    return (f"the smallest footprint needs {r['memory_bytes'][i] / GIB:.1f} GiB per device; "
            f"the device has {cap:.0f} (t={c.tensor_parallel} p={c.pipeline_parallel} "
            f"d={c.data_parallel} zero={c.zero_stage} offload={c.offload} "
            f"recompute={c.recompute} micro_batch={c.micro_batch_size}: states "
            f"{plan.memory.model_states_bytes / GIB:.1f} GiB, activations "
            f"{plan.memory.activations_bytes / GIB:.1f} GiB)")
