"""The search's outputs: a parallel configuration, its predicted cost, and the ranked result."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from forgeline.errors import ConfigError
from forgeline.search.flops import RECOMPUTE_MODES
from forgeline.search.specs import ClusterSpec, ModelSpec, TrainingSpec

Recompute = Literal["none", "selective", "full", "op"]
"""Activation recomputation: nothing, the attention core, the whole layer, or every second
GEMM of a layer (torchtitan's op-level selective checkpointing,
:func:`~forgeline.search.flops.op_recomputed_gemms`)."""
Offload = Literal["none", "optimizer", "parameters"]

RECOMPUTE_CODES: dict[str, int] = {mode: code for code, mode in enumerate(RECOMPUTE_MODES)}
OFFLOAD_CODES: dict[str, int] = {"none": 0, "optimizer": 1, "parameters": 2}
GIB = 1024**3


class ParallelConfig(BaseModel):
    """How one training step is split over devices."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    tensor_parallel: int = Field(1, gt=0, description="TP degree t (Megatron column/row split)")
    pipeline_parallel: int = Field(1, gt=0, description="PP stages p")
    data_parallel: int = Field(1, gt=0, description="DP replicas d (ZeRO shards over these)")
    context_parallel: int = Field(1, gt=0, description="CP degree c: the sequence split over "
                                  "c ranks (ring attention); gradients reduce over d x c")
    virtual_stages: int = Field(1, gt=0, description="model chunks per device (interleaving) v")
    micro_batch_size: int = Field(1, gt=0, description="sequences per device per micro-step")
    zero_stage: int = Field(0, ge=0, le=3, description="ZeRO stage 0-3")
    recompute: Recompute = "none"
    sequence_parallel: bool = Field(False, description="Megatron sequence parallelism (t > 1)")
    offload: Offload = Field("none", description="ZeRO-Offload / ZeRO-Infinity of the shard")

    @property
    def devices(self) -> int:
        return (self.tensor_parallel * self.pipeline_parallel * self.data_parallel
                * self.context_parallel)

    def stage_layers(self, model: ModelSpec) -> int:
        """Layers on the most loaded pipeline stage: ``ceil(layers / p)`` (uneven stages as
        Megatron allows; the others hold fewer)."""
        return -(-model.layers // self.pipeline_parallel)

    def gradient_accumulation_steps(self, training: TrainingSpec) -> int:
        return training.global_batch_size // (self.micro_batch_size * self.data_parallel)

    def check(self, model: ModelSpec, cluster: ClusterSpec, training: TrainingSpec) -> None:
        """Raise ConfigError naming the first field that cannot work with these inputs."""
        t, p, d, v = (self.tensor_parallel, self.pipeline_parallel, self.data_parallel,
                      self.virtual_stages)
        if model.heads % t:
            raise ConfigError("tensor_parallel", t, f"heads={model.heads} is not divisible by it")
        if model.ffn_hidden % t:
            raise ConfigError("tensor_parallel", t,
                              f"ffn_hidden={model.ffn_hidden} is not divisible by it")
        c = self.context_parallel
        if model.layers < p * v:
            raise ConfigError("pipeline_parallel", p, f"layers={model.layers} is fewer than "
                              f"pipeline_parallel x virtual_stages = {p * v}")
        if model.seq_len % c:
            raise ConfigError("context_parallel", c,
                              f"seq_len={model.seq_len} is not divisible by it")
        if c > 1 and not training.flash_attention:
            raise ConfigError("context_parallel", c, "needs training.flash_attention "
                              "(ring attention runs on fused attention kernels)")
        if self.devices > cluster.total_devices:
            raise ConfigError("data_parallel", d, f"t*p*d*c={self.devices} exceeds the "
                              f"cluster's {cluster.total_devices} devices")
        per_step = self.micro_batch_size * d
        if training.global_batch_size % per_step:
            raise ConfigError("global_batch_size", training.global_batch_size,
                              f"not divisible by micro_batch_size x data_parallel = {per_step}")
        m = training.global_batch_size // per_step
        if v > 1 and (p < 2 or m % p):
            raise ConfigError("virtual_stages", v, "interleaving needs pipeline_parallel >= 2 "
                              f"and micro-batches per step ({m}) divisible by "
                              f"pipeline_parallel={p}")
        if self.zero_stage >= 2 and p > 1 and not training.profile.zero_with_pipeline:
            raise ConfigError("zero_stage", self.zero_stage, "ZeRO-2/3 do not combine with "
                              f"pipeline parallelism in framework={training.framework!r}")
        if self.offload == "optimizer" and self.zero_stage == 0:
            raise ConfigError("offload", self.offload, "optimizer offload needs zero_stage >= 1")
        if self.offload == "parameters" and self.zero_stage != 3:
            raise ConfigError("offload", self.offload, "parameter offload needs zero_stage 3")
        if self.recompute == "op" and not training.profile.op_recompute:
            raise ConfigError("recompute", "op", "op-level selective recomputation is "
                              f"torchtitan's; framework={training.framework!r} has none")
        if self.sequence_parallel and t == 1:
            raise ConfigError("sequence_parallel", True, "needs tensor_parallel > 1")


class StepTimeBreakdown(BaseModel):
    """Seconds per optimizer step by cause; they add up to the step time."""

    compute_s: float = Field(description="forward + backward kernels (GEMMs and memory-bound)")
    recompute_s: float = Field(description="re-running forward for dropped activations")
    tp_comm_s: float = Field(description="tensor/sequence/context-parallel communication "
                             "left exposed after overlap")
    pp_comm_s: float = Field(description="pipeline point-to-point sends")
    bubble_s: float = Field(description="pipeline fill and drain, (p-1)/v stage-times")
    dp_comm_s: float = Field(description="data-parallel / ZeRO collectives left after overlap")
    framework_s: float = Field(0.0, description="ZeRO runtime bookkeeping: flat-buffer and "
                               "shard copies, ZeRO-3 fetch/release hooks")
    offload_s: float = Field(description="host/NVMe transfers and the CPU optimizer step")
    optimizer_s: float = Field(description="optimizer step on the device")

    @property
    def total_s(self) -> float:
        return sum(getattr(self, name) for name in type(self).model_fields)


class MemoryBreakdown(BaseModel):
    """Peak bytes on the most loaded device (first or last pipeline stage)."""

    model_states_bytes: float = Field(description="parameters, gradients, optimizer states")
    activations_bytes: float = Field(description="stored activations incl. recompute workspace")
    buffers_bytes: float = Field(description="communication buckets")
    reserved_bytes: float = Field(description="runtime context and fragmentation")
    total_bytes: float
    device_memory_bytes: float = Field(description="capacity of one device")
    host_bytes_per_node: float = Field(description="offloaded states per node (host or NVMe)")

    @property
    def total_gib(self) -> float:
        return self.total_bytes / GIB


class Plan(BaseModel):
    """One evaluated configuration with its predicted step time and memory."""

    config: ParallelConfig
    gradient_accumulation_steps: int
    devices_used: int
    offload_device: Literal["none", "cpu", "nvme"]
    step_time_s: float
    time: StepTimeBreakdown
    memory: MemoryBreakdown
    fits: bool = Field(description="device and host memory suffice")
    bound_by: str = Field(description="largest term of the step time")
    model_tflops_per_device: float = Field(description="model FLOPs (no recompute) / s / device")
    hardware_tflops_per_device: float = Field(description="incl. recomputation")
    mfu: float = Field(description="model FLOPs utilisation of peak")

    def summary(self) -> str:
        c = self.config
        cp = f"c={c.context_parallel} " if c.context_parallel > 1 else ""
        return (f"t={c.tensor_parallel} p={c.pipeline_parallel} d={c.data_parallel} {cp}"
                f"v={c.virtual_stages} mb={c.micro_batch_size} "
                f"ga={self.gradient_accumulation_steps} zero={c.zero_stage} rc={c.recompute} "
                f"sp={int(c.sequence_parallel)} "
                f"off={c.offload}: {self.step_time_s:.3f} s/step, "
                f"{self.memory.total_gib:.1f} GiB, bound by {self.bound_by}")


class SearchResult(BaseModel):
    """Top-k plans (fastest first) or, when none fits, the reason."""

    plans: list[Plan]
    feasible: bool
    reason: str | None = Field(None, description="why nothing fits (None when feasible)")
    model: ModelSpec
    cluster: ClusterSpec
    devices: int
    training: TrainingSpec
    candidates_enumerated: int = Field(description="configurations generated")
    candidates_pruned: int = Field(description="dropped by the memory lower bound, unevaluated")
    candidates_evaluated: int
    candidates_feasible: int
    search_s: float

    @property
    def best(self) -> Plan:
        if not self.plans:
            raise ConfigError("plans", [], self.reason or "no plan")
        return self.plans[0]
