"""The cost model's behaviour on whole configurations."""

from __future__ import annotations

import numpy as np
import pytest

from forgeline.errors import ConfigError
from forgeline.search import (
    ClusterSpec,
    ModelSpec,
    ParallelConfig,
    Plan,
    TrainingSpec,
    estimate,
    evaluate,
    hardware_flops_per_iteration,
    model_flops_per_iteration,
)
from forgeline.search.cost_model import candidates_from_configs

GPT3 = ModelSpec(name="gpt3-175b", layers=96, hidden=12288, heads=96, seq_len=2048, vocab=51200)
A100 = ClusterSpec.preset("a100-80gb", nodes=128)
TRAIN = TrainingSpec(global_batch_size=1536)
MEGATRON = ParallelConfig(tensor_parallel=8, pipeline_parallel=8, data_parallel=16,
                          micro_batch_size=1, recompute="full")


def _est(**changes) -> Plan:
    return estimate(MEGATRON.model_copy(update=changes), GPT3, A100, TRAIN)


def test_terms_add_up_and_bubble_is_p_minus_1_over_vm():
    for v in (1, 2, 4):
        plan = _est(virtual_stages=v)
        t = plan.time
        assert t.total_s == pytest.approx(plan.step_time_s)
        pipeline = t.compute_s + t.recompute_s + t.tp_comm_s + t.pp_comm_s
        m = plan.gradient_accumulation_steps
        assert m == 1536 // 16
        assert t.bubble_s / pipeline == pytest.approx(7 / (v * m))


def test_recompute_trades_time_for_memory():
    none, sel, full = (_est(recompute=r) for r in ("none", "selective", "full"))
    assert full.memory.activations_bytes < sel.memory.activations_bytes
    assert sel.memory.activations_bytes < none.memory.activations_bytes
    assert none.time.recompute_s == 0 < sel.time.recompute_s < full.time.recompute_s
    # full recompute re-runs one forward: about a third of forward + backward
    assert 0.25 < full.time.recompute_s / full.time.compute_s < 0.4
    assert none.step_time_s < sel.step_time_s < full.step_time_s
    ratio = full.hardware_tflops_per_device / full.model_tflops_per_device
    expected = (hardware_flops_per_iteration(1536, 2048, 96, 12288, 51200, "full")
                / model_flops_per_iteration(1536, 2048, 96, 12288, 51200))
    assert ratio == pytest.approx(expected)


def test_sequence_parallel_splits_the_replicated_activations():
    plain, sp = _est(recompute="selective"), _est(recompute="selective", sequence_parallel=True)
    assert sp.memory.activations_bytes < plain.memory.activations_bytes
    assert sp.time.tp_comm_s > plain.time.tp_comm_s  # backward re-gathers the inputs


def test_zero_stages_shrink_model_states():
    cfg = ParallelConfig(tensor_parallel=8, data_parallel=128, micro_batch_size=1,
                         recompute="full")
    states = [estimate(cfg.model_copy(update={"zero_stage": z}), GPT3, A100,
                       TRAIN).memory.model_states_bytes for z in range(4)]
    assert states == sorted(states, reverse=True) and len(set(states)) == 4
    # ZeRO-0 holds 2 + 2 + 12 bytes per parameter of its tensor-parallel slice
    per_rank = GPT3.layers * GPT3.params_per_layer / 8 + GPT3.vocab * GPT3.hidden / 8 + (
        GPT3.seq_len * GPT3.hidden) + 2 * GPT3.hidden
    assert states[0] == pytest.approx(16 * per_rank)


def test_terms_vanish_without_their_parallelism():
    small = ModelSpec(layers=4, hidden=256, heads=4, seq_len=128, vocab=1000)
    train = TrainingSpec(global_batch_size=8)
    plan = estimate(ParallelConfig(micro_batch_size=2), small, A100, train)
    t = plan.time
    assert t.tp_comm_s == t.pp_comm_s == t.bubble_s == t.dp_comm_s == t.offload_s == 0
    assert plan.bound_by == "compute" and plan.fits and plan.gradient_accumulation_steps == 4


def test_offload_moves_states_to_host_and_costs_time():
    cfg = ParallelConfig(tensor_parallel=8, data_parallel=128, micro_batch_size=1,
                         zero_stage=3, recompute="full")
    on, opt, par = (estimate(cfg.model_copy(update={"offload": o}), GPT3, A100, TRAIN)
                    for o in ("none", "optimizer", "parameters"))
    assert on.memory.model_states_bytes > opt.memory.model_states_bytes
    assert opt.memory.model_states_bytes > par.memory.model_states_bytes
    assert on.time.offload_s == 0 < opt.time.offload_s
    assert on.memory.host_bytes_per_node == 0 < opt.memory.host_bytes_per_node
    assert opt.offload_device == "cpu"
    # with almost no host memory the states go to NVMe, which is slower
    tight = A100.model_copy(update={"host_memory_bytes": 2**30})
    nvme = estimate(cfg.model_copy(update={"offload": "optimizer"}), GPT3, tight, TRAIN)
    assert nvme.offload_device == "nvme" and nvme.time.offload_s > opt.time.offload_s
    # NVMe swapping is ZeRO-3 only (ZeRO-Infinity); ZeRO-1 offload must fit host memory
    zero1 = ParallelConfig(tensor_parallel=8, data_parallel=128, micro_batch_size=1,
                           zero_stage=1, recompute="full", offload="optimizer")
    assert estimate(zero1, GPT3, A100, TRAIN).offload_device == "cpu"
    assert not estimate(zero1, GPT3, tight, TRAIN).fits
    no_disk = tight.model_copy(update={"nvme_bytes": 0, "nvme_bytes_per_s": 0.0})
    assert not estimate(cfg.model_copy(update={"offload": "optimizer"}), GPT3, no_disk,
                        TRAIN).fits


def test_vectorised_rows_match_single_estimates():
    configs = [MEGATRON, MEGATRON.model_copy(update={"virtual_stages": 2}),
               ParallelConfig(tensor_parallel=4, data_parallel=256, micro_batch_size=2,
                              zero_stage=3, recompute="selective", sequence_parallel=True)]
    res = evaluate(candidates_from_configs(configs), GPT3, A100, TRAIN)
    for i, cfg in enumerate(configs):
        single = estimate(cfg, GPT3, A100, TRAIN)
        assert res["step_s"][i] == pytest.approx(single.step_time_s)
        assert res["memory_bytes"][i] == pytest.approx(single.memory.total_bytes)
    assert np.all(res["fits"] == [estimate(c, GPT3, A100, TRAIN).fits for c in configs])


def test_plan_is_json_serialisable():
    plan = _est()
    again = Plan.model_validate_json(plan.model_dump_json())
    assert again == plan and "bound by" in plan.summary()


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"tensor_parallel": 5, "data_parallel": 1}, "tensor_parallel"),  # 96 heads % 5
        ({"micro_batch_size": 5}, "global_batch_size"),  # 1536 % (5 x 16)
        ({"pipeline_parallel": 7, "data_parallel": 1}, "pipeline_parallel"),  # 96 layers % 7
        ({"data_parallel": 32}, "data_parallel"),  # 8 x 8 x 32 > 1024 devices
        ({"zero_stage": 2}, "zero_stage"),  # with pipeline parallelism
        ({"offload": "optimizer"}, "offload"),  # needs ZeRO >= 1
        ({"tensor_parallel": 1, "sequence_parallel": True}, "sequence_parallel"),
        ({"virtual_stages": 5}, "pipeline_parallel"),  # 96 % (8 x 5)
    ],
)
def test_bad_configurations_name_the_field(changes, field):
    with pytest.raises(ConfigError) as err:
        _est(**changes)
    assert err.value.field == field


def test_interleaving_needs_micro_batches_divisible_by_stages():
    with pytest.raises(ConfigError, match="virtual_stages"):
        estimate(MEGATRON.model_copy(update={"virtual_stages": 2, "micro_batch_size": 1,
                                             "data_parallel": 16}), GPT3, A100,
                 TrainingSpec(global_batch_size=16 * 12))  # 12 micro-batches, p = 8


def test_overlap_efficiency_exposes_zero3_communication():
    cfg = ParallelConfig(tensor_parallel=8, data_parallel=128, micro_batch_size=1,
                         zero_stage=3, recompute="full")
    hidden = estimate(cfg, GPT3, A100, TRAIN)
    none = estimate(cfg, GPT3, A100.model_copy(update={"overlap_efficiency": 0.0}), TRAIN)
    assert none.time.dp_comm_s > hidden.time.dp_comm_s
    assert none.time.compute_s == pytest.approx(hidden.time.compute_s)
