"""List every file under a run folder with its size (the report folder excluded)."""

from __future__ import annotations

import posixpath
from dataclasses import dataclass

from forgeline import storage


@dataclass(frozen=True)
class Artifact:
    """One file, relative to the run folder."""

    path: str
    size_bytes: int


def _is_temp(name: str) -> bool:
    """An atomic write still in flight (``.name.<uuid>.tmp``), not an artifact."""
    return name.startswith(".") and name.endswith(".tmp")


def list_artifacts(run_url: str, exclude_dirs: tuple[str, ...] = ()) -> list[Artifact]:
    """Files under ``run_url`` sorted by relative path, skipping ``exclude_dirs`` (top level)."""
    fs, base = storage.filesystem(run_url, "run_url")
    base = base.rstrip("/")
    found = fs.find(base, detail=True)
    artifacts: list[Artifact] = []
    for full_path, info in found.items():
        if info.get("type", "file") != "file":
            continue
        rel = posixpath.relpath(full_path, base)
        if rel.split("/", 1)[0] in exclude_dirs or _is_temp(posixpath.basename(rel)):
            continue
        artifacts.append(Artifact(path=rel, size_bytes=int(info.get("size") or 0)))
    return sorted(artifacts, key=lambda a: a.path)
