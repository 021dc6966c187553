"""Manifest bytes that cannot lie: a checksum over the canonical JSON, checked on every read,
and the step, rank and world size checked against the file's path.

Canonical form: the manifest as JSON without its ``checksum`` field, keys sorted, no spaces;
``checksum`` is ``blake3:<hex>`` of those bytes. Format-2 manifests (no checksum) still read.
"""

from __future__ import annotations

import json
import posixpath
from typing import Any

import blake3
from pydantic import ValidationError

from forgeline.checkpoint.errors import CheckpointCorruptError
from forgeline.checkpoint.format import Manifest, parse_shard_name

_PREFIX = "blake3:"


def _canonical(body: dict[str, Any]) -> bytes:
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode()


def _checksum(body: dict[str, Any]) -> str:
    return _PREFIX + blake3.blake3(_canonical(body)).hexdigest()


def encode_manifest(manifest: Manifest) -> bytes:
    """The bytes to store: canonical JSON with its checksum."""
    body = json.loads(manifest.model_dump_json(exclude={"checksum"}))
    return _canonical({**body, "checksum": _checksum(body)})


def path_identity(path: str) -> tuple[int | None, int | None, int | None]:
    """``(step, rank, world_size)`` that a manifest's path names (None where it names none)."""
    folder = posixpath.basename(posixpath.dirname(path))
    parsed = parse_shard_name(posixpath.basename(path))
    step = int(folder) if folder.isdigit() else None
    return (step, *parsed) if parsed else (step, None, None)


def decode_manifest(data: bytes, path: str) -> Manifest:
    """Parse and check the manifest stored at ``path``; ``CheckpointCorruptError`` if damaged."""
    step, rank, world = path_identity(path)

    def corrupt(reason: str) -> CheckpointCorruptError:
        return CheckpointCorruptError(step, rank, path, reason)

    try:
        body = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise corrupt(f"not JSON ({len(data)} bytes: {exc})") from None
    if not isinstance(body, dict):
        raise corrupt(f"not a JSON object ({type(body).__name__})")
    stored = body.pop("checksum", None)
    if stored is None and body.get("format_version", 0) >= 3:
        raise corrupt("no checksum")
    if stored is not None and stored != _checksum(body):
        raise corrupt("checksum mismatch (edited or damaged)")
    try:
        manifest = Manifest.model_validate({**body, "checksum": stored})
    except ValidationError as exc:
        raise corrupt(f"invalid manifest ({exc.error_count()} errors: "
                      f"{exc.errors()[0]['loc']}: {exc.errors()[0]['msg']})") from None
    said = (manifest.step, manifest.rank, manifest.world_size)
    if (step, rank, world) != said:
        raise corrupt(f"it says step {said[0]} rank {said[1]} of {said[2]}, its path says "
                      f"step {step} rank {rank} of {world} (copied from another step?)")
    return manifest
