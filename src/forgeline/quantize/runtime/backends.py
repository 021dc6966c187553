"""Runtime backends behind one interface: each installs a kernel into quantized layers.

- ``dequant``: pure PyTorch, decodes the weight on every call (least memory, runs anywhere).
- ``dequant_cached``: pure PyTorch, decodes once on first use and keeps the fp32 weight:
  float speed at float memory. An explicit choice, never a silent fallback.
- ``fbgemm``: PyTorch's x86 int8 GEMM (``quantized::linear_with_input_q_dq_qweight_dq_output_fp32``)
  for calibrated W8A8 Linear layers; measured the fastest CPU int8 path on AVX2
  (see ``benchmarks/quantize.py``). Other layers decode per call (``dequant``).
- ``torchao``: torchao's int8/int4 weight-only GPU kernels; only where CUDA is present.

Torch only (torchao imported lazily), so the loader can use it without forgeline's
training dependencies.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch
from torch import nn

from forgeline.errors import ConfigError
from forgeline.quantize.runtime.qmodules import QuantModule

Kernel = Callable[[QuantModule, torch.Tensor], torch.Tensor]


class Backend:
    """Installs kernels into :class:`QuantModule` layers; ``unavailable()`` says why not."""

    name = "base"

    def unavailable(self) -> str | None:
        return None

    def install(self, layer: QuantModule) -> str:
        """Set ``layer._kernel`` (a module-level ``Kernel``; its state goes in
        ``layer.runtime_state``, so copies of the layer stay independent) and return the
        name of the kernel the layer now runs."""
        raise NotImplementedError


def _dequant_cached_kernel(layer: QuantModule, x: torch.Tensor) -> torch.Tensor:
    w = layer.runtime_state.get("weight")
    if w is None:
        with torch.no_grad():
            w = layer.runtime_state["weight"] = layer.dequantized_weight()
    return layer.reference_forward(x, weight=w)


class DequantBackend(Backend):
    """Decode to float and run the float op: per call (``cache=False``), or decode on the
    first call and keep the float weight (``cache=True``: float speed, float memory)."""

    def __init__(self, cache: bool) -> None:
        self.cache = cache
        self.name = "dequant_cached" if cache else "dequant"

    def install(self, layer: QuantModule) -> str:
        layer.runtime_state = {}
        layer._kernel = _dequant_cached_kernel if self.cache else None
        return self.name


def _fbgemm_op():
    return getattr(torch.ops.quantized, "linear_with_input_q_dq_qweight_dq_output_fp32", None)


def _fbgemm_kernel(layer: QuantModule, x: torch.Tensor) -> torch.Tensor:
    st = layer.runtime_state
    x = x.to(torch.float32)
    if layer.smooth_scale is not None:
        x = x / layer.smooth_scale
    y = torch.ops.quantized.linear_with_input_q_dq_qweight_dq_output_fp32(
        x.reshape(-1, x.shape[-1]).contiguous(), st["x_scale"], st["x_zero"], st["packed"])
    return y.view(*x.shape[:-1], layer.rows).to(layer.out_dtype)


class FbgemmBackend(Backend):
    """x86 int8 GEMM for calibrated W8A8 linears; everything else decoded per call."""

    name = "fbgemm"

    def unavailable(self) -> str | None:
        engines = torch.backends.quantized.supported_engines
        if "fbgemm" not in engines and "x86" not in engines:
            return f"no fbgemm/x86 quantized engine in this torch build (engines: {engines})"
        try:
            op = _fbgemm_op()
        except (AttributeError, RuntimeError) as exc:
            op, why = None, str(exc)
        else:
            why = "not in this torch build"
        if op is None:
            return f"quantized::linear_with_input_q_dq_qweight_dq_output_fp32 missing: {why}"
        return None

    def install(self, layer: QuantModule) -> str:
        act = layer.spec.get("activation")
        ok = (
            layer.spec["kind"] == "linear"
            and layer.spec["bits"] == 8
            and act is not None
            and act["kind"] == "uniform"
            and act["qmax"] <= 127
        )
        if not ok:
            # 8-bit activations (qmax 255) would saturate AVX2's u8*s8 pair sums.
            return DequantBackend(cache=False).install(layer)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # quantized-tensor creation is deprecated upstream
            qw = torch._make_per_channel_quantized_tensor(
                layer.qweight, layer.scale.double(), torch.zeros(layer.rows, dtype=torch.long), 0
            )
            packed = torch.ops.quantized.linear_prepack(qw, layer.bias)
        layer.runtime_state = {"packed": packed,
                               "x_scale": float(layer.act_scale),
                               "x_zero": int(layer.act_zero_point),
                               # fbgemm's packed copy (opaque): int8 codes + column offsets
                               "packed_bytes": layer.rows * layer.cols + 4 * layer.rows}
        layer._kernel = _fbgemm_kernel
        return "fbgemm_int8_static"


def _torchao_kernel(layer: QuantModule, x: torch.Tensor) -> torch.Tensor:
    return layer.runtime_state["linear"](x.to(torch.bfloat16)).to(layer.out_dtype)


class TorchaoBackend(Backend):
    """torchao weight-only int8 / int4 kernels on CUDA (decoded per call otherwise)."""

    name = "torchao"

    def unavailable(self) -> str | None:
        if not torch.cuda.is_available():
            return "torchao's quantized kernels need a CUDA device; none here"
        try:
            import torchao.quantization  # noqa: F401
        except ImportError as exc:
            return f"torchao does not import: {exc}"
        return None

    def install(self, layer: QuantModule) -> str:
        from torchao.quantization import Int4WeightOnlyConfig, Int8WeightOnlyConfig, quantize_

        if layer.spec["kind"] != "linear" or layer.spec.get("activation"):
            return DequantBackend(cache=False).install(layer)
        lin = nn.Linear(
            layer.cols,
            layer.rows,
            bias=layer.bias is not None,
            device=layer.qweight.device,
            dtype=torch.bfloat16,
        )
        with torch.no_grad():
            # Our codes sit on torchao's grid (symmetric int8 per row / asymmetric int4
            # per group), so torchao re-derives the same integers from the decoded weight.
            lin.weight.copy_(layer.dequantized_weight())
            if layer.bias is not None:
                lin.bias.copy_(layer.bias)
        cfg = (
            Int8WeightOnlyConfig()
            if layer.spec["bits"] == 8
            else Int4WeightOnlyConfig(group_size=layer.spec["group_size"])
        )
        holder = nn.Sequential(lin)
        quantize_(holder, cfg)
        layer.runtime_state = {"linear": holder[0]}
        layer._kernel = _torchao_kernel
        return f"torchao_{type(cfg).__name__}"


BACKENDS: dict[str, Callable[[], Backend]] = {
    "dequant": lambda: DequantBackend(cache=False),
    "dequant_cached": lambda: DequantBackend(cache=True),
    "fbgemm": FbgemmBackend,
    "torchao": TorchaoBackend,
}


def available_backends() -> dict[str, str | None]:
    """Each backend name with ``None`` when usable here, else the reason it is not."""
    return {name: make().unavailable() for name, make in BACKENDS.items()}


def resolve_backend(name: str = "auto", device: str = "cpu") -> Backend:
    """The backend called ``name``; ``auto`` picks torchao on CUDA, fbgemm on CPU, else dequant."""
    if name == "auto":
        order = ("torchao", "dequant_cached") if device == "cuda" else ("fbgemm", "dequant_cached")
        for cand in order:
            backend = BACKENDS[cand]()
            if backend.unavailable() is None:
                return backend
    if name not in BACKENDS:
        raise ConfigError("backend", name, f"unknown; choose one of {['auto', *BACKENDS]}")
    backend = BACKENDS[name]()
    reason = backend.unavailable()
    if reason is not None:
        raise ConfigError("backend", name, f"not usable here: {reason}")
    return backend


def install_backend(model: nn.Module, name: str = "auto") -> dict[str, str]:
    """Install ``name``'s kernels into every quantized layer; returns layer → kernel."""
    buffers = [b for b in model.buffers() if b is not None]
    device = buffers[0].device.type if buffers else "cpu"
    backend = resolve_backend(name, device)
    return {n: _set(m, backend) for n, m in model.named_modules() if isinstance(m, QuantModule)}


def _set(layer: QuantModule, backend: Backend) -> str:
    layer.kernel_name = backend.install(layer)
    return layer.kernel_name


def kernel_summary(kernels: dict[str, str]) -> str:
    """What really runs, e.g. ``fbgemm_int8_static×5 + dequant×14`` (most used first)."""
    counts: dict[str, int] = {}
    for k in kernels.values():
        counts[k] = counts.get(k, 0) + 1
    if not counts:
        return "float"
    ordered = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return " + ".join(f"{k}×{n}" for k, n in ordered)


__all__ = ["Backend", "BACKENDS", "available_backends", "install_backend", "kernel_summary",
           "resolve_backend"]
