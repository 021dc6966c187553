"""Export to the ``compressed-tensors`` layout that transformers and vLLM read.

Writes ``model.safetensors`` (``<layer>.weight_packed`` int32, ``weight_scale``,
``weight_zero_point``, ``weight_shape``; float tensors as they are) and ``config.json``
with the ``quantization_config`` (``quant_method: compressed-tensors``,
``format: pack-quantized``), one config group per weight format:

- ``int8_wo`` → 8-bit symmetric, per output channel;
- ``int4_rtn`` / ``int4_gptq`` → 4-bit asymmetric, per group of ``group_size`` inputs
  (our uint4 codes 0..15 with zero-point z are compressed-tensors' -8..7 with z - 8: the
  same decoded values);
- ``w8a8`` → the int8 weights as above, plus static asymmetric per-tensor input activations
  (``input_scale``, ``input_zero_point``). Our codes 0..qmax with zero-point z are its
  signed codes with z - (qmax + 1) / 2: the same grid. With fbgemm's reduced range (the
  default, qmax 127) that is ``num_bits: 7``, which the compressed-tensors library runs;
  runtimes with only 8-bit activation kernels (vLLM) want ``reduce_range=False``.

Only ``nn.Linear`` layers map. W8A8 layers with SmoothQuant or PWLQ activations, embeddings
and convolutions are written as their decoded float weights and listed in ``ignore``. So
are layers that were a transformers ``Conv1D`` (GPT-2's projections): compressed-tensors
packs only ``nn.Linear`` weights ``(out, in)``, and transformers' GPT-2 keeps them as
``Conv1D`` ``(in, out)``, so they are written decoded, in Conv1D's layout (the folder loads
into a transformers GPT-2), and the result's ``notes`` say so. The library's own compressor
packs the integers (``compressed-tensors`` must be installed) from our decoded weights and our
scales and zero-points, so it re-derives exactly our codes (tested). Loading:
``load_compressed_tensors`` follows the transformers lifecycle (apply the config,
compress, load the weights, decompress) on a float skeleton.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

import safetensors.torch
import torch
from torch import nn

from forgeline import storage
from forgeline.quantize.runtime.conv1d import CONV1D_TYPE, DecodedConv1D
from forgeline.quantize.runtime.qmodel import QuantizedModel, replace_submodule
from forgeline.quantize.runtime.qmodules import QuantModule

CONFIG_FILE = "config.json"
TENSORS_FILE = "model.safetensors"


def _group_args(layer: QuantModule) -> dict[str, Any] | None:
    """The layer's compressed-tensors scheme (``weights`` and ``input_activations`` args),
    or None when it has no exact counterpart there."""
    spec, act = layer.spec, layer.spec.get("activation")
    if spec["kind"] != "linear" or spec.get("smooth") or spec.get("float_type") == CONV1D_TYPE:
        return None
    if act and (act["kind"] != "uniform" or act["qmax"] not in (127, 255) or spec["bits"] != 8):
        return None
    if spec["bits"] == 8:
        weights = {"num_bits": 8, "type": "int", "symmetric": True, "strategy": "channel"}
    else:
        weights = {"num_bits": 4, "type": "int", "symmetric": False, "strategy": "group",
                   "group_size": spec["group_size"]}
    inputs = {"num_bits": int(act["qmax"]).bit_length(), "type": "int", "symmetric": False,
              "strategy": "tensor", "dynamic": False} if act else None
    return {"weights": weights, "input_activations": inputs}


def _float_copy(qmodel: QuantizedModel) -> tuple[nn.Module, dict[str, dict[str, Any]]]:
    """The wrapped model with every quantized layer decoded back to a float layer."""
    model = copy.deepcopy(qmodel.model)
    mapped: dict[str, dict[str, Any]] = {}
    for name, layer in list(qmodel.layers().items()):
        args = layer.spec["args"]
        with torch.no_grad():
            w = layer.dequantized_weight()
            if layer.spec["kind"] == "embedding":
                new = nn.Embedding(args["num_embeddings"], args["embedding_dim"],
                                   padding_idx=args.get("padding_idx"))
            elif layer.spec["kind"] == "linear":
                new = nn.Linear(args["in_features"], args["out_features"],
                                bias=layer.bias is not None)
            else:
                new = (nn.Conv1d if layer.spec["kind"] == "conv1d" else nn.Conv2d)(**{
                    k: tuple(v) if isinstance(v, list) else v for k, v in args.items()})
            if layer.smooth_scale is not None:  # fold SmoothQuant's division back in
                w = w / layer.smooth_scale.view(1, -1, *([1] * (w.dim() - 2)))
            if layer.spec.get("float_type") == CONV1D_TYPE:
                new = DecodedConv1D(w, layer.bias)
            else:
                new.weight.copy_(w)
                if layer.bias is not None:
                    new.bias.copy_(layer.bias)
        if name == "":
            model = new
        else:
            replace_submodule(model, name, new)
        group = _group_args(layer)
        if group is not None:
            mapped[name] = {"args": group, "layer": layer}
    return model, mapped


def _set_qparams(module: nn.Module, layer: QuantModule) -> None:
    """Our scales and zero-points onto the module compressed-tensors initialized."""
    with torch.no_grad():
        if layer.spec["bits"] == 8:
            module.weight_scale.copy_(layer.scale.float().view(-1, 1))
            if getattr(module, "weight_zero_point", None) is not None:
                module.weight_zero_point.zero_()
        else:
            module.weight_scale.copy_(layer.scale.float())
            module.weight_zero_point.copy_((layer.zero_point.to(torch.int16) - 8).to(
                module.weight_zero_point.dtype))
        act = layer.spec.get("activation")
        if act:
            half = (act["qmax"] + 1) // 2
            module.input_scale.copy_(layer.act_scale.float().view_as(module.input_scale))
            module.input_zero_point.copy_((layer.act_zero_point.to(torch.int16) - half).view_as(
                module.input_zero_point).to(module.input_zero_point.dtype))


def save_compressed_tensors(qmodel: QuantizedModel, url: str) -> dict[str, Any]:
    """Write ``qmodel`` under directory ``url`` in the compressed-tensors layout."""
    from compressed_tensors.compressors import ModelCompressor
    from compressed_tensors.quantization import (
        QuantizationArgs,
        QuantizationConfig,
        QuantizationScheme,
        apply_quantization_config,
    )

    model, mapped = _float_copy(qmodel)
    groups: dict[str, list[str]] = {}
    for name, entry in mapped.items():
        groups.setdefault(json.dumps(entry["args"], sort_keys=True), []).append(name)
    config_groups = {
        f"group_{i}": QuantizationScheme(targets=names, **{
            role: QuantizationArgs(**args) for role, args in json.loads(k).items() if args})
        for i, (k, names) in enumerate(groups.items())
    }
    ignored = sorted(n for n in qmodel.layers() if n not in mapped)
    qconfig = QuantizationConfig(config_groups=config_groups, quantization_status="frozen",
                                 ignore=ignored, format="pack-quantized")
    if config_groups:
        apply_quantization_config(model, qconfig)
        for name, entry in mapped.items():
            _set_qparams(model.get_submodule(name), entry["layer"])
        compressor = ModelCompressor.from_pretrained_model(model, "pack-quantized")
        compressor.compress_model(model)
        qconfig = compressor.quantization_config
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    data = safetensors.torch.save(tensors, metadata={"format": "pt"})
    storage.write_bytes_atomic(storage.join(url, TENSORS_FILE), data)
    config = {"quantization_config": qconfig.model_dump(mode="json", exclude_none=True),
              "forgeline_architecture": qmodel.architecture}
    storage.write_json_atomic(storage.join(url, CONFIG_FILE), config)  # the commit point
    conv1d = sorted(n for n, m in qmodel.layers().items()
                    if m.spec.get("float_type") == CONV1D_TYPE)
    notes = [f"{len(conv1d)} transformers Conv1D layers ({', '.join(conv1d[:3])}"
             f"{', ...' if len(conv1d) > 3 else ''}) written as decoded float weights in "
             "Conv1D's (in, out) layout: compressed-tensors packs only nn.Linear"] if conv1d else []
    return {"url": url, "config": storage.join(url, CONFIG_FILE), "bytes": len(data),
            "mapped_layers": sorted(mapped), "ignored_layers": ignored, "notes": notes}


def load_compressed_tensors(url: str, model_factory: Callable[[], nn.Module]) -> nn.Module:
    """Load a compressed-tensors directory into ``model_factory()``'s float model with the
    ``compressed_tensors`` library (the steps transformers' loader runs), decompressed."""
    from compressed_tensors.compressors import ModelCompressor
    from compressed_tensors.quantization import QuantizationConfig, apply_quantization_config

    config = storage.read_json(storage.join(url, CONFIG_FILE))
    qconfig = QuantizationConfig.model_validate(config["quantization_config"])
    model = model_factory()
    fs, path = storage.filesystem(storage.join(url, TENSORS_FILE))
    tensors = safetensors.torch.load(fs.cat_file(path))
    if qconfig.config_groups:
        apply_quantization_config(model, qconfig)
        compressor = ModelCompressor(quantization_config=qconfig)
        compressor.compress_model(model)  # the stored (compressed) parameter shapes
        model.load_state_dict(tensors, strict=True)
        compressor.decompress_model(model)
    else:
        model.load_state_dict(tensors, strict=True)
    return model.eval()
