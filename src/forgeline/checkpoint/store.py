"""The checkpoint store: save (sync or async), list, restore and verify checkpoints on fsspec.

One ``CheckpointStore`` per writing rank. ``save`` copies the state into bounded staging
buffers and returns; background threads hash, deduplicate, encode and write the chunks in
parallel; a single committer thread then writes the rank's manifest atomically, in save order.
A background failure is re-raised by the next ``save``/``wait``/``close`` and no later
checkpoint of this store is committed after it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import posixpath
import threading
import time
from collections.abc import Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from forgeline import storage
from forgeline.checkpoint import codecs
from forgeline.checkpoint.chunking import (
    chunk_spans,
    dtype_name,
    from_bytes,
    itemsize,
    sha256,
    tensor_bytes,
)
from forgeline.checkpoint.config import CheckpointConfig
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
from forgeline.checkpoint.staging import StagingPool
from forgeline.checkpoint.state import TensorLike, flatten_state, unflatten_state
from forgeline.errors import ConfigError, ForgelineError, IntegrityError

log = logging.getLogger(__name__)


class CheckpointNotFoundError(ForgelineError, LookupError):
    """The requested step has no committed checkpoint."""


class CheckpointWriteError(ForgelineError):
    """A background save failed; raised on the next call so it is never silent."""


@dataclass
class SaveInfo:
    """What one ``save`` did; ``persisted`` resolves once the manifest is committed."""

    step: int
    blocked_s: float
    raw_bytes: int
    persisted: Future = field(repr=False)


@dataclass
class Restored:
    step: int
    state: Any
    metadata: dict[str, Any]
    manifest: Manifest


def committed_steps(url: str) -> dict[int, int]:
    """``{step: world_size}`` of every committed checkpoint under ``url`` (all ranks present)."""
    fs, root = storage.filesystem(url)
    steps_root = posixpath.join(root, STEPS_DIR)
    if not fs.exists(steps_root):
        return {}
    found: dict[int, int] = {}
    for entry in fs.ls(steps_root, detail=False):
        name = posixpath.basename(entry.rstrip("/"))
        if not name.isdigit():
            continue
        shards: dict[int, set[int]] = {}
        for shard in fs.ls(entry, detail=False):
            parsed = parse_shard_name(posixpath.basename(shard))
            if parsed:
                shards.setdefault(parsed[1], set()).add(parsed[0])
        for world, ranks in shards.items():
            if len(ranks) == world:
                found[int(name)] = world
    return found


def read_manifest(url: str, step: int, rank: int, world_size: int) -> Manifest:
    fs, root = storage.filesystem(url)
    path = posixpath.join(step_dir(root, step), shard_name(rank, world_size))
    return Manifest.model_validate_json(fs.cat_file(path))


def _put(fs: Any, path: str, data: bytes) -> None:
    """Write a chunk so a reader never sees part of it (rename locally; object PUTs are whole)."""
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    if protocol in ("file", "local"):
        storage.write_bytes_atomic(f"file://{path}", data)
    else:
        fs.pipe_file(path, data)


class CheckpointStore:
    """Chunked, deduplicated, compressed, async checkpoints of one rank under ``url``."""

    def __init__(self, url: str, config: CheckpointConfig | None = None, rank: int = 0,
                 world_size: int = 1) -> None:
        if not 0 <= rank < world_size:
            raise ConfigError("rank", rank, f"must be in [0, world_size={world_size})")
        self.url = storage.normalize_root(url)
        self.config = config or CheckpointConfig()
        self.rank, self.world_size = rank, world_size
        self.fs, self.root = storage.filesystem(self.url, "url")
        self._staging = StagingPool(self.config.max_staging_bytes, self.config.chunk_bytes)
        self._workers = ThreadPoolExecutor(self.config.write_threads, "forgeline-ckpt-write")
        self._committer = ThreadPoolExecutor(1, "forgeline-ckpt-commit")
        self._lock = threading.Lock()
        self._error: BaseException | None = None
        self._pending: list[Future] = []
        self._index: dict[str, ChunkRef] = {}  # refs of the previous save: what dedup may reuse
        self._bases: dict[tuple[str, int], tuple[str, np.ndarray]] = {}
        self._saves = 0
        self._closed = False
        self._last_step: int | None = None
        self._last_keyframe_pending = False
        self.last_stats: dict[str, float] = {}

    # ----------------------------------------------------------------- save
    def save(self, state: Mapping[str, Any] | Any, step: int,
             metadata: Mapping[str, Any] | None = None,
             dim0_shards: Mapping[str, tuple[int, list[int]]] | None = None) -> SaveInfo:
        """Snapshot ``state`` and persist it as checkpoint ``step`` (in background if async).

        ``dim0_shards`` marks tensors (by flattened name, e.g. ``model/w``) that this rank holds
        as rows ``[offset, offset + rows)`` of a tensor of ``global_shape``, for N→M restore.
        """
        self._raise_background_error()
        if step < 0:
            raise ConfigError("step", step, "must be ≥ 0")
        if self._last_step is not None and step <= self._last_step:
            raise ConfigError("step", step,
                              f"must be greater than the last saved step {self._last_step}")
        started = time.perf_counter()
        cfg = self.config
        keyframe = not cfg.delta or self._saves % cfg.keyframe_every == 0
        if cfg.delta and self._last_keyframe_pending:
            self.wait()  # delta chunks need the keyframe's bases in memory
        skeleton, tensors = flatten_state(state)
        json.dumps(metadata or {})  # fail here, not in the background
        parent_index = self._index
        new_index: dict[str, ChunkRef] = {}
        entries: list[tuple[TensorEntry, list[Future]]] = []
        raw_total = 0
        staged: list[tuple[list[Any], int, tuple[Any, ...]]] = []

        def submit_staged() -> None:
            for slots, position, args in staged:
                slots[position] = self._workers.submit(self._persist_chunk, *args)
            staged.clear()
        for name, value in tensors.items():
            raw = tensor_bytes(value)
            item = itemsize(value)
            lossy = (cfg.lossy_optimizer and dtype_name(value) == "float32"
                     and name.startswith(cfg.lossy_prefixes))
            codec = "q8" if lossy else cfg.codec
            entry = TensorEntry(name=name, dtype=dtype_name(value), shape=list(value.shape),
                                nbytes=raw.size, codec=codec, chunks=[])
            if dim0_shards and name in dim0_shards:
                entry.dim0_offset, entry.global_shape = dim0_shards[name][0], list(
                    dim0_shards[name][1])
            futures: list[Future] = []
            for index, (offset, length) in enumerate(chunk_spans(raw.size, cfg.chunk_bytes, item)):
                buf = self._staging.try_take(length)
                if buf is None:  # budget spent: start persisting what is staged, then wait
                    submit_staged()
                    buf = self._staging.take(length)
                np.copyto(buf, raw[offset : offset + length])
                staged.append((futures, index, (name, index, buf, item, codec, keyframe,
                                                parent_index, new_index)))
                futures.append(None)  # type: ignore[arg-type]  # set by submit_staged
            raw_total += raw.size
            entries.append((entry, futures))
        # the snapshot is complete before any background work competes with the copy
        submit_staged()
        blocked = time.perf_counter() - started
        self._index = new_index
        self._last_keyframe_pending = cfg.delta and keyframe
        parent = self._last_step
        self._last_step = step
        self._saves += 1
        persisted = self._committer.submit(
            self._commit, step, parent, keyframe, skeleton, entries, dict(metadata or {}),
            raw_total, started, blocked,
        )
        self._pending = [f for f in self._pending if not f.done()] + [persisted]
        if not cfg.async_save:
            self.wait()
        return SaveInfo(step, time.perf_counter() - started if not cfg.async_save else blocked,
                        raw_total, persisted)

    def _persist_chunk(self, name: str, index: int, buf: np.ndarray, item: int, codec: str,
                       keyframe: bool, parent_index: dict[str, ChunkRef],
                       new_index: dict[str, ChunkRef]) -> ChunkRef:
        keep_as_base = False
        try:
            digest = sha256(buf)
            base = None if keyframe else self._bases.get((name, index))
            if codec == "q8":
                sqrt_mode = name.endswith("exp_avg_sq")
                key = f"{digest}.q8{'s' if sqrt_mode else ''}"
            elif base is not None and base[0] != digest and base[1].size == buf.size:
                key = f"{digest}.x{base[0][:16]}"
            else:
                key, base = digest, None
            with self._lock:
                known = parent_index.get(key) or new_index.get(key)
            if known is not None:
                ref = known.model_copy(update={"stored_bytes": 0})
            else:
                if codec == "q8":
                    blob = codecs.quantize8(buf, sqrt_mode, self.config.zstd_level)
                    restored_sha = sha256(codecs.decode(blob))
                else:
                    blob = codecs.encode(buf, item, codec, self.config.zstd_level,
                                         base[1] if base else None)
                    restored_sha = digest
                _put(self.fs, chunk_path(self.root, key), blob)
                ref = ChunkRef(key=key, sha256=restored_sha, raw_bytes=buf.size,
                               stored_bytes=len(blob), base=base[0] if base else None)
            with self._lock:
                new_index[key] = ref
                if self.config.delta and keyframe and ref.base is None and codec != "q8":
                    self._bases[(name, index)] = (key, buf)
                    keep_as_base = True
            return ref
        finally:  # a keyframe base stays in memory, outside the staging budget
            self._staging.give(buf, reuse=not keep_as_base)

    def _commit(self, step: int, parent: int | None, keyframe: bool, skeleton: Any,
                entries: list[tuple[TensorEntry, list[Future]]], metadata: dict[str, Any],
                raw_total: int, started: float, blocked: float) -> Manifest:
        try:
            tensors = []
            for entry, futures in entries:
                entry.chunks = [f.result() for f in futures]
                tensors.append(entry)
            if self._error is not None:
                raise CheckpointWriteError(f"step {step} not committed: an earlier save failed")
            written = sum(r.stored_bytes for e in tensors for r in e.chunks)
            stats = {
                "raw_bytes": float(raw_total),
                "written_bytes": float(written),
                "chunks": float(sum(len(e.chunks) for e in tensors)),
                "chunks_written": float(sum(r.stored_bytes > 0 for e in tensors for r in e.chunks)),
                "blocked_s": blocked,
                "persist_s": time.perf_counter() - started,
            }
            manifest = Manifest(
                step=step, rank=self.rank, world_size=self.world_size,
                created_unix_s=time.time(), chunk_bytes=self.config.chunk_bytes,
                parent_step=parent, keyframe=keyframe, skeleton=skeleton, tensors=tensors,
                metadata=metadata, stats=stats,
            )
            url = storage.join(self.url, posixpath.relpath(step_dir(self.root, step), self.root),
                               shard_name(self.rank, self.world_size))
            storage.write_bytes_atomic(url, manifest.model_dump_json().encode())
            self.last_stats = stats
            return manifest
        except BaseException as exc:
            with self._lock:
                if self._error is None:
                    self._error = exc
            raise
        finally:
            if self.config.delta and keyframe:
                self._last_keyframe_pending = False

    def _raise_background_error(self) -> None:
        if self._error is not None:
            exc = self._error
            raise CheckpointWriteError(
                f"a background checkpoint save to {self.url} failed: {type(exc).__name__}: {exc}"
            ) from exc

    def wait(self) -> None:
        """Block until every save so far is committed; raise if any failed."""
        for future in list(self._pending):
            with contextlib.suppress(BaseException):  # recorded in self._error, raised below
                future.result()
        self._pending = []
        self._raise_background_error()

    def close(self) -> None:
        """Wait for pending saves (raising a background failure), then free threads and memory."""
        if self._closed:
            return
        self._closed = True
        try:
            self.wait()
        finally:
            self._workers.shutdown(wait=True)
            self._committer.shutdown(wait=True)
            self._staging.clear()
            self._bases.clear()

    def __enter__(self) -> CheckpointStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ----------------------------------------------------------------- read
    def steps(self) -> list[int]:
        """Committed steps, oldest first."""
        return sorted(committed_steps(self.url))

    def latest_step(self) -> int | None:
        steps = self.steps()
        return steps[-1] if steps else None

    def manifest(self, step: int | None = None, rank: int | None = None) -> Manifest:
        found = committed_steps(self.url)
        if step is None:
            if not found:
                raise CheckpointNotFoundError(f"no committed checkpoint under {self.url}")
            step = max(found)
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
        """Restore this rank's (or ``rank``'s) state at ``step`` (default: latest committed)."""
        manifest = self.manifest(step, rank)
        wanted = set(names) if names is not None else None
        tensors = self._read_tensors(
            [e for e in manifest.tensors if wanted is None or e.name in wanted]
        )
        if wanted is not None:
            return Restored(manifest.step, tensors, manifest.metadata, manifest)
        state = unflatten_state(manifest.skeleton, tensors)
        return Restored(manifest.step, state, manifest.metadata, manifest)

    def _read_tensors(self, entries: list[TensorEntry]) -> dict[str, TensorLike]:
        bases: dict[str, np.ndarray] = {}
        base_lock = threading.Lock()

        def fetch(key: str) -> bytes:
            return self.fs.cat_file(chunk_path(self.root, key))

        def load(entry: TensorEntry, index: int, ref: ChunkRef) -> np.ndarray:
            where = (f"tensor {entry.name!r} chunk {index}/{len(entry.chunks)} "
                     f"(key {ref.key}) under {self.url}")
            try:
                blob = fetch(ref.key)
                base = None
                if ref.base is not None:
                    with base_lock:
                        base = bases.get(ref.base)
                    if base is None:
                        base = codecs.decode(fetch(ref.base))
                        with base_lock:
                            bases[ref.base] = base
                raw = codecs.decode(blob, base)
            except FileNotFoundError as exc:
                raise IntegrityError(f"{where}: chunk is missing ({exc})") from exc
            except IntegrityError as exc:
                raise IntegrityError(f"{where}: {exc}") from exc
            if raw.size != ref.raw_bytes:
                raise IntegrityError(f"{where}: {raw.size} bytes, manifest says {ref.raw_bytes}")
            if self.config.verify_on_restore and sha256(raw) != ref.sha256:
                raise IntegrityError(f"{where}: sha256 mismatch (corrupted chunk)")
            return raw

        jobs = [(entry, [self._workers.submit(load, entry, i, ref)
                         for i, ref in enumerate(entry.chunks)]) for entry in entries]
        out: dict[str, TensorLike] = {}
        for entry, futures in jobs:
            buf = np.empty(entry.nbytes, dtype=np.uint8)
            offset = 0
            for future in futures:
                part = future.result()
                buf[offset : offset + part.size] = part
                offset += part.size
            out[entry.name] = from_bytes(buf, entry.dtype, entry.shape)
        return out

    def verify(self, step: int | None = None) -> int:
        """Read back and checksum every chunk of every rank at ``step``; return the chunk count."""
        manifest = self.manifest(step)
        chunks = 0
        for rank in range(manifest.world_size):
            shard = self.manifest(manifest.step, rank)
            self._read_tensors(shard.tensors)
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
            for entry, value in zip(entries, self._read_tensors(entries).values(), strict=True):
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
