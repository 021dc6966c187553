"""The cost model's behaviour on whole configurations."""

from __future__ import annotations

import numpy as np
import pytest

from forgeline.errors import ConfigError
from forgeline.search import ClusterSpec, ModelSpec, ParallelConfig, Plan, TrainingSpec, estimate
from forgeline.search.cost_model import (
    candidates_from_configs,
    evaluate,
    zero3_partitioned_tensors,
    zero_bookkeeping_s,
    zero_copy_passes,
)
from forgeline.search.flops import hardware_flops_per_iteration, model_flops_per_iteration

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
        ({"pipeline_parallel": 97, "data_parallel": 1}, "pipeline_parallel"),  # > 96 layers
        ({"data_parallel": 32}, "data_parallel"),  # 8 x 8 x 32 > 1024 devices
        ({"zero_stage": 2}, "zero_stage"),  # with pipeline parallelism
        ({"offload": "optimizer"}, "offload"),  # needs ZeRO >= 1
        ({"tensor_parallel": 1, "sequence_parallel": True}, "sequence_parallel"),
        ({"virtual_stages": 13}, "pipeline_parallel"),  # 8 x 13 chunks > 96 layers
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


# ---- DeepSpeed ZeRO runtime bookkeeping: copy passes, ZeRO-3 hooks, exposure -----------
# A CPU-like node: collectives share the compute cores (no overlap), ZeRO copies at 1 GB/s.
CPU = ClusterSpec(
    name="cpu-like", nodes=1, devices_per_node=2, device_memory_bytes=8 * 2**30,
    peak_flops_per_s={"fp32": 5e10}, hbm_bytes_per_s=1e10, intra_node_bytes_per_s=1e9,
    inter_node_bytes_per_s=1e9, host_memory_bytes=16 * 2**30, host_memory_bytes_per_s=2e10,
    host_link_bytes_per_s=1e10, matmul_efficiency=[(1e6, 0.5), (1e9, 1.0)],
    memory_efficiency=[(1e4, 0.5), (1e7, 1.0)], overlap_efficiency=0.0,
    zero_copy_bytes_per_s=1e9, zero3_hook_s_per_tensor=1e-3,
)
SMALL = ModelSpec(layers=8, hidden=512, heads=8, seq_len=64, vocab=256, tied_embeddings=False,
                  dropout=False, param_dtype="fp32", grad_dtype="fp32")
FP32 = TrainingSpec(global_batch_size=4, precision="fp32", flash_attention=True)


def test_copy_passes_per_stage_by_hand():
    # d = 2, m = 3 micro-steps; the last one with full recompute.
    passes = zero_copy_passes(np.array([0, 1, 2, 3]), 2, 3, np.array([0, 0, 0, 1]))
    # ZeRO-1: bucket 1 + shard 1/2 + gather 1; ZeRO-2: 3 x (1 + 1/2) + 1;
    # ZeRO-3: 3 x (fwd 1 + recompute 1 + bwd 1 + bucket 1 + shard 1/2) + shard 1/2
    assert passes.tolist() == [0.0, 2.5, 5.5, 14.0]


def test_partitioned_tensors_skip_persistent_biases_and_norms():
    assert zero3_partitioned_tensors(SMALL) == 4 * 8 + 3  # word + position + untied head
    tied = SMALL.model_copy(update={"tied_embeddings": True,
                                    "learned_position_embeddings": False})
    assert zero3_partitioned_tensors(tied) == 4 * 8 + 1


def test_bookkeeping_seconds_by_hand():
    # ZeRO-3, 1e6 fp32 parameters, one rank, 2 micro-steps, 10 partitioned tensors:
    # passes 2 x (3 + 1) + 1 = 9 of 4 MB at 1 GB/s = 0.036 s;
    # hooks 2 micro-steps x 2 (fetch, release) x 2 (fwd, bwd) x 10 x 1 ms = 0.08 s.
    s = zero_bookkeeping_s(3, 1e6, 1, 2, False, CPU, param_bytes=4, grad_bytes=4, tensors=10)
    assert float(s) == pytest.approx(0.036 + 0.08)
    # ZeRO-2 has no hooks: (2 x (1 + 1/2) + 1) x 4 MB / 1 GB/s = 0.016 s
    kw = dict(param_bytes=4, grad_bytes=4, tensors=10)
    assert float(zero_bookkeeping_s(2, 1e6, 2, 2, False, CPU, **kw)) == pytest.approx(0.016)
    assert float(zero_bookkeeping_s(0, 1e6, 2, 2, False, CPU, **kw)) == 0.0


def test_default_copy_rate_is_half_the_memory_bandwidth():
    gpu = ClusterSpec.preset("a100-80gb")
    assert gpu.zero_copy_bytes_per_s == 0 and gpu.zero_copy_rate == gpu.hbm_bytes_per_s / 2
    assert gpu.overlap_efficiency == 1.0 and gpu.zero3_hook_s_per_tensor == 5e-5


def test_exposed_on_cpu_hidden_on_gpu():
    cfg = ParallelConfig(data_parallel=1, micro_batch_size=2, zero_stage=3)
    plan = estimate(cfg, SMALL, CPU, FP32)
    expected = zero_bookkeeping_s(3, SMALL.total_params, 1, 2, False, CPU, param_bytes=4,
                                  grad_bytes=4, tensors=zero3_partitioned_tensors(SMALL))
    assert plan.time.framework_s == pytest.approx(float(expected))
    assert plan.step_time_s == pytest.approx(plan.time.total_s)
    # the same copies behind compute when collectives run on their own engines
    overlapped = estimate(cfg, SMALL, CPU.model_copy(update={"overlap_efficiency": 1.0}), FP32)
    assert overlapped.time.framework_s == pytest.approx(
        max(0.0, float(expected) - overlapped.time.compute_s))
    zero0 = estimate(cfg.model_copy(update={"zero_stage": 0}), SMALL, CPU, FP32)
    assert zero0.time.framework_s == 0.0


def test_no_overlap_exposes_the_whole_gradient_all_reduce():
    cfg = ParallelConfig(data_parallel=2, micro_batch_size=2)
    plan = estimate(cfg, SMALL, CPU, FP32)
    # ring all-reduce over 2 ranks moves the fp32 gradients once, 4 P bytes at 0.75 x 1 GB/s,
    # plus two hops; backward hides none of it
    expected = 4 * SMALL.total_params / 0.75e9 + 2 * CPU.intra_node_latency_s
    assert plan.time.dp_comm_s == pytest.approx(expected)


LLAMA = ModelSpec(name="llama-small", layers=10, hidden=1024, heads=16, kv_heads=4,
                  ffn_hidden=2816, gated_mlp=True, biases=False, norm="rmsnorm", seq_len=4096,
                  vocab=32000, tied_embeddings=False, learned_position_embeddings=False,
                  dropout=False)
H100 = ClusterSpec.preset("h100", nodes=4)


def _llama(precision="bf16", framework="deepspeed", **cfg) -> Plan:
    train = TrainingSpec(global_batch_size=32, precision=precision, framework=framework,
                         flash_attention=True)
    return estimate(ParallelConfig(**{"micro_batch_size": 1, **cfg}), LLAMA, H100, train)


def test_fp8_casts_by_hand():
    from forgeline.search.cost_model import fp8_cast_bytes

    small = ModelSpec(layers=1, hidden=8, heads=2, ffn_hidden=16, seq_len=4, vocab=10)
    # inputs 4 tokens x (2h + h + f) = 160, weights 8*24 + 64 + 2*8*16 = 512, output grads
    # 4 x (3h + h + f + h) = 224; 4 bytes per element (cast + transpose), +2 for the amax
    assert fp8_cast_bytes(4, small, 1, "delayed") == (4 * 672, 4 * 224)
    assert fp8_cast_bytes(4, small, 1, "dynamic") == (6 * 672, 6 * 224)


def test_fp8_speeds_gemms_not_attention_and_pays_for_casts():
    bf16, fp8 = _llama("bf16", data_parallel=8), _llama("fp8", data_parallel=8)
    assert bf16.time.compute_s / 2 < fp8.time.compute_s < bf16.time.compute_s
    dynamic = _llama("fp8", "torchtitan", data_parallel=8)
    assert dynamic.time.compute_s > fp8.time.compute_s  # the extra amax pass


def test_context_parallel_splits_tokens_and_pays_the_ring():
    one = _llama(data_parallel=8, tensor_parallel=2, sequence_parallel=True)
    two = _llama(data_parallel=4, tensor_parallel=2, sequence_parallel=True, context_parallel=2)
    assert two.devices_used == 16 and one.devices_used == 16
    assert two.memory.activations_bytes < 0.6 * one.memory.activations_bytes
    with pytest.raises(ConfigError, match="context_parallel=3"):
        _llama(data_parallel=4, context_parallel=3)  # 4096 % 3
    plain = TrainingSpec(global_batch_size=32)
    with pytest.raises(ConfigError, match="context_parallel=2: needs training.flash_attention"):
        estimate(ParallelConfig(data_parallel=4, context_parallel=2), LLAMA, H100, plain)


def test_uneven_pipeline_stages_hold_ceil_layers():
    cfg = ParallelConfig(pipeline_parallel=4, micro_batch_size=1, data_parallel=1)
    assert cfg.stage_layers(LLAMA) == 3  # 10 layers over 4 stages: 3, 3, 2, 2
    four = _llama(pipeline_parallel=4, recompute="full")
    five = _llama(pipeline_parallel=5, recompute="full")  # 2 layers each
    # the re-run forward is per layer only: the busiest stage's 3 layers against 2
    assert four.time.recompute_s / five.time.recompute_s == pytest.approx(1.5)


def test_zero_with_pipelining_follows_the_framework_profile():
    with pytest.raises(ConfigError, match="framework='deepspeed'"):
        _llama(pipeline_parallel=2, data_parallel=2, zero_stage=3)
    assert _llama("bf16", "torchtitan", pipeline_parallel=2, data_parallel=2, zero_stage=3).fits


def test_tensor_parallel_overlap_is_computed_not_assumed():
    plain = _llama("bf16", "deepspeed", tensor_parallel=8, data_parallel=4)
    nemo = _llama("bf16", "nemo", tensor_parallel=8, data_parallel=4)
    assert 0 < nemo.time.tp_comm_s < plain.time.tp_comm_s


def test_op_recompute_lies_between_none_and_full():
    none, op, full = (_llama("bf16", "torchtitan", data_parallel=4, zero_stage=3, recompute=r)
                      for r in ("none", "op", "full"))
    assert none.time.recompute_s == 0 < op.time.recompute_s < full.time.recompute_s
    assert full.memory.activations_bytes < op.memory.activations_bytes \
        < none.memory.activations_bytes
    from forgeline.search.flops import recompute_flops_per_iteration, spec_model_flops

    extra = recompute_flops_per_iteration(32, 4096, 10, 1024, "op", 2816, kv=256, gated=True)
    assert op.hardware_tflops_per_device / op.model_tflops_per_device == pytest.approx(
        1 + extra / spec_model_flops(LLAMA, 32))


def test_op_recompute_needs_a_framework_that_has_it():
    with pytest.raises(ConfigError, match="recompute='op'.*framework='deepspeed'"):
        _llama(data_parallel=4, recompute="op")
    from forgeline.search import SearchSpace, search

    train = TrainingSpec(global_batch_size=32, precision="bf16", flash_attention=True)
    space = SearchSpace(tensor_parallel=[1], pipeline_parallel=[1], data_parallel=[4],
                        micro_batch_sizes=[1], zero_stages=[3], offload=["none"])
    found = {p.config.recompute for p in search(LLAMA, H100, train, top_k=50, space=space).plans}
    assert "op" not in found  # DeepSpeed: filtered out of the default space
    titan = train.model_copy(update={"framework": "torchtitan"})
    found = {p.config.recompute for p in search(LLAMA, H100, titan, top_k=50, space=space).plans}
    assert "op" in found
