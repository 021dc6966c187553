"""Retention (keep-last-k, keep-every-n) and mark-and-sweep garbage collection of chunks.

GC marks every chunk named by *any* manifest present (committed or still being completed by
other ranks), so a chunk a committed manifest uses is never deleted. Unreferenced chunks and
leftover temp files younger than ``gc_grace_s`` are kept too: they may belong to a save in
flight whose manifest is not written yet. Only one collector runs at a time (a lease file
with an expiry, :mod:`~forgeline.checkpoint.lease`); files that vanish meanwhile are skipped.
A step whose manifest cannot be read is neither counted nor deleted by retention, and while
one exists no chunk is deleted (its references are unknown): both are reported.
"""

from __future__ import annotations

import contextlib
import logging
import posixpath
import time
import uuid

from pydantic import BaseModel, Field

from forgeline import storage
from forgeline.checkpoint.config import RetentionPolicy
from forgeline.checkpoint.errors import CheckpointCorruptError
from forgeline.checkpoint.format import CHUNKS_DIR, STEPS_DIR, parse_shard_name, step_dir
from forgeline.checkpoint.lease import Lease
from forgeline.checkpoint.manifests import decode_manifest
from forgeline.checkpoint.publish import mtime_unix_s
from forgeline.checkpoint.reader import committed_steps, step_damage, step_folders

log = logging.getLogger(__name__)
ABANDONED_DIR = "abandoned"


class GCResult(BaseModel):
    deleted_steps: list[int]
    deleted_chunks: int
    freed_bytes: int
    kept_chunks: int
    damaged_steps: list[int] = Field(
        default_factory=list, description="Steps with an unreadable manifest: left alone.")
    skipped: str | None = Field(None, description="Why this run did nothing, if it did not.")


def steps_to_delete(steps: list[int], policy: RetentionPolicy) -> list[int]:
    """Committed steps that ``policy`` does not keep (never the newest ``keep_last``)."""
    ordered = sorted(steps)
    keep = set(ordered[-policy.keep_last :])
    if policy.keep_every_steps:
        keep |= {s for s in ordered if s % policy.keep_every_steps == 0}
    return [s for s in ordered if s not in keep]


def _intact_steps(url: str) -> tuple[list[int], list[int]]:
    """Committed steps split into (intact, damaged); damaged ones are logged."""
    intact, damaged = [], []
    for step, world in committed_steps(url).items():
        try:
            damage = step_damage(url, step, world)
        except FileNotFoundError:
            continue
        if damage is None:
            intact.append(step)
        else:
            log.warning("retention leaves a damaged checkpoint alone: %s", damage)
            damaged.append(step)
    return sorted(intact), sorted(damaged)


def apply_retention(url: str, policy: RetentionPolicy) -> list[int]:
    """Delete the manifests of intact committed steps outside ``policy`` (chunks: GC)."""
    return _retire(storage.normalize_root(url), policy)[0]


def _retire(url: str, policy: RetentionPolicy) -> tuple[list[int], list[int]]:
    """(steps deleted, damaged steps left alone)."""
    fs, root = storage.filesystem(url)
    intact, damaged = _intact_steps(url)
    doomed = steps_to_delete(intact, policy)
    for step in doomed:
        folder = step_dir(root, step)
        try:
            shards = fs.ls(folder, detail=False)
        except FileNotFoundError:  # moved aside or deleted meanwhile
            continue
        for shard in sorted(shards, reverse=True):
            with contextlib.suppress(FileNotFoundError):  # never half-visible: one rank gone
                fs.rm_file(shard)  # and the step is no longer committed
        with contextlib.suppress(OSError, NotImplementedError):
            fs.rmdir(folder)
    return doomed, damaged


def abandon_steps_after(url: str, step: int) -> list[int]:
    """Move the manifests of steps after ``step`` (a dead run's partial or damaged saves) to
    ``{url}/abandoned/``, so a resumed run can save those steps again; returns them."""
    url = storage.normalize_root(url)
    fs, root = storage.filesystem(url)
    later = sorted(s for s in step_folders(fs, root) if s > step)
    for later_step in later:
        folder = step_dir(root, later_step)
        aside = posixpath.join(root, ABANDONED_DIR, f"{later_step:012d}-{uuid.uuid4().hex[:8]}")
        shards = fs.ls(folder, detail=False)
        if shards:
            fs.makedirs(aside, exist_ok=True)
            log.warning("step %s under %s was not (intactly) committed: moving it aside to %s",
                        later_step, url, aside)
        for shard in shards:
            with contextlib.suppress(FileNotFoundError):
                fs.mv(shard, posixpath.join(aside, posixpath.basename(shard)))
        with contextlib.suppress(OSError, NotImplementedError):
            fs.rmdir(folder)
    return later


def _mark(fs, root: str) -> tuple[set[str], bool]:
    """Keys every manifest present references, and whether some manifest could not be read."""
    referenced: set[str] = set()
    unreadable = False
    steps_root = posixpath.join(root, STEPS_DIR)
    if not fs.exists(steps_root):
        return referenced, unreadable
    for path in fs.find(steps_root):
        if not parse_shard_name(posixpath.basename(path)):
            continue
        try:
            referenced |= decode_manifest(fs.cat_file(path), path).referenced_keys()
        except FileNotFoundError:
            continue
        except CheckpointCorruptError as exc:
            log.warning("GC deletes no chunk while a manifest is unreadable: %s", exc)
            unreadable = True
    return referenced, unreadable


def sweep(fs, paths: dict[str, int]) -> tuple[int, int]:
    """Delete ``{path: size}``; files already gone are skipped. (deleted, freed bytes)."""
    deleted = freed = 0
    for path, size in paths.items():
        try:
            fs.rm_file(path)
        except FileNotFoundError:
            continue
        deleted += 1
        freed += size
    return deleted, freed


def collect_garbage(url: str, policy: RetentionPolicy | None = None) -> GCResult:
    """Apply ``policy``'s retention, then delete chunks no manifest references."""
    url = storage.normalize_root(url)
    policy = policy or RetentionPolicy()
    fs, root = storage.filesystem(url)
    lease = Lease(fs, root, policy.gc_lease_s)
    if not lease.acquire():
        return GCResult(deleted_steps=[], deleted_chunks=0, freed_bytes=0, kept_chunks=0,
                        skipped=f"another collector holds {lease.path}: {lease.holder}")
    try:
        deleted_steps, damaged = _retire(url, policy)
        now = time.time()
        referenced, unreadable = _mark(fs, root)
        chunks_root = posixpath.join(root, CHUNKS_DIR)
        found = fs.find(chunks_root, detail=True) if fs.exists(chunks_root) else {}
        doomed = {path: int(info.get("size") or 0) for path, info in found.items()
                  if posixpath.basename(path) not in referenced
                  and now - mtime_unix_s(info) >= policy.gc_grace_s}
        again, unreadable_again = _mark(fs, root)  # manifests committed while we listed
        doomed = {p: s for p, s in doomed.items() if posixpath.basename(p) not in again}
        if unreadable or unreadable_again or not lease.renew():
            doomed = {}
        deleted, freed = sweep(fs, doomed)
    finally:
        lease.release()
    return GCResult(deleted_steps=deleted_steps, deleted_chunks=deleted, freed_bytes=freed,
                    kept_chunks=len(found) - deleted, damaged_steps=damaged)
