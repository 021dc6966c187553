"""Search invariants: plans fit, are sorted and valid; pruning loses nothing; no fit explained."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from forgeline.errors import ConfigError
from forgeline.search import (
    ClusterSpec,
    ModelSpec,
    SearchResult,
    SearchSpace,
    TrainingSpec,
    search,
    this_machine_cpu,
)
from forgeline.search.cost_model import evaluate

GPT3 = ModelSpec(name="gpt3-175b", layers=96, hidden=12288, heads=96, seq_len=2048, vocab=51200)


def _divisors(n: int) -> list[int]:
    return [i for i in range(1, n + 1) if n % i == 0]


def test_gpt3_on_1024_a100s_invariants():
    cluster = ClusterSpec.preset("a100-80gb", nodes=128)
    result = search(GPT3, cluster, TrainingSpec(global_batch_size=1536), top_k=10)
    assert result.feasible and result.reason is None and len(result.plans) == 10
    steps = [p.step_time_s for p in result.plans]
    assert steps == sorted(steps)
    assert len({p.config for p in result.plans}) == 10
    for plan in result.plans:
        assert plan.fits and plan.memory.total_bytes <= cluster.device_memory_bytes
        plan.config.check(GPT3, cluster, result.training)  # raises if invalid
        assert plan.time.total_s == pytest.approx(plan.step_time_s)
        assert plan.devices_used <= 1024
    best = result.best
    assert best.devices_used >= 768 and 0.2 < best.mfu < 0.9
    assert result.candidates_evaluated + result.candidates_pruned == result.candidates_enumerated
    assert 0 < result.candidates_feasible <= result.candidates_evaluated
    assert SearchResult.model_validate_json(result.model_dump_json()) == result


def test_pruning_loses_nothing_against_exhaustive_evaluation():
    """Tight memory so the probe prunes; the exhaustive side enumerates every valid
    configuration independently of the search's enumeration code."""
    model = ModelSpec(layers=12, hidden=768, heads=12, seq_len=1024, vocab=32000)
    cluster = ClusterSpec.preset("a100-40gb", nodes=2).model_copy(
        update={"device_memory_bytes": 3 * 2**30, "reserved_bytes_per_device": 2**28,
                "host_memory_bytes": 2**31, "nvme_bytes": 0, "nvme_bytes_per_s": 0.0})
    train = TrainingSpec(global_batch_size=32)
    result = search(model, cluster, train, top_k=5)
    assert result.candidates_pruned > 0

    rows = []
    for t, p, d in itertools.product(_divisors(12), _divisors(12), _divisors(32)):
        if t * p * d > 16:
            continue
        for v, b, z, off, rc, sp in itertools.product(
                _divisors(12 // p), _divisors(32 // d), range(4), range(3), range(3), (0, 1)):
            m = 32 // (d * b)
            if (v > 1 and (p < 2 or m % p)) or (z >= 2 and p > 1) or (off == 1 and z == 0) \
                    or (off == 2 and z != 3) or (sp and t == 1):
                continue
            rows.append((t, p, d, v, b, z, rc, sp, off, 1))
    arr = np.asarray(rows)
    names = ("tp", "pp", "dp", "vpp", "mb", "zero", "rc", "sp", "off", "cp")
    cand = {n: arr[:, i] for i, n in enumerate(names)}
    res = evaluate(cand, model, cluster, train)
    ok = np.nonzero(res["fits"])[0]
    assert len(ok) == result.candidates_feasible
    best = ok[np.argmin(res["step_s"][ok])]
    assert result.best.step_time_s == pytest.approx(res["step_s"][best])
    expected = sorted(res["step_s"][ok])[:5]
    assert [p.step_time_s for p in result.plans] == pytest.approx(expected)


def test_device_memory_bound_is_explained():
    cluster = ClusterSpec.preset("a100-40gb", nodes=1)
    result = search(GPT3, cluster, TrainingSpec(global_batch_size=64),
                    space=SearchSpace(offload=["none"]))
    assert not result.feasible and not result.plans
    assert result.reason.startswith("the smallest footprint needs ")
    assert "GiB per device; the device has 40 (" in result.reason
    needed = float(result.reason.split("needs ")[1].split(" GiB")[0])
    assert needed > 40
    with pytest.raises(ConfigError, match="plans"):
        _ = result.best


def test_host_memory_bound_is_explained():
    cluster = ClusterSpec.preset("a100-40gb", nodes=1).model_copy(
        update={"nvme_bytes": 0, "nvme_bytes_per_s": 0.0})
    result = search(GPT3, cluster, TrainingSpec(global_batch_size=64))
    assert not result.feasible
    assert "GiB per node; the node has 1024 GiB of host memory (0 GiB NVMe)" in result.reason
    # with NVMe the same input becomes feasible through ZeRO-Infinity
    with_nvme = search(GPT3, ClusterSpec.preset("a100-40gb", nodes=1),
                       TrainingSpec(global_batch_size=64), top_k=1)
    assert with_nvme.feasible and with_nvme.best.offload_device == "nvme"


def test_impossible_space_is_explained():
    cluster = ClusterSpec.preset("a100-80gb", nodes=1)
    result = search(GPT3, cluster, TrainingSpec(global_batch_size=64),
                    space=SearchSpace(tensor_parallel=[5]))
    assert not result.feasible and "heads=96" in result.reason


def test_bad_arguments():
    cluster = ClusterSpec.preset("a100-80gb", nodes=1)
    with pytest.raises(ConfigError, match="top_k"):
        search(GPT3, cluster, TrainingSpec(global_batch_size=8), top_k=0)
    with pytest.raises(ConfigError, match="precision='fp8'"):
        search(GPT3, cluster, TrainingSpec(global_batch_size=8, precision="fp8"))


def test_small_model_on_this_machine():
    model = ModelSpec(layers=4, hidden=128, heads=4, seq_len=128, vocab=512,
                      param_dtype="fp32", grad_dtype="fp32")
    cpu = this_machine_cpu(devices=2)
    result = search(model, cpu, TrainingSpec(global_batch_size=8, precision="fp32"), top_k=3)
    assert result.feasible
    assert all(p.devices_used <= 2 and p.fits for p in result.plans)
