"""Retention (keep-last-k, keep-every-n) and mark-and-sweep garbage collection of chunks.

GC marks every chunk named by *any* manifest present (committed or still being completed by
other ranks), so a chunk a committed manifest uses is never deleted. Unreferenced chunks and
leftover temp files younger than ``gc_grace_s`` are kept too: they may belong to a save in
flight whose manifest is not written yet.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import posixpath
import time
from typing import Any

from pydantic import BaseModel

from forgeline import storage
from forgeline.checkpoint.config import RetentionPolicy
from forgeline.checkpoint.format import CHUNKS_DIR, STEPS_DIR, Manifest, parse_shard_name
from forgeline.checkpoint.reader import committed_steps


class GCResult(BaseModel):
    deleted_steps: list[int]
    deleted_chunks: int
    freed_bytes: int
    kept_chunks: int


def _mtime(info: dict[str, Any]) -> float:
    for key in ("mtime", "created", "LastModified", "last_modified", "updated"):
        value = info.get(key)
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, dt.datetime):
            return value.timestamp() if value.tzinfo else value.replace(
                tzinfo=dt.UTC).timestamp()
        if isinstance(value, str):
            try:
                return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
            except ValueError:
                continue
    return 0.0  # unknown age: treat as old only when grace is 0


def steps_to_delete(steps: list[int], policy: RetentionPolicy) -> list[int]:
    """Committed steps that ``policy`` does not keep (never the newest ``keep_last``)."""
    ordered = sorted(steps)
    keep = set(ordered[-policy.keep_last :])
    if policy.keep_every_steps:
        keep |= {s for s in ordered if s % policy.keep_every_steps == 0}
    return [s for s in ordered if s not in keep]


def apply_retention(url: str, policy: RetentionPolicy) -> list[int]:
    """Delete the manifests of committed steps outside ``policy`` (chunks are left to GC)."""
    url = storage.normalize_root(url)
    fs, root = storage.filesystem(url)
    doomed = steps_to_delete(list(committed_steps(url)), policy)
    for step in doomed:
        folder = posixpath.join(root, STEPS_DIR, f"{step:012d}")
        for shard in sorted(fs.ls(folder, detail=False), reverse=True):
            fs.rm_file(shard)  # a partly deleted step is no longer committed: never half-visible
        with contextlib.suppress(OSError, NotImplementedError):
            fs.rmdir(folder)
    return doomed


def collect_garbage(url: str, policy: RetentionPolicy | None = None) -> GCResult:
    """Apply ``policy``'s retention, then delete chunks no manifest references."""
    url = storage.normalize_root(url)
    policy = policy or RetentionPolicy()
    deleted_steps = apply_retention(url, policy)
    fs, root = storage.filesystem(url)
    now = time.time()
    referenced: set[str] = set()
    steps_root = posixpath.join(root, STEPS_DIR)
    if fs.exists(steps_root):
        for path in fs.find(steps_root):
            if parse_shard_name(posixpath.basename(path)):
                try:
                    referenced |= Manifest.model_validate_json(fs.cat_file(path)).referenced_keys()
                except FileNotFoundError:
                    continue
    chunks_root = posixpath.join(root, CHUNKS_DIR)
    deleted = freed = kept = 0
    if fs.exists(chunks_root):
        for path, info in fs.find(chunks_root, detail=True).items():
            name = posixpath.basename(path)
            if name in referenced:
                kept += 1
                continue
            if now - _mtime(info) < policy.gc_grace_s:
                kept += 1
                continue
            fs.rm_file(path)
            deleted += 1
            freed += int(info.get("size") or 0)
    return GCResult(deleted_steps=deleted_steps, deleted_chunks=deleted, freed_bytes=freed,
                    kept_chunks=kept)
