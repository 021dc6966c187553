"""Load a quantized artifact for inference with torch + safetensors only.

No pydantic, Ray, DeepSpeed or Airflow is imported (fsspec only for non-local URLs).
The architecture comes from ``model_factory`` (a callable returning the float model,
e.g. the training code's model class) whose tree is checked against the artifact's
recorded tree before any tensor is loaded; or, with no factory, from the recorded
tree itself when it is a plain ``nn.Sequential`` of torch built-in layers.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable

import safetensors.torch
from torch import nn

from forgeline.errors import ConfigError, IntegrityError, StorageError
from forgeline.quantize.runtime import architecture as arch
from forgeline.quantize.runtime.qmodel import FORMAT, QuantizedModel, replace_submodule
from forgeline.quantize.runtime.qmodules import QuantModule

MAP_FILE = "quantization.json"


def _read(url: str) -> bytes:
    if "://" not in url or url.startswith("file://"):
        path = url.removeprefix("file://")
        try:
            with open(path, "rb") as f:
                return f.read()
        except OSError as exc:
            raise StorageError("url", url, f"cannot read ({exc})") from exc
    from fsspec.core import url_to_fs  # remote storage only

    fs, path = url_to_fs(url)
    try:
        with fs.open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise StorageError("url", url, f"cannot read ({exc})") from exc


def read_map(url: str) -> dict:
    """The artifact's JSON quantization map."""
    manifest = json.loads(_read(url.rstrip("/") + "/" + MAP_FILE))
    if manifest.get("format") != FORMAT:
        raise ConfigError("url", url, f"format {manifest.get('format')!r} is not {FORMAT!r}")
    return manifest


def load_quantized(
    url: str,
    model_factory: Callable[[], nn.Module] | None = None,
    backend: str = "auto",
) -> QuantizedModel:
    """Rebuild the quantized model stored under ``url``, ready for inference.

    Raises ``ConfigError('model_factory', ...)`` when the factory's model does not
    match the artifact (names, types, shapes, tensors), ``IntegrityError`` when the
    tensors file does not match its recorded checksum.
    """
    manifest = read_map(url)
    desc = manifest["architecture"]
    if model_factory is not None:
        skeleton = model_factory()
        label = type(skeleton).__name__
        if not isinstance(skeleton, nn.Module):
            raise ConfigError("model_factory", label, "must return a torch.nn.Module")
        diff = arch.differences(desc, skeleton)
        if diff:
            raise ConfigError(
                "model_factory", label, "does not match the artifact: " + "; ".join(diff[:5])
            )
    elif desc.get("rebuildable"):
        skeleton = arch.rebuild(desc)
    else:
        root = desc["modules"][0]["type"] if desc.get("modules") else "?"
        raise ConfigError(
            "model_factory",
            None,
            f"the artifact's architecture ({root}) is custom code; pass a "
            "model_factory that builds the float model",
        )
    data = _read(url.rstrip("/") + "/" + manifest["tensors_file"])
    if hashlib.sha256(data).hexdigest() != manifest["tensors_sha256"]:
        raise IntegrityError(
            f"{manifest['tensors_file']} under {url} does not match its recorded sha256"
        )
    for name, spec in manifest["layers"].items():
        try:
            layer = QuantModule(spec)
        except (ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"layers[{name!r}]", spec, f"unreadable layer spec: {exc}") from exc
        if name == "":  # the whole model is one layer
            skeleton = layer
        else:
            replace_submodule(skeleton, name, layer)
    tensors = safetensors.torch.load(data)
    try:
        skeleton.load_state_dict(tensors, strict=True)
    except RuntimeError as exc:
        raise ConfigError(
            "model_factory",
            type(skeleton).__name__,
            f"tensors do not fit the model: {str(exc)[:500]}",
        ) from exc
    qmodel = QuantizedModel(skeleton, desc).eval()
    qmodel.set_backend(backend)
    return qmodel


__all__ = ["load_quantized", "read_map"]
