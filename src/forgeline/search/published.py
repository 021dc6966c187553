"""Published large-scale GPU training runs, as data, to validate the cost model on.

Each :class:`PublishedRun` is one configuration a framework's authors measured and
published: model shape, GPU system and count, parallel layout, batch, precision, the
measured throughput and where it is printed. Every number in ``value`` and in the layout
is copied from the cited source; what the source leaves open (micro-batch, interleaving,
recompute, the ZeRO stage) is either stated in ``assumptions`` or left to the search
(``None``: the search picks the fastest value that fits, as a user would). No run here was
used to build the cost model; :func:`forgeline.search.validation.validate` fits the one
calibrated constant on a named subset and reports the others as held out.

Framework families (``family``) are what leave-one-framework-out holds out together.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from forgeline.search.plan import Recompute
from forgeline.search.presets import PresetName
from forgeline.search.profiles import FrameworkName
from forgeline.search.specs import ModelSpec

Metric = Literal["tokens_per_s_per_gpu", "tflops_per_gpu", "step_s"]
"""What the source reports: tokens per second per GPU, model TFLOP/s per GPU (counted as
:func:`forgeline.search.flops.spec_model_flops` does), or seconds per iteration."""


class PublishedRun(BaseModel):
    """One published measurement and the configuration behind it."""

    model_config = ConfigDict(frozen=True, extra="forbid", protected_namespaces=())

    name: str
    family: str = Field(description="framework family, the unit of leave-one-framework-out")
    framework: FrameworkName = Field(description="profile the prediction uses")
    source: str = Field(description="paper section / table or repository path")
    model: ModelSpec
    gpu: PresetName
    cluster_overrides: dict[str, Any] = Field(default_factory=dict,
                                              description="where the system differs")
    gpus: int = Field(gt=0)
    tensor_parallel: int = Field(gt=0)
    pipeline_parallel: int = Field(gt=0)
    context_parallel: int = Field(1, gt=0)
    data_parallel: int = Field(gt=0)
    virtual_stages: int | None = Field(None, description="None: the search picks")
    micro_batch_size: int | None = Field(None, description="None: the search picks")
    zero_stage: int = Field(ge=0, le=3)
    recompute: Recompute | None = Field(None, description="None: the search picks")
    sequence_parallel: bool = False
    global_batch_size: int = Field(gt=0, description="sequences per step")
    precision: Literal["bf16", "fp16", "fp8"]
    metric: Metric
    value: float = Field(gt=0, description="the published number, in ``metric`` units")
    assumptions: str = Field(description="what is not in the source and how it is set")


# ---- model shapes (from the sources' configs) ----------------------------------------------
def _gpt(name: str, layers: int, hidden: int, heads: int, seq_len: int, vocab: int) -> ModelSpec:
    """A GPT-2/3-style model: biases, LayerNorm, learned positions, tied embeddings, f = 4h."""
    return ModelSpec(name=name, layers=layers, hidden=hidden, heads=heads, seq_len=seq_len,
                     vocab=vocab, dropout=False)


def _llama(name: str, shape: tuple[int, int, int, int, int], seq_len: int,
           vocab: int) -> ModelSpec:
    """A Llama: (layers, hidden, heads, kv_heads, ffn); SwiGLU, RMSNorm, no biases, RoPE,
    untied output head, no dropout."""
    layers, hidden, heads, kv_heads, ffn = shape
    return ModelSpec(name=name, layers=layers, hidden=hidden, heads=heads, kv_heads=kv_heads,
                     ffn_hidden=ffn, gated_mlp=True, biases=False, norm="rmsnorm",
                     seq_len=seq_len, vocab=vocab, tied_embeddings=False,
                     learned_position_embeddings=False, dropout=False)


LLAMA2_7B = (32, 4096, 32, 32, 11008)
LLAMA2_13B = (40, 5120, 40, 40, 13824)
LLAMA2_70B = (80, 8192, 64, 8, 28672)
LLAMA3_8B = (32, 4096, 32, 8, 14336)
LLAMA3_70B = (80, 8192, 64, 8, 28672)
LLAMA3_405B = (126, 16384, 128, 8, 53248)
"""Shapes from NeMo's ``llm/gpt/model/llama.py`` configs and torchtitan's Llama 3 flavors
(identical to the released models' config.json)."""

_MT_NLG = ModelSpec(name="mt-nlg-530b", layers=105, hidden=20480, heads=128, seq_len=2048,
                    vocab=51200, param_dtype="fp16", grad_dtype="fp32")

_NEMO = ("NeMo 24.07 performance summary, DGX-H100, FP8 "
         "(NVIDIA/NeMo docs/source/performance/performance_summary.md at 8e3d65d)")
_NEMO_ASSUME = ("NeMo performance recipes: distributed optimizer (ZeRO-1), sequence "
                "parallelism with TP > 1, Transformer Engine FP8 (delayed scaling), fused "
                "attention; recompute is not in the table (the search picks); GPT-2 BPE "
                "vocabulary padded to 50,304 / Llama tokenizer sizes")
_BRIDGE = ("Megatron-Bridge performance archive, 26.04.01 container, DGX-H100 FP8 "
           "(NVIDIA-NeMo/Megatron-Bridge docs/performance-summary-archive.md)")
_TITAN = ("torchtitan benchmarks/llama3_h100_202412_torchtitan.md (Grand Teton H100, 96 GB "
          "HBM2e, 2.4 TB/s, 500 W)")
_TITAN_GPU = {"device_memory_bytes": 96 * 10**9, "hbm_bytes_per_s": 2.4e12,
              "peak_flops_per_s": {"fp32": 67e12, "tf32": 494.7e12, "bf16": 912.5e12,
                                   "fp16": 912.5e12, "fp8": 1824.7e12}}
_TITAN_ASSUME = ("the source says the 500 W part's peak lies between H100 SXM (989.4 / "
                 "1,978.9 TFLOP/s bf16 / fp8) and NVL (835.5 / 1,670.5) and is unknown: the "
                 "midpoint is assumed (912.5 / 1,824.7); FSDP2 = ZeRO-3; 8B: 'selective "
                 "activation checkpointing' is the 8B toml's selective_ac_option 'op' "
                 "(recompute='op': every second matmul of a block re-run); seq_len 8192 "
                 "from the run's llama3 toml; 405B: micro-batch picked by the search, "
                 "interleaved = 2 stages per rank (assumed)")
_LLAMA3 = ("Llama 3 Herd of Models (Dubey et al. 2024) §3.3.2 Table 4, 405B pre-training "
           "stages; GPUs/TP/CP/PP/tokens per batch/TFLOPs also on Balaji, SC'24 talk")
_LLAMA3_ASSUME = ("H100 80 GB (DGX-class node, 400 Gb/s RoCE per GPU); sequence 8,192 in "
                  "the 8K stages and 131,072 in the long-context stage; batch = 2^24 tokens "
                  "('16M'); DP = GPUs / (TP CP PP); FSDP without resharding after forward "
                  "modelled as ZeRO-2; TFLOP/s compared as our model FLOPs per second; "
                  "micro-batch, interleaving and recompute picked by the search")
_GPT2_VOCAB = 50304

PUBLISHED_RUNS: tuple[PublishedRun, ...] = (
    # ---- Megatron-DeepSpeed: MT-NLG 530B on Selene (A100 80 GB) ----------------------
    *(PublishedRun(
        name=f"mt-nlg-530b-{gpus}", family="megatron-deepspeed", framework="megatron-deepspeed",
        source="Smith et al. 2022, Using DeepSpeed and Megatron to Train Megatron-Turing NLG "
               "530B, §2.4 (iteration time at 280 / 350 / 420 DGX A100 nodes)",
        model=_MT_NLG, gpu="a100-80gb", gpus=gpus, tensor_parallel=8, pipeline_parallel=35,
        data_parallel=gpus // 280, virtual_stages=1, zero_stage=1, recompute="full",
        global_batch_size=1920, precision="fp16", metric="step_s", value=step_s,
        assumptions="8-way tensor x 35-way pipeline as published; full activation "
                    "recomputation and ZeRO-1 data parallelism assumed (the DeepSpeed "
                    "pipeline engine of the time); vocabulary 51,200 (GPT-2 BPE padded); "
                    "micro-batch picked by the search; no interleaving in DeepSpeed's engine")
      for gpus, step_s in ((2240, 60.1), (2800, 50.2), (3360, 44.4))),
    # ---- NeMo (Megatron-Core + Transformer Engine), H100 FP8 ---------------------------
    *(PublishedRun(
        name=name, family="nemo", framework="nemo", source=_NEMO, model=model, gpu="h100",
        gpus=gpus, tensor_parallel=tp, pipeline_parallel=pp, context_parallel=cp,
        data_parallel=gpus // (tp * pp * cp), virtual_stages=vp, micro_batch_size=mbs,
        zero_stage=1, sequence_parallel=tp > 1, global_batch_size=gbs, precision="fp8",
        metric="tokens_per_s_per_gpu", value=tokens, assumptions=_NEMO_ASSUME)
      for name, model, gpus, gbs, mbs, tp, pp, cp, vp, tokens in (
          ("nemo-gpt3-5b", _gpt("gpt3-5b", 24, 4096, 32, 2048, _GPT2_VOCAB),
           64, 2048, 4, 1, 1, 1, 1, 23406),
          ("nemo-gpt3-20b", _gpt("gpt3-20b", 44, 6144, 48, 2048, _GPT2_VOCAB),
           64, 256, 2, 2, 1, 1, 1, 5851),
          ("nemo-gpt3-175b-128", _gpt("gpt3-175b", 96, 12288, 96, 2048, _GPT2_VOCAB),
           128, 256, 1, 4, 8, 1, 6, 716),
          ("nemo-gpt3-175b-512", _gpt("gpt3-175b", 96, 12288, 96, 2048, _GPT2_VOCAB),
           512, 2048, 2, 4, 8, 1, 6, 825),
          ("nemo-llama2-7b", _llama("llama2-7b", LLAMA2_7B, 4096, 32000),
           8, 128, 1, 1, 1, 1, 1, 16934),
          ("nemo-llama2-13b", _llama("llama2-13b", LLAMA2_13B, 4096, 32000),
           16, 128, 1, 1, 4, 1, 10, 8715),
          ("nemo-llama2-70b", _llama("llama2-70b", LLAMA2_70B, 4096, 32000),
           64, 128, 1, 4, 4, 1, 20, 1728),
          ("nemo-llama3-8b", _llama("llama3-8b", LLAMA3_8B, 8192, 128256),
           8, 128, 1, 1, 1, 2, 1, 12273),
          ("nemo-llama3-70b", _llama("llama3-70b", LLAMA3_70B, 8192, 128256),
           64, 128, 1, 4, 4, 2, 5, 1524),
      )),
    *(PublishedRun(
        name=name, family="nemo", framework="nemo", source=_BRIDGE, model=model, gpu="h100",
        gpus=gpus, tensor_parallel=tp, pipeline_parallel=pp, context_parallel=cp,
        data_parallel=gpus // (tp * pp * cp), virtual_stages=vp, micro_batch_size=1,
        zero_stage=1, sequence_parallel=True, global_batch_size=gbs, precision="fp8",
        metric="tokens_per_s_per_gpu", value=tokens, assumptions=_NEMO_ASSUME)
      for name, model, gpus, gbs, tp, pp, cp, vp, tokens in (
          ("bridge-llama3-70b", _llama("llama3-70b", LLAMA3_70B, 8192, 128256),
           64, 256, 4, 8, 1, 5, 1664),
          ("bridge-llama31-405b", _llama("llama3.1-405b", LLAMA3_405B, 8192, 128256),
           1024, 1536, 8, 8, 2, 8, 328),
      )),
    # ---- torchtitan (FSDP2 / TP / PP), H100 96 GB, H200, A100 ---------------------------
    *(PublishedRun(
        name=name, family="torchtitan", framework="torchtitan", source=src,
        model=_llama(model_name, shape, 8192, 128256), gpu=gpu,
        cluster_overrides=_TITAN_GPU if gpu == "h100" else {}, gpus=gpus,
        tensor_parallel=tp, pipeline_parallel=pp, data_parallel=gpus // (tp * pp),
        virtual_stages=vp, micro_batch_size=mbs, zero_stage=3, recompute=rc,
        sequence_parallel=tp > 1, global_batch_size=gbs, precision=prec,
        metric="tokens_per_s_per_gpu", value=tokens,
        assumptions=_TITAN_ASSUME if gpu == "h100" else note)
      for name, src, gpu, model_name, shape, gpus, tp, pp, vp, mbs, gbs, rc, prec, tokens, note in (
          ("titan-8b-8-compile", f"{_TITAN} Table 1", "h100", "llama3.1-8b", LLAMA3_8B,
           8, 1, 1, 1, 2, 16, "op", "bf16", 6667, ""),
          ("titan-8b-8-float8", f"{_TITAN} Table 1", "h100", "llama3.1-8b", LLAMA3_8B,
           8, 1, 1, 1, 2, 16, "op", "fp8", 8532, ""),
          ("titan-8b-128-compile", f"{_TITAN} Table 3", "h100", "llama3.1-8b", LLAMA3_8B,
           128, 1, 1, 1, 2, 256, "op", "bf16", 6514, ""),
          ("titan-8b-128-float8", f"{_TITAN} Table 3", "h100", "llama3.1-8b", LLAMA3_8B,
           128, 1, 1, 1, 2, 256, "op", "fp8", 8380, ""),
          ("titan-70b-256-float8", f"{_TITAN} Table 4 (2D)", "h100", "llama3.1-70b",
           LLAMA3_70B, 256, 8, 1, 1, 16, 512, "full", "fp8", 829, ""),
          ("titan-405b-512-1f1b", f"{_TITAN} Table 5 (1F1B)", "h100", "llama3.1-405b",
           LLAMA3_405B, 512, 8, 8, 1, None, 256, "full", "fp8", 100, ""),
          ("titan-405b-512-interleaved", f"{_TITAN} Table 5 (Interleaved 1F1B)", "h100",
           "llama3.1-405b", LLAMA3_405B, 512, 8, 8, 2, None, 256, "full", "fp8", 128, ""),
          ("titan-8b-h200-32", "torchtitan benchmarks/llama3-8b_h200_202506_trainy-whitefiber"
           ".md (4 nodes)", "h200", "llama3.1-8b", LLAMA3_8B, 32, 1, 1, 1, 2, 64, "op",
           "fp8", 10938, "DGX-class H200 nodes, 400 Gb/s per GPU; torch.compile + Float8 "
           "(dynamic scaling, FSDP float8 all-gather); selective AC (the 8B toml's 'op' "
           "option: recompute='op'); global batch = local 2 x 32 ranks"),
          ("titan-8b-h200-64", "torchtitan benchmarks/llama3-8b_h200_202506_trainy-whitefiber"
           ".md (8 nodes)", "h200", "llama3.1-8b", LLAMA3_8B, 64, 1, 1, 1, 2, 128, "op",
           "fp8", 10753, "as the 4-node run; global batch = local 2 x 64 ranks"),
      )),
    # ---- Meta's Llama 3 405B pre-training stack, H100 80 GB ------------------------------
    *(PublishedRun(
        name=name, family="llama3-meta", framework="llama3-meta", source=_LLAMA3,
        model=_llama("llama3-405b", LLAMA3_405B, seq, 128256), gpu="h100", gpus=gpus,
        tensor_parallel=8, pipeline_parallel=16, context_parallel=cp,
        data_parallel=gpus // (8 * 16 * cp), zero_stage=2, sequence_parallel=True,
        global_batch_size=2**24 // seq, precision="bf16", metric="tflops_per_gpu",
        value=tflops, assumptions=_LLAMA3_ASSUME)
      for name, gpus, cp, seq, tflops in (
          ("llama3-405b-8192", 8192, 1, 8192, 430),
          ("llama3-405b-16384", 16384, 1, 8192, 400),
          ("llama3-405b-16384-cp16", 16384, 16, 131072, 380),
      )),
)

FAMILIES: tuple[str, ...] = tuple(dict.fromkeys(r.family for r in PUBLISHED_RUNS))
