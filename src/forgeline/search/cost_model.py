"""Analytical step time and memory of a configuration, evaluated on whole arrays at once.

Every kernel takes ``flops / (peak * eff(flops)) + bytes / (hbm * eff(bytes))`` (Calculon's
no-overlap mode), with the achieved-fraction curves of the :class:`ClusterSpec` (the matmul
curve topped by the GPU's measured matmul ceiling per precision). A layer is its GEMMs
(grouped-query K/V, gated MLPs), the attention core and the memory-bound kernels (norms,
softmax, dropout, activation, residual). FP8 runs only the GEMMs in FP8: attention and the
memory-bound kernels stay 16-bit, and every GEMM operand pays a cast (plus an amax pass
under dynamic scaling). Backward is twice the forward GEMMs and memory traffic. The
pipeline runs ``m + (p-1)/v`` stage-times per step on the busiest stage (``ceil(L/p)``
layers: uneven stages allowed). Context parallelism splits each sequence over ``c`` ranks
and passes K/V round a ring behind the attention blocks.

Overlap is computed, not assumed: a collective that the framework overlaps (its
:class:`~forgeline.search.profiles.FrameworkProfile`) hides behind the compute that runs
alongside it, except its last bucket or chunk (:func:`forgeline.search.comm.overlapped_s`):
the data-parallel reduce behind one micro-batch's backward, parameter gathers behind
forward, tensor-parallel collectives behind the layer's GEMMs. Communication comes from
:mod:`forgeline.search.comm`, memory from :mod:`forgeline.search.memory`. DeepSpeed's ZeRO
bookkeeping (buffer and shard copies, ZeRO-3 hooks) is its own term, hidden behind compute
as far as the cluster's ``overlap_efficiency`` allows (GPUs: all of it, CPUs: none).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from forgeline.search import comm
from forgeline.search.flops import (
    op_recomputed_gemms,
    recompute_flops_per_iteration,
    spec_model_flops,
)
from forgeline.search.memory import (
    activation_bytes_per_layer,
    deepspeed_model_state_bytes,
    host_offload_bytes,
    recompute_working_bytes,
)
from forgeline.search.plan import (
    OFFLOAD_CODES,
    RECOMPUTE_CODES,
    MemoryBreakdown,
    ParallelConfig,
    Plan,
    StepTimeBreakdown,
)
from forgeline.search.schedule import inflight_microbatches
from forgeline.search.specs import DTYPE_BYTES, ClusterSpec, ModelSpec, TrainingSpec

BUCKET_ELEMENTS = 50_000_000
"""Reduce / all-gather / prefetch bucket size (elements) the emitted DeepSpeed config uses."""

HOST_MEMORY_USABLE = 0.8
"""Fraction of host memory offloaded states may take (the rest: OS, loaders, pinned buffers)."""

TIME_TERMS = ("compute_s", "recompute_s", "tp_comm_s", "pp_comm_s", "bubble_s", "dp_comm_s",
              "framework_s", "offload_s", "optimizer_s")

CANDIDATE_FIELDS = ("tp", "pp", "dp", "vpp", "mb", "zero", "rc", "sp", "off", "cp")
"""Array names of a candidate batch: TP, PP, DP, chunks, micro-batch, ZeRO stage,
recompute code (0 none, 1 selective, 2 full, 3 op), sequence parallel, offload code (0-2),
context parallel."""


def _curve(x: Any, points: list[tuple[float, float]]) -> Any:
    xs = np.log10([p[0] for p in points])
    ys = np.array([p[1] for p in points])
    return np.interp(np.log10(np.maximum(x, 1.0)), xs, ys)


class _Kernels:
    """Time of one matmul / memory-bound kernel on one device (arrays in, arrays out)."""

    def __init__(self, cluster: ClusterSpec, precision: str) -> None:
        self.cluster, self.peak = cluster, cluster.peak_for(precision)
        self.scale = cluster.matmul_scale(precision)

    def mem(self, nbytes: Any) -> Any:
        eff = _curve(nbytes, self.cluster.memory_efficiency)
        return nbytes / (self.cluster.hbm_bytes_per_s * eff)

    def mm(self, flops: Any, nbytes: Any) -> Any:
        eff = _curve(flops, self.cluster.matmul_efficiency) * self.scale
        return flops / (self.peak * eff) + self.mem(nbytes)

    def gemm(self, m: Any, k: Any, n: Any, e: int) -> Any:
        """(m x k) @ (k x n) in element size e."""
        return self.mm(2.0 * m * k * n, e * (m * k + k * n + m * n))


def zero_copy_passes(zero: Any, d: Any, m: Any, full: Any = False) -> Any:
    """Passes of the parameter / gradient bytes through DeepSpeed's ZeRO buffers per step.

    Counted from DeepSpeed's stage 1-3 optimizers (each pass reads and writes the bytes once):
    ZeRO-1 reduces at the accumulation boundary only: gradients into the flat reduce bucket
    (1), the reduced shard into the fp32 gradient partition (1/d), the updated shards
    gathered into the flat parameters (1). ZeRO-2 does the first two every micro-step (m)
    and the gather once. ZeRO-3 gathers every partitioned parameter for each forward
    (1 + 1 with full recompute) and for backward (1), and moves gradients into the bucket
    (1) and the shard out (1/d), every micro-step; then the updated shard into the working
    copy (1/d). ZeRO-0 (plain data parallel) counts none: its gradient bucketing belongs to
    the all-reduce.
    """
    zero, full = np.asarray(zero), np.asarray(full, dtype=float)
    shard = 1.0 / np.asarray(d, dtype=float)
    return np.select([zero == 0, zero == 1, zero == 2],
                     [0.0, 2.0 + shard, m * (1.0 + shard) + 1.0],
                     m * (3.0 + full + shard) + shard)


def zero3_partitioned_tensors(model: ModelSpec, t: Any = 1, p: Any = 1) -> Any:
    """Parameter tensors ZeRO-3 partitions (fetches and releases) on one device.

    The emitted ``stage3_param_persistence_threshold`` (10 x hidden elements) keeps biases
    and LayerNorms resident; what is left is the four weight matrices of every layer, the
    word (and learned position) embedding and an untied output head.
    """
    extra = 1 + int(model.learned_position_embeddings) + int(not model.tied_embeddings)
    return 4 * model.layers / np.asarray(p, dtype=float) + extra


def zero_bookkeeping_s(zero: Any, params: Any, d: Any, m: Any, full: Any, cluster: ClusterSpec,
                       *, param_bytes: int, grad_bytes: int, tensors: Any) -> Any:
    """Seconds per step DeepSpeed's ZeRO runtime spends outside kernels and collectives.

    ``passes x params x bytes / zero_copy_rate`` (:func:`zero_copy_passes`) plus, for
    ZeRO-3, a fetch and a release of every partitioned tensor per forward and backward,
    ``m (2 + full) 2 tensors x zero3_hook_s_per_tensor``. On GPUs the copies run at HBM speed
    and cost little; on CPUs they run through gloo on the compute cores.
    """
    nbytes = params * max(param_bytes, grad_bytes)
    copies = zero_copy_passes(zero, d, m, full) * nbytes / cluster.zero_copy_rate
    events = np.where(np.asarray(zero) == 3,
                      m * 2.0 * (2.0 + np.asarray(full, dtype=float)) * tensors, 0.0)
    return copies + events * cluster.zero3_hook_s_per_tensor


def _stage_params(model: ModelSpec, t: Any, p: Any) -> tuple[Any, Any, Any]:
    """Parameters per TP rank on the first stage, the last stage, and the heavier one
    (the most loaded stage holds ``ceil(layers / p)`` layers)."""
    h, v = model.hidden, model.vocab
    layers = np.ceil(model.layers / p) * model.params_per_layer / t
    emb = v * h / t + (model.seq_len * h if model.learned_position_embeddings else 0)
    head = h * (2 if model.norm == "layernorm" else 1) + (0 if model.tied_embeddings
                                                          else v * h / t)
    tied_copy = np.where(p > 1, v * h / t, 0.0) if model.tied_embeddings else 0.0
    single = p == 1
    first = layers + emb + np.where(single, head, 0.0)
    last = np.where(single, first, layers + head + tied_copy)
    return first, last, np.maximum(first, last)


def fp8_cast_bytes(tokens: Any, model: ModelSpec, t: Any, scaling: str) -> tuple[Any, Any]:
    """Bytes moved per layer and micro-batch to cast GEMM operands to FP8 (forward, backward).

    Forward casts every GEMM input (the layer input twice, the attention output, the MLP
    activation) and every weight; backward casts every GEMM's output gradient. A cast
    with its transpose reads 2 bytes and writes two 1-byte copies (4 bytes per element,
    Transformer Engine's fused cast-transpose computes the amax in the same pass);
    dynamic scaling first reads the tensor once more for its amax (+2 bytes).
    """
    h, f, kv, nm = model.hidden, model.ffn_hidden, model.kv_hidden, model.mlp_matrices
    per_element = 4 + (2 if scaling == "dynamic" else 0)
    inputs = tokens * (2 * h + h / t + f / t)
    weights = (h * (h + 2 * kv) + h * h + nm * h * f) / t
    grads = tokens * ((h + 2 * kv) / t + h + (nm - 1) * f / t + h)
    return per_element * (inputs + weights), per_element * grads


def evaluate(c: dict[str, np.ndarray], model: ModelSpec, cluster: ClusterSpec,
             training: TrainingSpec) -> dict[str, np.ndarray]:
    """Predict time terms, memory and feasibility for every candidate in ``c``.

    ``c`` maps each of :data:`CANDIDATE_FIELDS` to an array (all the same length). The
    configurations must already be valid (divisibility etc.); see :mod:`.space`.
    """
    f64 = {k: np.asarray(c[k], dtype=np.float64) for k in CANDIDATE_FIELDS}
    t, p, d, v, b, cp = (f64[k] for k in ("tp", "pp", "dp", "vpp", "mb", "cp"))
    zero, rc, off = (np.asarray(c[k]) for k in ("zero", "rc", "off"))
    sp = np.asarray(c["sp"], dtype=bool)
    L, h, a, f, s, V = (model.layers, model.hidden, model.heads, model.ffn_hidden,
                        model.seq_len, model.vocab)
    kvh, nm = model.kv_hidden, model.mlp_matrices
    profile = training.profile
    B = training.global_batch_size
    e = training.activation_bytes
    fp8 = training.precision == "fp8"
    eg = 1 if fp8 else e  # GEMM operand bytes
    mask = 1 if model.dropout else 0
    flash = training.flash_attention
    bp, bg = DTYPE_BYTES[model.param_dtype], DTYPE_BYTES[model.grad_dtype]
    bo = training.optimizer_bytes_per_param(model)
    k = _Kernels(cluster, training.gemm_precision)
    k16 = _Kernels(cluster, training.attention_precision)
    m = B / (d * b)
    tok = b * s / cp  # tokens of one micro-batch on one device
    full, selective, op = rc == 2, rc == 1, rc == 3

    # ---- one layer, one micro-batch, one device -----------------------------------------
    gemm_f = (k.gemm(tok, h, (h + 2 * kvh) / t, eg) + k.gemm(tok, h / t, h, eg)
              + k.gemm(tok, h, (nm - 1) * f / t, eg) + k.gemm(tok, f / t, h, eg))
    if fp8:
        cast_fwd, cast_bwd = fp8_cast_bytes(tok, model, t, profile.fp8_scaling)
        cast_f, cast_b = 4 * k16.mem(cast_fwd / 4), 4 * k16.mem(cast_bwd / 4)
    else:
        cast_f = cast_b = 0.0
    heads_local = a / t
    if flash:
        core_flops = 4.0 * b * (s / cp) * s * h / t
        core_bytes = e * tok * (2 * h + 2 * kvh) / t
        eff = cluster.attention_efficiency.get(profile.attention_kernel)
        if eff:  # a fused causal kernel skips the masked half of the score tiles
            rate = k16.peak * eff
            core_f = core_flops / 2 / rate + k16.mem(core_bytes)
            core_b = 2.5 * core_flops / 2 / rate + k16.mem(2 * core_bytes)
        else:
            core_f = k16.mm(core_flops, core_bytes)
            core_b = k16.mm(2.5 * core_flops, 2 * core_bytes)
    else:
        scores = b * heads_local * s * s
        one_bmm = k16.mm(2.0 * b * s * s * h / t, e * (2 * b * s * h / t + scores))
        softmax = k16.mem(2 * e * scores) + k16.mem((2 * e + mask) * scores)  # softmax, dropout
        core_f = 2 * one_bmm + softmax
        core_b = 2 * (2 * one_bmm + softmax)
    nh = tok * h / np.where(sp, t, 1.0)
    activation_fn = k16.mem((3 if model.gated_mlp else 2) * e * tok * f / t)  # SwiGLU / GeLU
    elementwise = (2 * k16.mem(2 * e * nh)  # two norms
                   + 2 * k16.mem((3 * e + mask) * nh)  # two bias-dropout-residual
                   + activation_fn)
    t_fwd = gemm_f + cast_f + core_f + elementwise
    t_bwd = 2 * gemm_f + cast_b + core_b + 2 * elementwise
    # op-level: the re-run GEMMs (with their share of the FP8 casts) and the memory-bound
    # kernels between them (norms, activation), whose outputs are not saved either
    # (a GEMM back to width h is row-parallel: its input is split; the others column-parallel)
    op_gemms = sum(k.gemm(tok, i / t, o, eg) if o == h else k.gemm(tok, i, o / t, eg)
                   for i, o in op_recomputed_gemms(h, f, kvh, model.gated_mlp))
    op_rc = op_gemms * (1 + cast_f / gemm_f) + elementwise
    t_rc = np.select([full, selective & (not flash), op], [t_fwd, core_f, op_rc], 0.0)

    ar_tp = comm.collective_s("all_reduce", tok * h * e, t, 1, cluster)
    ag_tp = comm.collective_s("all_gather", tok * h * e, t, 1, cluster)
    # 2 all-reduces forward, 2 backward, 2 more when the forward is re-run; sequence
    # parallelism swaps each for all-gather + reduce-scatter (same bytes) and re-gathers
    # the two sequence-split GEMM inputs in backward (Korthikanti §4.2.2).
    tp_raw = (4 + 2 * full) * ar_tp + np.where(sp, 2 * ag_tp, 0.0)
    if profile.tp_comm_overlap:  # chunked over the t ranks: one chunk stays exposed
        tp_layer = comm.overlapped_s(tp_raw, gemm_f * (3 + full), t)
    else:
        tp_layer = tp_raw
    # context parallelism: K and V chunks pass round the ring behind the attention blocks
    kv_chunk = 2 * b * (s / cp) * kvh / t * e
    ring = (cp - 1) * comm.p2p_s(kv_chunk, t, cluster)
    cp_layer = np.where(cp > 1, comm.exposed_s(ring, core_f) + comm.exposed_s(2 * ring, core_b)
                        + np.where(full, comm.exposed_s(ring, core_f), 0.0), 0.0)

    # ---- embedding (first stage) and logits + loss (last stage) ------------------------
    emb_f = k16.mem((2 * e + mask) * tok * h)
    emb_t = emb_f * 3
    logits_f = k16.gemm(tok, h, V / t, e) + k16.mem((e + 4) * tok * V / t)
    logits_t = 3 * logits_f
    ce_ar = comm.collective_s("all_reduce", 3 * 4 * tok, t, 1, cluster)
    first_extra, last_extra = emb_t + ar_tp, logits_t + ar_tp + 3 * ce_ar
    extra = np.where(p == 1, first_extra + last_extra, np.maximum(first_extra, last_extra))
    extra_compute = np.where(p == 1, emb_t + logits_t,
                             np.where(first_extra >= last_extra, emb_t, logits_t))

    # ---- pipeline point-to-point ---------------------------------------------------------
    per_stage = np.ceil(L / p)  # the most loaded stage (uneven stages allowed)
    payload = tok * h * e / t  # scatter-gather (or sequence-parallel) split across TP ranks
    gather = np.where(sp, 0.0, comm.collective_s("all_gather", tok * h * e, t, 1, cluster))
    p2p_raw = np.where(p > 1, 2 * v * (comm.p2p_s(payload, t * d * cp, cluster) + gather), 0.0)
    chunk_compute = per_stage / v * (t_fwd + t_bwd)
    p2p_mb = comm.exposed_s(p2p_raw, chunk_compute) if profile.p2p_overlap else p2p_raw

    layer_mb = t_fwd + t_bwd + t_rc + tp_layer + cp_layer
    t_mb = per_stage * layer_mb + extra + p2p_mb
    compute_s = m * (per_stage * (t_fwd + t_bwd) + extra_compute)
    recompute_s = m * per_stage * t_rc
    tp_comm_s = m * (per_stage * (tp_layer + cp_layer) + extra - extra_compute)
    pp_comm_s = m * p2p_mb
    bubble_s = (p - 1) / v * t_mb

    # ---- data parallel / ZeRO (gradients reduce over d x c ranks at stride t) ------------
    _, _, P = _stage_params(model, t, p)
    dg = d * cp
    shard = P / dg
    buckets = np.maximum(np.ceil(P / BUCKET_ELEMENTS), 1.0)
    grads, weights = P * bg, P * bp
    rs = comm.collective_s("reduce_scatter", grads, dg, t, cluster)
    ag = comm.collective_s("all_gather", weights, dg, t, cluster)
    ar = comm.collective_s("all_reduce", grads, dg, t, cluster)
    # where offloaded states live: host memory if they fit, else NVMe
    host_per_device = host_offload_bytes(P, dg, off, bp, bo)
    host_per_node = host_per_device * cluster.devices_per_node
    on_cpu = host_per_node <= HOST_MEMORY_USABLE * cluster.host_memory_bytes
    # DeepSpeed swaps to NVMe only under ZeRO-3 (ZeRO-Infinity); stages 1-2 offload to CPU.
    on_nvme = ((~on_cpu) & (zero == 3) & (host_per_node <= cluster.nvme_bytes)
               & (cluster.nvme_bytes_per_s > 0))
    host_ok = (off == 0) | on_cpu | on_nvme
    hide = cluster.overlap_efficiency
    fwd_mb = per_stage * t_fwd * hide
    bwd_mb = per_stage * t_bwd * hide
    overlap = training.overlap_grad_reduce and profile.grad_reduce_overlap
    window = bwd_mb if overlap else 0.0
    gather_window = fwd_mb if profile.param_gather_overlap else 0.0
    dp0 = comm.overlapped_s(ar, window, buckets)
    dp1 = comm.overlapped_s(rs, window, buckets) + comm.overlapped_s(ag, gather_window, buckets)
    dp2 = m * comm.overlapped_s(rs, window, buckets) + comm.overlapped_s(ag, gather_window,
                                                                         buckets)
    fetch = np.where(off == 2, comm.host_transfer_s(shard * bp, cluster, nvme=on_nvme), 0.0)
    n_fwd_gathers = 1 + full
    rc_mb = per_stage * t_rc * hide
    z3 = m * (comm.overlapped_s(n_fwd_gathers * ag, fwd_mb + rc_mb, buckets)
              + comm.overlapped_s(ag + rs, bwd_mb, buckets))
    z3_fetch = m * (comm.overlapped_s(n_fwd_gathers * (ag + fetch), fwd_mb + rc_mb, buckets)
                    + comm.overlapped_s(ag + fetch + rs, bwd_mb, buckets))
    dp_comm_s = np.select([zero == 0, zero == 1, zero == 2], [dp0, dp1, dp2], z3)
    if model.tied_embeddings:
        tied = comm.collective_s("all_reduce", V * h / t * bg, 2,
                                 t * dg * np.maximum(p - 1, 1), cluster)
        dp_comm_s = dp_comm_s + np.where(p > 1, tied, 0.0)

    # ---- ZeRO runtime bookkeeping (DeepSpeed) ---------------------------------------------
    # Device-side copies run on DeepSpeed's side streams and the host-side hooks run ahead
    # of the device's queue, so with overlap they hide behind the step's compute; on CPUs
    # (overlap 0) everything runs on the compute cores and all of it is exposed.
    bookkeeping = zero_bookkeeping_s(zero, P, dg, m, full, cluster, param_bytes=bp,
                                     grad_bytes=bg,
                                     tensors=zero3_partitioned_tensors(model, t, p))
    framework_s = comm.exposed_s(bookkeeping, hide * (compute_s + recompute_s))

    # ---- optimizer step and offload ------------------------------------------------------
    opt_params = np.where(zero >= 1, shard, P)
    step_bytes = opt_params * (2 * bo + max(bg, 4) + bp)
    optimizer_s = np.where(off == 0, k16.mem(step_bytes), 0.0)
    cpu_adam = shard * (2 * bo + 4 + bp) / (cluster.host_memory_bytes_per_s
                                            / cluster.devices_per_node)
    d2h = comm.host_transfer_s(shard * bg, cluster)
    d2h_exposed = np.where(zero >= 2, m * comm.exposed_s(d2h, window), comm.exposed_s(d2h, window))
    h2d = comm.host_transfer_s(shard * bp, cluster)
    nvme_states = np.where(on_nvme, comm.host_transfer_s(2 * shard * bo, cluster, nvme=True), 0.0)
    offload_s = np.where(off >= 1, cpu_adam + d2h_exposed + nvme_states, 0.0)
    offload_s = offload_s + np.where(off == 1, h2d, 0.0) + np.where(off == 2, z3_fetch - z3, 0.0)

    # ---- memory --------------------------------------------------------------------------
    P_first, P_last, _ = _stage_params(model, t, p)
    largest = model.largest_module_params / t
    act_kw = dict(act_bytes=e, dropout=model.dropout, flash_attention=flash,
                  sequence_parallel=sp, recompute=rc, kv=kvh, gated=model.gated_mlp)
    act_layer = activation_bytes_per_layer(s / cp, b, h, a, f, t, **act_kw)
    working = recompute_working_bytes(s / cp, b, h, a, f, t, **act_kw)
    inflight = inflight_microbatches(p, m, v)
    logits_mem = (e + 4) * tok * V / t
    state_kw = dict(param_bytes=bp, grad_bytes=bg, optimizer_bytes=bo,
                    largest_module_params=largest)
    states_first = deepspeed_model_state_bytes(P_first, dg, zero, off, **state_kw)
    states_last = deepspeed_model_state_bytes(P_last, dg, zero, off, **state_kw)
    acts_first = inflight * per_stage * act_layer + working + np.where(p == 1, logits_mem, 0.0)
    acts_last = per_stage * act_layer + working + logits_mem
    first_total, last_total = states_first + acts_first, states_last + acts_last
    use_first = first_total >= last_total
    states = np.where(use_first, states_first, states_last)
    acts = np.where(use_first, acts_first, acts_last)
    bucket = np.minimum(BUCKET_ELEMENTS, P)
    buffers = np.where(zero == 0, bucket * bg, bucket * (bg + bp))
    reserved = float(cluster.reserved_bytes_per_device)
    mem_total = states + acts + buffers + reserved
    fits = (mem_total <= cluster.device_memory_bytes) & host_ok

    terms = {
        "compute_s": compute_s, "recompute_s": recompute_s, "tp_comm_s": tp_comm_s,
        "pp_comm_s": pp_comm_s, "bubble_s": bubble_s, "dp_comm_s": dp_comm_s,
        "framework_s": framework_s, "offload_s": offload_s, "optimizer_s": optimizer_s,
    }
    terms = {name: np.broadcast_to(np.asarray(val, dtype=float), t.shape)
             for name, val in terms.items()}
    step = sum(terms.values())
    devices = t * p * d * cp
    model_flops = spec_model_flops(model, B)
    recompute_flops = np.select(
        [full, selective & (not flash), op],
        [recompute_flops_per_iteration(B, s, L, h, mode, f, kv=kvh, gated=model.gated_mlp)
         for mode in ("full", "selective", "op")], 0.0)
    hw_flops = model_flops + recompute_flops
    return {
        **terms,
        "step_s": step,
        "gas": m,
        "devices": devices,
        "states_bytes": states,
        "activations_bytes": acts,
        "buffers_bytes": buffers,
        "reserved_bytes": np.full(t.shape, reserved),
        "memory_bytes": mem_total,
        "host_bytes_per_node": np.where(off == 0, 0.0, host_per_node),
        "offload_device": np.where(off == 0, 0, np.where(on_cpu, 1, 2)),
        "host_ok": host_ok,
        "fits": fits,
        "model_tflops": model_flops / (step * devices) / 1e12,
        "hardware_tflops": hw_flops / (step * devices) / 1e12,
    }


def candidates_from_configs(configs: list[ParallelConfig]) -> dict[str, np.ndarray]:
    """Arrays of :data:`CANDIDATE_FIELDS` for a list of configurations."""
    rows = [(cf.tensor_parallel, cf.pipeline_parallel, cf.data_parallel, cf.virtual_stages,
             cf.micro_batch_size, cf.zero_stage, RECOMPUTE_CODES[cf.recompute],
             cf.sequence_parallel, OFFLOAD_CODES[cf.offload], cf.context_parallel)
            for cf in configs]
    cols = list(zip(*rows, strict=True)) if rows else [()] * len(CANDIDATE_FIELDS)
    return {name: np.asarray(col, dtype=np.int64) for name, col in
            zip(CANDIDATE_FIELDS, cols, strict=True)}


_RECOMPUTE_NAMES = {v: k for k, v in RECOMPUTE_CODES.items()}
_OFFLOAD_NAMES = {v: k for k, v in OFFLOAD_CODES.items()}
_OFFLOAD_DEVICES = {0: "none", 1: "cpu", 2: "nvme"}


def config_from_row(c: dict[str, np.ndarray], i: int) -> ParallelConfig:
    """The :class:`ParallelConfig` of row ``i`` of candidate arrays ``c``."""
    return ParallelConfig(
        tensor_parallel=int(c["tp"][i]), pipeline_parallel=int(c["pp"][i]),
        data_parallel=int(c["dp"][i]), virtual_stages=int(c["vpp"][i]),
        micro_batch_size=int(c["mb"][i]), zero_stage=int(c["zero"][i]),
        recompute=_RECOMPUTE_NAMES[int(c["rc"][i])], sequence_parallel=bool(c["sp"][i]),
        offload=_OFFLOAD_NAMES[int(c["off"][i])], context_parallel=int(c["cp"][i]),
    )


def plan_from_row(c: dict[str, np.ndarray], r: dict[str, np.ndarray], i: int,
                  model: ModelSpec, cluster: ClusterSpec, training: TrainingSpec) -> Plan:
    """Build the pydantic :class:`Plan` of row ``i`` of candidates ``c`` / results ``r``."""
    config = config_from_row(c, i)
    times = {name: float(r[name][i]) for name in TIME_TERMS}
    bound = max(times, key=times.get).removesuffix("_s")
    peak = cluster.peak_for(training.precision)
    return Plan(
        config=config,
        gradient_accumulation_steps=int(round(float(r["gas"][i]))),
        devices_used=int(r["devices"][i]),
        offload_device=_OFFLOAD_DEVICES[int(r["offload_device"][i])],
        step_time_s=float(r["step_s"][i]),
        time=StepTimeBreakdown(**times),
        memory=MemoryBreakdown(
            model_states_bytes=float(r["states_bytes"][i]),
            activations_bytes=float(r["activations_bytes"][i]),
            buffers_bytes=float(r["buffers_bytes"][i]),
            reserved_bytes=float(r["reserved_bytes"][i]),
            total_bytes=float(r["memory_bytes"][i]),
            device_memory_bytes=float(cluster.device_memory_bytes),
            host_bytes_per_node=float(r["host_bytes_per_node"][i]),
        ),
        fits=bool(r["fits"][i]),
        bound_by=bound,
        model_tflops_per_device=float(r["model_tflops"][i]),
        hardware_tflops_per_device=float(r["hardware_tflops"][i]),
        mfu=float(r["model_tflops"][i]) * 1e12 / peak,
    )


def estimate(config: ParallelConfig, model: ModelSpec, cluster: ClusterSpec,
             training: TrainingSpec) -> Plan:
    """Predict one configuration (validated first; ConfigError names the bad field)."""
    config.check(model, cluster, training)
    c = candidates_from_configs([config])
    return plan_from_row(c, evaluate(c, model, cluster, training), 0, model, cluster, training)
