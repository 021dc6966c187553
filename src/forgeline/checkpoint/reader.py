"""Read committed checkpoints: list steps, read manifests, restore, verify, reshard N→M.

Needs no writer (no staging memory, no write threads): retention, export and resume use it
directly; ``CheckpointStore`` inherits it to read its own checkpoints. Every manifest read is
checked (:mod:`~forgeline.checkpoint.manifests`); restoring "the latest" skips a step whose
manifests are damaged, with a warning, and uses the newest good one.
"""

from __future__ import annotations

import logging
import posixpath
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from forgeline import storage
from forgeline.checkpoint import codecs
from forgeline.checkpoint.chunking import content_hash, from_bytes
from forgeline.checkpoint.errors import CheckpointCorruptError, CheckpointNotFoundError
from forgeline.checkpoint.format import (
    STEPS_DIR,
    ChunkRef,
    Manifest,
    TensorEntry,
    chunk_path,
    parse_shard_name,
    shard_name,
    step_dir,
)
from forgeline.checkpoint.manifests import decode_manifest
from forgeline.checkpoint.state import TensorLike, unflatten_state
from forgeline.errors import ConfigError, IntegrityError

log = logging.getLogger(__name__)


@dataclass
class Restored:
    step: int
    state: Any
    metadata: dict[str, Any]
    manifest: Manifest


def step_folders(fs: Any, root: str) -> dict[int, str]:
    """``{step: folder}`` of every step folder under ``root``, committed or not."""
    steps_root = posixpath.join(root, STEPS_DIR)
    if not fs.exists(steps_root):
        return {}
    names = {posixpath.basename(p.rstrip("/")): p for p in fs.ls(steps_root, detail=False)}
    return {int(name): path for name, path in names.items() if name.isdigit()}


def committed_steps(url: str) -> dict[int, int]:
    """``{step: world_size}`` of every committed checkpoint under ``url`` (all ranks present)."""
    fs, root = storage.filesystem(url)
    found: dict[int, int] = {}
    for step, entry in step_folders(fs, root).items():
        shards: dict[int, set[int]] = {}
        try:
            listed = fs.ls(entry, detail=False)
        except FileNotFoundError:  # deleted by retention meanwhile
            continue
        for shard in listed:
            parsed = parse_shard_name(posixpath.basename(shard))
            if parsed:
                shards.setdefault(parsed[1], set()).add(parsed[0])
        for world, ranks in shards.items():
            if len(ranks) == world:
                found[step] = world
    return found


def manifest_path(root: str, step: int, rank: int, world_size: int) -> str:
    return posixpath.join(step_dir(root, step), shard_name(rank, world_size))


def read_manifest(url: str, step: int, rank: int, world_size: int) -> Manifest:
    """The checked manifest of ``rank`` at ``step``; ``CheckpointCorruptError`` if damaged."""
    fs, root = storage.filesystem(url)
    path = manifest_path(root, step, rank, world_size)
    return decode_manifest(fs.cat_file(path), path)


def step_damage(url: str, step: int, world_size: int) -> CheckpointCorruptError | None:
    """The error of the first damaged manifest of ``step``; None when every one is intact."""
    try:
        for rank in range(world_size):
            read_manifest(url, step, rank, world_size)
    except CheckpointCorruptError as exc:
        return exc
    return None


class CheckpointReader:
    """Committed checkpoints under ``url``; ``rank`` is the default rank to restore."""

    def __init__(self, url: str, rank: int = 0, verify_on_restore: bool = True,
                 read_threads: int = 4) -> None:
        self.url = storage.normalize_root(url)
        self.fs, self.root = storage.filesystem(self.url, "url")
        self._local = storage.is_local(self.fs)
        self.rank, self.verify_on_restore, self.read_threads = rank, verify_on_restore, read_threads

    def steps(self) -> list[int]:
        """Committed steps, oldest first."""
        return sorted(committed_steps(self.url))

    def latest_step(self) -> int | None:
        steps = self.steps()
        return steps[-1] if steps else None

    def latest_good_step(self, committed: dict[int, int] | None = None) -> int | None:
        """The newest committed step whose manifests (all ranks) are intact; warns of skips.
        ``committed``: the listing :func:`committed_steps` just gave (saves its requests)."""
        committed = committed_steps(self.url) if committed is None else committed
        for step in sorted(committed, reverse=True):
            try:
                damage = step_damage(self.url, step, committed[step])
            except FileNotFoundError:  # deleted by retention meanwhile
                continue
            if damage is not None:
                log.warning("skipping a damaged checkpoint: %s", damage)
                continue
            if step != max(committed):
                log.warning("using step %s, the newest intact checkpoint under %s (newest "
                            "committed: %s)", step, self.url, max(committed))
            return step
        return None

    def manifest(self, step: int | None = None, rank: int | None = None,
                 committed: dict[int, int] | None = None) -> Manifest:
        """The checked manifest of ``rank`` at ``step`` (default: the newest intact step);
        ``committed`` as in :meth:`latest_good_step`."""
        found = committed_steps(self.url) if committed is None else committed
        if step is None:
            step = self.latest_good_step(found)
            if step is None:
                raise CheckpointNotFoundError(
                    f"no committed checkpoint under {self.url} (none, or all damaged)")
        if step not in found:
            raise CheckpointNotFoundError(
                f"step={step}: no committed checkpoint under {self.url} "
                f"(committed: {sorted(found) or 'none'})"
            )
        rank = self.rank if rank is None else rank
        if not 0 <= rank < found[step]:
            raise ConfigError("rank", rank, f"step {step} was saved by {found[step]} ranks; "
                              "per-rank (optimizer) state cannot be resharded — use "
                              "load_resharded for dim-0 sharded or replicated model state")
        return read_manifest(self.url, step, rank, found[step])

    def restore(self, step: int | None = None, rank: int | None = None,
                names: Iterable[str] | None = None) -> Restored:
        """Restore this rank's (or ``rank``'s) state at ``step`` (default: newest intact)."""
        return self.restore_manifest(self.manifest(step, rank), names)

    def restore_manifest(self, manifest: Manifest, names: Iterable[str] | None = None,
                         verify: bool | None = None) -> Restored:
        """Restore the state ``manifest`` (already read and checked) describes, from the
        chunks under this reader's URL; ``verify`` overrides ``verify_on_restore``."""
        wanted = set(names) if names is not None else None
        tensors = self._read_tensors(
            [e for e in manifest.tensors if wanted is None or e.name in wanted], manifest.hash,
            self.verify_on_restore if verify is None else verify,
        )
        if wanted is not None:
            return Restored(manifest.step, tensors, manifest.metadata, manifest)
        state = unflatten_state(manifest.skeleton, tensors)
        return Restored(manifest.step, state, manifest.metadata, manifest)

    def _load_chunk(self, where: str, ref: ChunkRef, hash_name: str, verify: bool,
                    out: np.ndarray) -> None:
        """Decode the chunk ``ref`` (its delta chain first) into ``out`` and verify it."""
        if out.size != ref.raw_bytes:
            raise IntegrityError(f"{where}: {out.size} bytes, manifest says {ref.raw_bytes}")
        keys = [*ref.chain, ref.key]  # keyframe first, then the deltas on top
        try:
            if not (self._local and not ref.chain and self._read_plain_raw(ref.key, out)):
                raw = None
                for i, key in enumerate(keys):
                    raw = codecs.decode(self.fs.cat_file(chunk_path(self.root, key)), raw,
                                        out if i == len(keys) - 1 else None)
        except FileNotFoundError as exc:
            raise IntegrityError(f"{where}: chunk is missing ({exc})") from exc
        except IntegrityError as exc:
            raise IntegrityError(f"{where}: {exc}") from exc
        if verify and content_hash(out, hash_name) != ref.digest:
            raise IntegrityError(f"{where}: {hash_name} mismatch (corrupted chunk)")

    def _read_plain_raw(self, key: str, out: np.ndarray) -> bool:
        """On a local disk, read a plain raw chunk's payload straight into ``out`` (no
        intermediate copy: the fast tiers hold raw chunks); False when the blob is anything
        else (the caller decodes it as usual)."""
        with self.fs.open(chunk_path(self.root, key), "rb") as f:
            raw_len = codecs.plain_raw_length(f.read(codecs.HEADER_BYTES))
            if raw_len is None or raw_len != out.size:
                return False
            got = f.readinto(memoryview(out))
            if got != out.size or f.read(1):
                raise IntegrityError(f"raw chunk holds {got} payload bytes (or more), header "
                                     f"says {out.size}")
        return True

    def _read_tensors(self, entries: list[TensorEntry], hash_name: str, verify: bool
                      ) -> dict[str, TensorLike]:
        def load(entry: TensorEntry, index: int, ref: ChunkRef, out: np.ndarray) -> None:
            where = (f"tensor {entry.name!r} chunk {index}/{len(entry.chunks)} "
                     f"(key {ref.key}) under {self.url}")
            self._load_chunk(where, ref, hash_name, verify, out)

        futures, result = [], {}
        with ThreadPoolExecutor(self.read_threads, "forgeline-ckpt-read") as pool:
            for entry in entries:
                buf = np.empty(entry.nbytes, dtype=np.uint8)
                offset = 0
                for i, ref in enumerate(entry.chunks):
                    part = buf[offset : offset + ref.raw_bytes]
                    futures.append(pool.submit(load, entry, i, ref, part))
                    offset += ref.raw_bytes
                if offset != entry.nbytes:
                    raise IntegrityError(f"tensor {entry.name!r}: chunks hold {offset} bytes, "
                                         f"manifest says {entry.nbytes}")
                result[entry.name] = (buf, entry)
            for future in futures:
                future.result()
        return {name: from_bytes(buf, entry.dtype, entry.shape)
                for name, (buf, entry) in result.items()}

    def verify(self, step: int | None = None) -> int:
        """Read back and checksum every chunk of every rank at ``step`` (whatever
        ``verify_on_restore`` says) and check every manifest; return the chunk count."""
        manifest = self.manifest(step)
        chunks = 0
        for rank in range(manifest.world_size):
            shard = self.manifest(manifest.step, rank)
            self._read_tensors(shard.tensors, shard.hash, verify=True)
            chunks += sum(len(e.chunks) for e in shard.tensors)
        return chunks

    def load_resharded(self, step: int | None, prefix: str, rank: int,
                       world_size: int) -> dict[str, torch.Tensor]:
        """Model state saved by N ranks, re-split for ``rank`` of ``world_size`` (N→M).

        Replicated tensors come back whole; tensors saved as dim-0 shards (``dim0_offset``)
        are reassembled and re-split evenly along dim 0 (``torch.tensor_split``).
        """
        first = self.manifest(step, 0)
        pieces: dict[str, list[tuple[int, TensorLike]]] = {}
        global_shapes: dict[str, list[int]] = {}
        for shard_rank in range(first.world_size):
            shard = first if shard_rank == 0 else self.manifest(first.step, shard_rank)
            entries = [e for e in shard.tensors if e.name.startswith(prefix)]
            if shard_rank > 0:  # replicated tensors were read from rank 0 already
                entries = [e for e in entries if e.dim0_offset is not None]
            values = self._read_tensors(entries, shard.hash, self.verify_on_restore).values()
            for entry, value in zip(entries, values, strict=True):
                pieces.setdefault(entry.name, []).append((entry.dim0_offset or 0, value))
                global_shapes[entry.name] = entry.global_shape or entry.shape
        out: dict[str, torch.Tensor] = {}
        for name, parts in pieces.items():
            tensors = [torch.as_tensor(v) for _, v in sorted(parts, key=lambda p: p[0])]
            full = tensors[0] if len(tensors) == 1 else torch.cat(tensors)
            if list(full.shape) != global_shapes[name]:
                raise IntegrityError(f"tensor {name!r}: shards add up to {list(full.shape)}, "
                                     f"expected {global_shapes[name]}")
            is_sharded = any(e.dim0_offset is not None for e in first.tensors if e.name == name)
            out[name] = (torch.tensor_split(full, world_size)[rank].clone()
                         if is_sharded else full)
        return out
