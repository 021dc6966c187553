"""Framework efficiency profiles as data: what each training stack's kernels and schedule do.

A profile does not carry a fitted speed factor. It says which kernels and overlaps a stack
uses, each from the stack's documentation or paper, and the cost model turns them into
time: which attention kernel runs (its achieved fraction of peak per GPU generation is a
cluster property, :attr:`ClusterSpec.attention_efficiency`), whether the data-parallel
gradient reduction, the ZeRO/FSDP parameter gathers, the tensor-parallel collectives and the
pipeline sends overlap compute (each then hides as far as the compute available per bucket
or chunk allows), whether ZeRO/FSDP sharding combines with pipelining, whether op-level
selective recomputation exists, and how FP8 scales its casts. ``TrainingSpec.framework``
selects one.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

FrameworkName = Literal["deepspeed", "megatron-lm-2021", "megatron-deepspeed", "nemo",
                        "torchtitan", "llama3-meta"]
"""Names ``TrainingSpec.framework`` accepts."""

AttentionKernel = Literal["unfused", "flash2", "flash3"]


class FrameworkProfile(BaseModel):
    """What one training stack does, with the sources that say so."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    attention_kernel: AttentionKernel = Field(
        description="attention used when TrainingSpec.flash_attention is set: FlashAttention-2 "
                    "class, or FlashAttention-3 / cuDNN fused attention class")
    grad_reduce_overlap: bool = Field(description="gradient reduction overlaps backward")
    param_gather_overlap: bool = Field(description="ZeRO/FSDP/distributed-optimizer parameter "
                                       "all-gathers overlap compute (prefetch)")
    tp_comm_overlap: bool = Field(description="tensor-parallel collectives overlap the GEMMs "
                                  "(TE userbuffers, PyTorch async TP)")
    p2p_overlap: bool = Field(description="pipeline sends/receives overlap compute")
    zero_with_pipeline: bool = Field(description="ZeRO-2/3 / FSDP sharding combines with "
                                     "pipeline parallelism")
    op_recompute: bool = Field(False, description="op-level selective recomputation (every "
                               "second GEMM of a block re-run in backward) is available")
    fp8_scaling: Literal["delayed", "dynamic"] = Field(
        "delayed", description="delayed: amax from history, fused into the cast (Transformer "
        "Engine); dynamic: a separate amax pass over each tensor before its cast (torchao)")
    sources: str


PROFILES: dict[str, FrameworkProfile] = {
    "deepspeed": FrameworkProfile(
        name="deepspeed", attention_kernel="flash2", grad_reduce_overlap=True,
        param_gather_overlap=True, tp_comm_overlap=False, p2p_overlap=False,
        zero_with_pipeline=False, fp8_scaling="delayed",
        sources="DeepSpeed config docs: zero_optimization.overlap_comm, stage3 prefetch "
                "buckets; ZeRO-2/3 are not supported with the pipeline engine"),
    "megatron-lm-2021": FrameworkProfile(
        name="megatron-lm-2021", attention_kernel="flash2", grad_reduce_overlap=False,
        param_gather_overlap=False, tp_comm_overlap=False, p2p_overlap=False,
        zero_with_pipeline=False,
        sources="Narayanan et al. SC'21 §2-4 (gradients all-reduced after the pipeline "
                "flush, no overlap); Korthikanti et al. 2022 (same schedule)"),
    "megatron-deepspeed": FrameworkProfile(
        name="megatron-deepspeed", attention_kernel="flash2", grad_reduce_overlap=False,
        param_gather_overlap=False, tp_comm_overlap=False, p2p_overlap=False,
        zero_with_pipeline=False,
        sources="Smith et al. 2022 (MT-NLG) §2: Megatron tensor slicing + DeepSpeed pipeline "
                "engine and data parallelism; the pipeline engine reduces gradients after "
                "the flush"),
    "nemo": FrameworkProfile(
        name="nemo", attention_kernel="flash3", grad_reduce_overlap=True,
        param_gather_overlap=True, tp_comm_overlap=True, p2p_overlap=True,
        zero_with_pipeline=False, fp8_scaling="delayed",
        sources="NeMo / Megatron-Core performance recipes: overlap_grad_reduce, "
                "overlap_param_gather (distributed optimizer), tp_comm_overlap (Transformer "
                "Engine userbuffers), overlap_p2p_comm; cuDNN fused attention; Transformer "
                "Engine FP8 delayed scaling"),
    "torchtitan": FrameworkProfile(
        name="torchtitan", attention_kernel="flash2", grad_reduce_overlap=True,
        param_gather_overlap=True, tp_comm_overlap=False, p2p_overlap=False,
        zero_with_pipeline=True, fp8_scaling="dynamic", op_recompute=True,
        sources="torchtitan docs: FSDP2 with implicit prefetch, SDPA attention "
                "(FlashAttention-2 backend), torchao Float8 tensorwise dynamic scaling, FSDP "
                "combined with PP; async TP only where a run enables it; activation "
                "checkpointing 'selective' with selective_ac_option 'op' (torchtitan "
                "parallelize_llama.py: the output of every second matmul is recomputed)"),
    "llama3-meta": FrameworkProfile(
        name="llama3-meta", attention_kernel="flash2", grad_reduce_overlap=True,
        param_gather_overlap=True, tp_comm_overlap=False, p2p_overlap=False,
        zero_with_pipeline=True,
        sources="Llama 3 Herd of Models §3.3.2: FSDP sharding (parameters kept after "
                "forward) with TP, CP (all-gather based) and PP; the attention kernel is not "
                "named (FlashAttention-2 class assumed)"),
}

FRAMEWORK_NAMES: tuple[str, ...] = tuple(PROFILES)
