"""Write a quantized model as safetensors (integer codes, scales, zero-points, float
leftovers) plus ``quantization.json`` (format, architecture, per-layer map, checksum).

The tensors file is content-addressed and written first; the JSON map is written last,
atomically, and is the commit point: a reader sees the old artifact or the whole new one.
"""

from __future__ import annotations

import hashlib
import posixpath
from typing import Any

import safetensors.torch
import torch

from forgeline import __version__, storage
from forgeline.quantize.runtime.qmodel import QuantizedModel

MAP_FILE = "quantization.json"


def artifact_tensors(qmodel: QuantizedModel) -> dict[str, torch.Tensor]:
    """Every tensor of the artifact, by the wrapped model's state_dict names."""
    return {k: v.detach().cpu().contiguous().clone() for k, v in qmodel.model.state_dict().items()}


def save_quantized(qmodel: QuantizedModel, url: str) -> dict[str, Any]:
    """Write ``qmodel`` under directory ``url`` (any fsspec URL); returns a small summary."""
    data = safetensors.torch.save(artifact_tensors(qmodel), metadata={"format": "pt"})
    digest = hashlib.sha256(data).hexdigest()
    tensors_file = f"model-{digest[:16]}.safetensors"
    previous = _previous_tensors_file(url)
    storage.write_bytes_atomic(storage.join(url, tensors_file), data)
    manifest = qmodel.quantization_map() | {
        "tensors_file": tensors_file,
        "tensors_sha256": digest,
        "tensors_bytes": len(data),
        "forgeline_version": __version__,
        "torch_version": torch.__version__,
    }
    storage.write_json_atomic(storage.join(url, MAP_FILE), manifest)
    if previous and previous != tensors_file:
        fs, path = storage.filesystem(storage.join(url, previous))
        if fs.exists(path):
            fs.rm_file(path)
    return {
        "url": url,
        "map": storage.join(url, MAP_FILE),
        "tensors": storage.join(url, tensors_file),
        "bytes": len(data),
    }


def _previous_tensors_file(url: str) -> str | None:
    map_url = storage.join(url, MAP_FILE)
    if not storage.exists(map_url):
        return None
    try:
        return posixpath.basename(str(storage.read_json(map_url).get("tensors_file", "")))
    except (OSError, ValueError):
        return None
