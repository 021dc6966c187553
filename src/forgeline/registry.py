"""A minimal model registry on storage: one JSON record per published quantized model.

``{artifact_root}/registry/{run_id}.json`` holds the facts of the quantize stage's Asset
event (perplexity, size, scheme mix) and the artifact's files with their sizes, written
atomically once the files are confirmed on storage.
"""

from __future__ import annotations

from typing import Any

from forgeline import storage
from forgeline.errors import StorageError

_REQUIRED = ("quantization.json",)


def register_quantized_model(extra: dict[str, Any]) -> str:
    """Record the quantized model an Asset event describes; return the record's URL."""
    model_url = str(extra["model_url"])
    fs, path = storage.filesystem(model_url, "model_url")
    if not fs.isdir(path):
        raise StorageError("model_url", model_url, "no quantized model folder here")
    files = {p.rsplit("/", 1)[-1]: fs.size(p) for p in fs.find(path)}
    missing = [name for name in _REQUIRED if name not in files]
    if missing or not any(name.endswith(".safetensors") for name in files):
        raise StorageError("model_url", model_url, f"incomplete artifact (missing {missing} "
                           "or its .safetensors weights)")
    url = storage.join(str(extra["artifact_root"]), "registry",
                       f"{extra['forgeline_run_id']}.json")
    storage.write_json_atomic(url, {**extra, "files": files})
    return url
