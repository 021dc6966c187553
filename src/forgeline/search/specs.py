"""Typed inputs of the strategy search: the model, the cluster and the training setup.

Every field carries its unit in its name or docstring. Bad values fail at construction
with a pydantic error naming the field, or a :class:`forgeline.errors.ConfigError`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from forgeline.errors import ConfigError
from forgeline.search.presets import PRESET_NAMES, preset_fields
from forgeline.search.profiles import PROFILES, FrameworkName, FrameworkProfile

if TYPE_CHECKING:
    from torch import nn

Dtype = Literal["fp32", "bf16", "fp16"]
"""Storage dtypes of parameters, gradients and optimizer states."""

Precision = Literal["fp32", "tf32", "bf16", "fp16", "fp8"]
"""Compute precisions a cluster can list a peak rate for."""

DTYPE_BYTES: dict[str, int] = {"fp32": 4, "tf32": 4, "bf16": 2, "fp16": 2, "fp8": 1}
"""Bytes per element of each dtype / precision name."""

_FROZEN = ConfigDict(frozen=True, extra="forbid")


class ModelSpec(BaseModel):
    """A decoder-only transformer (GPT shape): what the cost model needs to know."""

    model_config = _FROZEN

    name: str = "model"
    layers: int = Field(gt=0, description="number of transformer blocks")
    hidden: int = Field(gt=0, description="hidden size h (elements)")
    heads: int = Field(gt=0, description="attention (query) heads a")
    kv_heads: int = Field(0, ge=0, description="key/value heads: 0 = heads (multi-head), "
                          "fewer = grouped-query, 1 = multi-query attention")
    ffn_hidden: int = Field(0, ge=0, description="MLP inner size (elements); 0 means 4*hidden")
    gated_mlp: bool = Field(False, description="gated MLP (SwiGLU): gate, up and down "
                            "projections, three h x ffn_hidden matrices instead of two")
    biases: bool = Field(True, description="linear layers carry biases (GPT-2/3); Llama: none")
    norm: Literal["layernorm", "rmsnorm"] = Field("layernorm", description="RMSNorm has "
                                                 "no bias")
    seq_len: int = Field(gt=0, description="sequence length s (tokens)")
    vocab: int = Field(gt=0, description="vocabulary size V (tokens)")
    tied_embeddings: bool = Field(True, description="output head shares the input embedding")
    learned_position_embeddings: bool = Field(True, description="an s x h position table")
    dropout: bool = Field(True, description="dropout masks are stored (Korthikanti et al.)")
    param_dtype: Dtype = Field("bf16", description="working copy of the weights")
    grad_dtype: Dtype = Field("bf16", description="gradients as reduced across data parallel")
    optimizer_dtype: Dtype = Field("fp32", description="master weights and optimizer states")

    @model_validator(mode="before")
    @classmethod
    def _defaults(cls, data: object) -> object:
        if isinstance(data, dict) and not data.get("ffn_hidden") and "hidden" in data:
            data = {**data, "ffn_hidden": 4 * int(data["hidden"])}
        if isinstance(data, dict) and not data.get("kv_heads") and "heads" in data:
            data = {**data, "kv_heads": int(data["heads"])}
        return data

    @model_validator(mode="after")
    def _check(self) -> ModelSpec:
        if self.hidden % self.heads:
            raise ConfigError("heads", self.heads, f"hidden={self.hidden} is not divisible by "
                              "heads")
        if self.kv_heads > self.heads or self.heads % self.kv_heads:
            raise ConfigError("kv_heads", self.kv_heads, f"must divide heads={self.heads}")
        return self

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    @property
    def kv_hidden(self) -> int:
        """Width of the key (or value) projection: kv_heads x head_dim."""
        return self.kv_heads * self.head_dim

    @property
    def mlp_matrices(self) -> int:
        """h x ffn_hidden matrices in the MLP: 3 when gated (SwiGLU), else 2."""
        return 3 if self.gated_mlp else 2

    # --- parameter counts (elements) -------------------------------------------------
    @property
    def params_per_layer(self) -> int:
        """Weights (+ biases) of one block: Q, K, V, projection, the MLP, two norms.

        GPT (biases, LayerNorm, f = 4h, MHA): ``4h^2 + 2hf + 9h + f`` = ``12h^2 + 13h``."""
        h, f, kv = self.hidden, self.ffn_hidden, self.kv_hidden
        weights = 2 * h * h + 2 * h * kv + self.mlp_matrices * h * f
        biases = (2 * h + 2 * kv + (self.mlp_matrices - 1) * f + h) if self.biases else 0
        norms = 2 * (2 * h if self.norm == "layernorm" else h)
        return weights + biases + norms

    @property
    def embedding_params(self) -> int:
        """Word embedding (+ position table) elements."""
        pos = self.seq_len * self.hidden if self.learned_position_embeddings else 0
        return self.vocab * self.hidden + pos

    @property
    def head_params(self) -> int:
        """Final norm plus an untied output projection."""
        untied = 0 if self.tied_embeddings else self.vocab * self.hidden
        return (2 if self.norm == "layernorm" else 1) * self.hidden + untied

    @property
    def total_params(self) -> int:
        """All parameters, counting a tied embedding once."""
        return self.layers * self.params_per_layer + self.embedding_params + self.head_params

    @property
    def largest_module_params(self) -> int:
        """Parameters of the largest single module (DeepSpeed's ``largest_layer_params``)."""
        h, f, kv = self.hidden, self.ffn_hidden, self.kv_hidden
        return max(self.vocab * h, (self.mlp_matrices - 1) * h * f + f, h * (h + 2 * kv) + 3 * h)

    @classmethod
    def from_module(cls, module: nn.Module, seq_len: int, name: str | None = None) -> ModelSpec:
        """Read the shape of a decoder transformer (``nn.Embedding`` + ``ModuleList`` of blocks)."""
        from forgeline.search._inspect import inspect_module

        fields = inspect_module(module)
        return cls(name=name or type(module).__name__, seq_len=seq_len, **fields)


class ClusterSpec(BaseModel):
    """Nodes x devices with their memory, compute and links. Rates are per device unless
    the name says per node; bandwidths are one direction, bytes per second."""

    model_config = _FROZEN

    name: str = "cluster"
    nodes: int = Field(gt=0, description="number of nodes")
    devices_per_node: int = Field(gt=0, description="accelerators (or CPU workers) per node")
    device_memory_bytes: int = Field(gt=0, description="memory of one device")
    reserved_bytes_per_device: int = Field(
        0, ge=0, description="taken by runtime context, communication buffers, fragmentation"
    )
    peak_flops_per_s: dict[str, float] = Field(description="dense peak FLOP/s per precision")
    hbm_bytes_per_s: float = Field(gt=0, description="device memory bandwidth")
    intra_node_bytes_per_s: float = Field(gt=0, description="device-to-device link in a node")
    inter_node_bytes_per_s: float = Field(gt=0, description="network bandwidth per device")
    intra_node_latency_s: float = Field(2e-6, ge=0, description="per message hop in a node")
    inter_node_latency_s: float = Field(5e-6, ge=0, description="per message hop across nodes")
    host_memory_bytes: int = Field(gt=0, description="host memory per node")
    host_memory_bytes_per_s: float = Field(gt=0, description="host memory bandwidth per node")
    host_link_bytes_per_s: float = Field(gt=0, description="host<->device link (PCIe) per device")
    nvme_bytes_per_s: float = Field(0.0, ge=0, description="NVMe bandwidth per node; 0 = none")
    nvme_bytes: int = Field(0, ge=0, description="NVMe capacity per node")
    matmul_efficiency: list[tuple[float, float]] = Field(
        description="(FLOPs of one matmul, achieved fraction of peak), interpolated in log FLOPs"
    )
    memory_efficiency: list[tuple[float, float]] = Field(
        description="(bytes moved by one kernel, achieved fraction of hbm_bytes_per_s)"
    )
    intra_node_efficiency: float = Field(0.75, gt=0, le=1, description="achieved link fraction")
    inter_node_efficiency: float = Field(0.9, gt=0, le=1, description="achieved network fraction")
    overlap_efficiency: float = Field(
        1.0, ge=0, le=1, description="fraction of compute time that can hide communication "
        "(GPUs: 1, collectives run on their own engines; CPUs: 0, gloo runs on the same cores)"
    )
    zero_copy_bytes_per_s: float = Field(
        0.0, ge=0, description="rate at which the ZeRO runtime passes parameter / gradient "
        "bytes through its flat buffers and rank-local collectives (bucket copies, shard "
        "copies, the ZeRO-3 gather even with one rank); 0 means hbm_bytes_per_s / 2, one "
        "read and one write per byte"
    )
    zero3_hook_s_per_tensor: float = Field(
        5e-5, ge=0, description="seconds per fetch or release of one partitioned parameter "
        "tensor by DeepSpeed's ZeRO-3 module hooks (host-side Python; 50 us is an assumed "
        "order of magnitude that calibration's framework_scale corrects); tensors under the "
        "persistence threshold are not counted"
    )
    matmul_peak_fraction: dict[str, float] = Field(
        default_factory=dict, description="best achievable fraction of the datasheet peak "
        "for a matmul, per precision (measured MAMF / peak); the matmul_efficiency curve is "
        "rescaled so its best point equals it; a precision not listed uses the curve as is")
    attention_efficiency: dict[str, float] = Field(
        default_factory=dict, description="achieved fraction of the 16-bit peak of each fused "
        "attention kernel class ('flash2', 'flash3') on this GPU; a kernel not listed runs "
        "at the matmul efficiency curve")
    notes: str = Field("", description="where the numbers come from")

    @model_validator(mode="after")
    def _check(self) -> ClusterSpec:
        for name, curve in (("matmul_efficiency", self.matmul_efficiency),
                            ("memory_efficiency", self.memory_efficiency)):
            if not curve or any(x <= 0 or not 0 < e <= 1 for x, e in curve):
                raise ConfigError(name, curve, "needs (size > 0, 0 < efficiency <= 1) points")
        if not self.peak_flops_per_s or any(v <= 0 for v in self.peak_flops_per_s.values()):
            raise ConfigError("peak_flops_per_s", self.peak_flops_per_s, "needs positive rates")
        if any(not 0 < e <= 1 for e in self.matmul_peak_fraction.values()):
            raise ConfigError("matmul_peak_fraction", self.matmul_peak_fraction,
                              "each fraction must be in (0, 1]")
        if any(not 0 < e <= 1 for e in self.attention_efficiency.values()):
            raise ConfigError("attention_efficiency", self.attention_efficiency,
                              "each fraction must be in (0, 1]")
        return self

    @property
    def zero_copy_rate(self) -> float:
        """Effective :attr:`zero_copy_bytes_per_s` (bytes/s)."""
        return self.zero_copy_bytes_per_s or self.hbm_bytes_per_s / 2

    @property
    def total_devices(self) -> int:
        return self.nodes * self.devices_per_node

    def matmul_scale(self, precision: str) -> float:
        """Factor on the matmul efficiency curve at ``precision`` (see matmul_peak_fraction)."""
        fraction = self.matmul_peak_fraction.get(precision)
        return fraction / max(e for _, e in self.matmul_efficiency) if fraction else 1.0

    def peak_for(self, precision: str) -> float:
        """Peak FLOP/s of one device at ``precision``; ConfigError if the cluster lacks it."""
        if precision not in self.peak_flops_per_s:
            raise ConfigError("precision", precision,
                              f"cluster {self.name!r} lists {sorted(self.peak_flops_per_s)}")
        return self.peak_flops_per_s[precision]

    @classmethod
    def preset(cls, preset: str, /, nodes: int = 1, **overrides: Any) -> ClusterSpec:
        """A preset system (:data:`~forgeline.search.presets.PRESET_NAMES`) of ``nodes`` nodes,
        with any field replaced by ``overrides``; the result is validated like any spec."""
        try:
            fields = preset_fields(preset, nodes)
        except KeyError:
            raise ConfigError("preset", preset,
                              f"unknown preset; choose from {list(PRESET_NAMES)}") from None
        if "devices_per_node" in overrides and "name" not in overrides:
            fields["name"] = f"{preset}x{nodes * overrides['devices_per_node']}"
        return cls(**{**fields, **overrides})


class TrainingSpec(BaseModel):
    """What one optimizer step does: batch, optimizer, precision, overlap."""

    model_config = _FROZEN

    global_batch_size: int = Field(gt=0, description="sequences per optimizer step")
    optimizer: Literal["adamw", "adam", "sgd"] = "adamw"
    precision: Precision = Field("bf16", description="compute precision (selects peak FLOP/s)")
    learning_rate: float = Field(3e-4, gt=0)
    weight_decay: float = Field(0.01, ge=0)
    overlap_grad_reduce: bool = Field(
        True, description="gradient reduction overlaps backward (DeepSpeed overlap_comm)"
    )
    flash_attention: bool = Field(
        False, description="fused attention: no s^2 score matrix is stored or re-read"
    )
    nvme_path: str = Field("/local_nvme", description="where NVMe offload swaps (emitted)")
    framework: FrameworkName = Field(
        "deepspeed", description="training stack whose kernels and overlaps the cost model "
        "assumes (forgeline.search.profiles); forgeline's own plans run on DeepSpeed")

    @property
    def profile(self) -> FrameworkProfile:
        """The :class:`FrameworkProfile` of :attr:`framework`."""
        return PROFILES[self.framework]

    @property
    def gemm_precision(self) -> str:
        """Precision of the matrix multiplies (fp8 runs only GEMMs in fp8)."""
        return self.precision

    @property
    def attention_precision(self) -> str:
        """Precision of the attention core and elementwise kernels: bf16 under fp8."""
        return "bf16" if self.precision == "fp8" else self.precision

    @property
    def activation_bytes(self) -> int:
        """Bytes per activation element for this precision (16-bit or 32-bit)."""
        return 2 if DTYPE_BYTES[self.precision] <= 2 else 4

    def optimizer_bytes_per_param(self, model: ModelSpec) -> int:
        """Optimizer bytes per parameter: master copy (if weights are narrower) + states."""
        ob = DTYPE_BYTES[model.optimizer_dtype]
        master = ob if DTYPE_BYTES[model.param_dtype] < ob else 0
        states = 1 if self.optimizer == "sgd" else 2
        return master + states * ob
