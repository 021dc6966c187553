"""Quantized inference layers (Linear, Conv1d/2d, Embedding). Torch only.

Each layer keeps integer codes, scales, zero-points, bias and activation parameters as
buffers, so ``state_dict()`` is exactly what is exported. Its ``spec`` (JSON) says how
to rebuild an empty one of the same shape. ``forward`` runs the kernel a runtime backend
installed, else the pure-PyTorch reference (dequantize, then the float op).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from forgeline.quantize.runtime.qtensor import (
    QuantizedWeight,
    fake_quant_pwlq,
    fake_quant_uniform,
    unpack_int4,
)

KIND_OF = {nn.Linear: "linear", nn.Conv1d: "conv1d", nn.Conv2d: "conv2d", nn.Embedding: "embedding"}


def layer_kind(m: nn.Module) -> str | None:
    """``linear``/``conv1d``/``conv2d``/``embedding`` for a built-in layer or a subclass that
    keeps its parent's ``forward``; ``None`` otherwise."""
    for cls, kind in KIND_OF.items():
        if isinstance(m, cls) and type(m).forward is cls.forward:
            return kind
    return None


_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16,
           "float64": torch.float64}


def weight_matrix_shape(kind: str, args: dict[str, Any]) -> tuple[int, int]:
    """``[rows, cols]`` of the weight flattened as the schemes see it."""
    if kind == "linear":
        return args["out_features"], args["in_features"]
    if kind == "embedding":
        return args["num_embeddings"], args["embedding_dim"]
    k = 1
    for n in args["kernel_size"]:
        k *= n
    return args["out_channels"], args["in_channels"] // args["groups"] * k


class QuantModule(nn.Module):
    """A quantized stand-in for one float layer; build from a ``spec`` (see module doc).

    ``spec`` keys: ``kind``, ``args`` (float layer constructor args), ``scheme``, ``bits``,
    ``group_size``, ``has_bias``, ``activation`` (None, ``{"kind": "uniform", "qmax": n}``
    or ``{"kind": "pwlq", "bits": n}``), ``smooth`` (SmoothQuant input scale present),
    ``dtype`` (the float dtype outputs come in).
    """

    def __init__(self, spec: dict[str, Any]) -> None:
        super().__init__()
        self.spec = dict(spec)
        if spec.get("kind") not in KIND_OF.values() or spec.get("bits") not in (4, 8) \
                or spec.get("dtype", "float32") not in _DTYPES:
            raise ValueError(f"not a quantized layer spec: kind={spec.get('kind')!r}, "
                             f"bits={spec.get('bits')!r}, dtype={spec.get('dtype')!r}")
        rows, cols = weight_matrix_shape(spec["kind"], spec["args"])
        self.rows, self.cols = rows, cols
        bits, g = spec["bits"], spec.get("group_size")
        if bits == 8:
            self.register_buffer("qweight", torch.zeros(rows, cols, dtype=torch.int8))
            self.register_buffer("scale", torch.zeros(rows, dtype=torch.bfloat16))
            self.register_buffer("zero_point", None)
        elif bits == 4:
            self.register_buffer("qweight", torch.zeros((rows * cols + 1) // 2, dtype=torch.uint8))
            self.register_buffer("scale", torch.zeros(rows, cols // g, dtype=torch.float32))
            self.register_buffer("zero_point", torch.zeros(rows, cols // g, dtype=torch.uint8))
        else:
            raise ValueError(f"unsupported weight bits {bits}")
        has_bias, smooth = spec.get("has_bias"), spec.get("smooth")
        self.register_buffer("bias", torch.zeros(rows) if has_bias else None)
        self.register_buffer("smooth_scale", torch.ones(cols) if smooth else None)
        act = spec.get("activation")
        if act and act["kind"] == "uniform":
            self.register_buffer("act_scale", torch.ones((), dtype=torch.float32))
            self.register_buffer("act_zero_point", torch.zeros((), dtype=torch.int32))
        elif act and act["kind"] == "pwlq":
            self.register_buffer("act_knots", torch.zeros(4, dtype=torch.float32))
            self.register_buffer("act_levels", torch.zeros(3, dtype=torch.int32))
        self.out_dtype = _DTYPES[spec.get("dtype", "float32")]
        # Installed by a runtime backend: a plain function of (layer, x) plus its state
        # (packed weights, decoded cache); neither is part of state_dict().
        self._kernel: Callable[[QuantModule, torch.Tensor], torch.Tensor] | None = None
        self.runtime_state: dict[str, Any] = {}
        self.kernel_name = "dequant"

    # --- filling -------------------------------------------------------------------
    @torch.no_grad()
    def set_weight(self, qw: QuantizedWeight) -> None:
        self.qweight.copy_(qw.qdata)
        self.scale.copy_(qw.scale)
        if self.zero_point is not None:
            self.zero_point.copy_(qw.zero_point)

    @property
    def weight_q(self) -> QuantizedWeight:
        """The stored codes as a :class:`QuantizedWeight` (views, no copy)."""
        return QuantizedWeight(
            self.qweight,
            self.scale,
            self.zero_point,
            self.spec["bits"],
            self.spec.get("group_size"),
            (self.rows, self.cols),
        )

    def dequantized_weight(self) -> torch.Tensor:
        """The float weight in the float layer's own shape."""
        w = self.weight_q.dequantize(torch.float32)
        kind, args = self.spec["kind"], self.spec["args"]
        if kind.startswith("conv"):
            w = w.view(
                args["out_channels"], args["in_channels"] // args["groups"], *args["kernel_size"]
            )
        return w

    def quantized_nbytes(self) -> int:
        return self.weight_q.nbytes()

    # --- running -------------------------------------------------------------------
    def quantize_input(self, x: torch.Tensor) -> torch.Tensor:
        """SmoothQuant division, then activation fake-quantization, as the scheme says."""
        if self.smooth_scale is not None:
            x = x / self._channel_view(self.smooth_scale, x)
        act = self.spec.get("activation")
        if act and act["kind"] == "uniform":
            x = fake_quant_uniform(x, self.act_scale, self.act_zero_point, act["qmax"])
        elif act and act["kind"] == "pwlq":
            x = fake_quant_pwlq(x, self.act_knots, self.act_levels)
        return x

    def _channel_view(self, s: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        if self.spec["kind"] == "linear":
            return s
        # conv: input channels are dim 1; smoothing is per flattened column, so only
        # kernel-size-1 convs get it (enforced by the scheme).
        return s.view(1, -1, *([1] * (x.dim() - 2)))

    def reference_forward(
        self, x: torch.Tensor, weight: torch.Tensor | None = None
    ) -> torch.Tensor:
        kind, args = self.spec["kind"], self.spec["args"]
        if kind == "embedding":
            return (
                self._embed(x)
                if weight is None
                else F.embedding(x, weight, args.get("padding_idx")).to(self.out_dtype)
            )
        w = self.dequantized_weight() if weight is None else weight
        x = self.quantize_input(x.to(torch.float32))
        if kind == "linear":
            y = F.linear(x, w, self.bias)
        else:
            conv = F.conv1d if kind == "conv1d" else F.conv2d
            pad = args["padding"]
            y = conv(
                x,
                w,
                self.bias,
                tuple(args["stride"]),
                pad if isinstance(pad, str) else tuple(pad),
                tuple(args["dilation"]),
                args["groups"],
            )
        return y.to(self.out_dtype)

    def _embed(self, idx: torch.Tensor) -> torch.Tensor:
        """Gather the codes of the looked-up rows only, then decode them."""
        if self.spec["bits"] == 8:
            rows = F.embedding(idx, self.qweight.to(torch.int32)).to(torch.float32)
            scale = F.embedding(idx, self.scale.to(torch.float32)[:, None])
            return (rows * scale).to(self.out_dtype)
        g = self.spec["group_size"]
        packed = self.qweight.view(self.rows, self.cols // 2)
        codes = unpack_int4(
            F.embedding(idx, packed.to(torch.int32)).to(torch.uint8).reshape(-1),
            idx.numel() * self.cols,
        ).view(*idx.shape, self.cols // g, g)
        zp = F.embedding(idx, self.zero_point.to(torch.float32))[..., None]
        sc = F.embedding(idx, self.scale)[..., None]
        w = (codes.to(torch.float32) - zp) * sc
        return w.reshape(*idx.shape, self.cols).to(self.out_dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._kernel is not None:
            return self._kernel(self, x)
        return self.reference_forward(x)

    def extra_repr(self) -> str:
        return (
            f"{self.spec['kind']}, scheme={self.spec['scheme']}, rows={self.rows}, "
            f"cols={self.cols}, kernel={self.kernel_name}"
        )
