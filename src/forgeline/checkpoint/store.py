"""The checkpoint store: save (sync or async), list, restore and verify checkpoints on fsspec.

One ``CheckpointStore`` per writing rank. ``save`` takes a host snapshot of the state into
bounded staging buffers — inside the call, or (once ``protect`` guards the optimizer) on a
background thread overlapped with the next forward/backward, the next optimizer step waiting
for it (CheckFreq's snapshot/persist split). Worker threads then hash, deduplicate, encode
and write the chunks in parallel; a committer thread writes the rank's manifest atomically,
in save order. A background failure is re-raised by the next ``save``/``wait``/``close`` and
no later checkpoint of this store is committed after it.
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
    DEFAULT_HASH,
    chunk_spans,
    content_hash,
    dtype_name,
    from_bytes,
    itemsize,
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
from forgeline.checkpoint.guard import guard_optimizer_steps
from forgeline.checkpoint.snapshot import ChunkJob, Snapshot
from forgeline.checkpoint.staging import StagingPool
from forgeline.checkpoint.state import TensorLike, flatten_state, unflatten_state
from forgeline.errors import ConfigError, ForgelineError, IntegrityError

log = logging.getLogger(__name__)
_DELTA_WORTH = 0.75  # a delta blob larger than this × raw is re-encoded plain; smaller wins


class CheckpointNotFoundError(ForgelineError, LookupError):
    """The requested step has no committed checkpoint."""


class CheckpointWriteError(ForgelineError):
    """A background save failed; raised on the next call so it is never silent."""


@dataclass
class SaveInfo:
    """What one ``save`` did; ``persisted`` resolves once the manifest is committed.

    ``blocked_s``: time inside ``save``; ``waited_s``: time the optimizer-step guard (or the
    next ``save``/``wait``) spent waiting for this save's overlapped snapshot.
    """

    step: int
    blocked_s: float
    raw_bytes: int
    persisted: Future = field(repr=False)
    waited_s: float = 0.0

    @property
    def stall_s(self) -> float:
        """Training time this checkpoint blocked: ``blocked_s + waited_s``."""
        return self.blocked_s + self.waited_s


@dataclass
class _Chunk:
    """A persisted chunk: its ref, what a restore reconstructs (kept as the next delta base),
    and the hash of the source bytes (to spot unchanged chunks)."""

    ref: ChunkRef
    recon: np.ndarray | None
    source_digest: str


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
    if storage.is_local(fs):
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
        self._snapshotter = ThreadPoolExecutor(1, "forgeline-ckpt-snapshot")
        self._lock = threading.Lock()
        self._error: BaseException | None = None
        self._pending: list[Future] = []
        self._index: dict[str, ChunkRef] = {}  # refs of the previous save: what dedup may reuse
        self._prev: dict[tuple[str, int], Future] = {}  # previous save's chunks (delta bases)
        self._snapshot: Snapshot | None = None
        self._snapshot_info: SaveInfo | None = None
        self._hooks: list[Any] = []
        self._saves = 0
        self._closed = False
        self._last_step: int | None = None
        self.last_stats: dict[str, float] = {}

    # ----------------------------------------------------------------- guard
    def protect(self, target: Any) -> None:
        """Guard ``target``'s optimizer (a torch optimizer, a DeepSpeed engine or a wrapper):
        each step first waits for the last save's snapshot. Enables overlapped snapshots."""
        self._hooks += guard_optimizer_steps(target, self.wait_snapshot)

    @property
    def overlapped(self) -> bool:
        """Whether ``save`` returns before the snapshot copy is complete."""
        cfg = self.config
        return bool(cfg.overlap_snapshot and cfg.async_save and self._hooks)

    def wait_snapshot(self) -> float:
        """Block until the last save's snapshot is complete, helping to copy; seconds waited."""
        snapshot = self._snapshot
        if snapshot is None or snapshot.done.is_set():
            return 0.0
        started = time.perf_counter()
        with contextlib.suppress(BaseException):  # a failed copy surfaces on the next call
            snapshot.run()
        snapshot.done.wait()
        waited = time.perf_counter() - started
        if self._snapshot_info is not None:
            self._snapshot_info.waited_s += waited
        return waited

    # ----------------------------------------------------------------- save
    def _kind(self, name: str, value: Any) -> str:
        cfg = self.config
        numel = value.numel() if isinstance(value, torch.Tensor) else value.size
        if not (cfg.lossy and dtype_name(value) in ("float32", "np:<f4")
                and numel >= cfg.lossy_min_numel
                and name.startswith(cfg.lossy_prefixes)):
            return "lossless"
        if name.endswith("exp_avg_sq"):
            return "lossy-v"
        return "lossy-m" if name.endswith(("exp_avg", "momentum_buffer")) else "lossy-w"

    def save(self, state: Mapping[str, Any] | Any, step: int,
             metadata: Mapping[str, Any] | None = None,
             dim0_shards: Mapping[str, tuple[int, list[int]]] | None = None) -> SaveInfo:
        """Snapshot ``state`` and persist it as checkpoint ``step`` (in background if async).

        Overlapped (see ``protect``): returns before the copy is done; until the next guarded
        optimizer step, ``wait_snapshot``, ``save`` or ``wait``, the state's tensors must not
        be changed other than by that step.
        ``dim0_shards`` marks tensors (by flattened name, e.g. ``model/w``) that this rank holds
        as rows ``[offset, offset + rows)`` of a tensor of ``global_shape``, for N→M restore.
        """
        self._raise_background_error()
        if step < 0:
            raise ConfigError("step", step, "must be ≥ 0")
        if self._last_step is not None and step <= self._last_step:
            raise ConfigError("step", step,
                              f"must be greater than the last saved step {self._last_step}")
        self.wait_snapshot()  # counted in the previous save's waited_s
        started = time.perf_counter()
        cfg = self.config
        keyframe = self._saves % cfg.keyframe_every == 0
        skeleton, tensors = flatten_state(state)
        json.dumps(metadata or {})  # fail here, not in the background
        parent_index = self._index
        new_index: dict[str, ChunkRef] = {}
        entries: list[tuple[TensorEntry, list[ChunkJob]]] = []
        inline: list[ChunkJob] = []
        deferred: list[ChunkJob] = []
        prev: dict[tuple[str, int], Future] = {}
        overlapped = self.overlapped
        raw_total = 0
        for name, value in tensors.items():
            raw = tensor_bytes(value)
            kind = self._kind(name, value)
            chained = cfg.delta or kind != "lossless"
            entry = TensorEntry(name=name, dtype=dtype_name(value), shape=list(value.shape),
                                nbytes=raw.size, codec="lossy" if kind != "lossless" else cfg.codec,
                                chunks=[])
            if dim0_shards and name in dim0_shards:
                entry.dim0_offset, entry.global_shape = dim0_shards[name][0], list(
                    dim0_shards[name][1])
            jobs = []
            for index, (offset, length) in enumerate(
                    chunk_spans(raw.size, cfg.chunk_bytes, itemsize(value))):
                job = ChunkJob(name, index, raw[offset : offset + length], itemsize(value), kind,
                               self._prev.get((name, index)) if chained else None)
                if chained:
                    prev[(name, index)] = job.future
                jobs.append(job)
            small = not overlapped or raw.size <= cfg.inline_tensor_bytes
            (inline if small else deferred).extend(jobs)
            raw_total += raw.size
            entries.append((entry, jobs))

        def submit(job: ChunkJob) -> None:
            self._workers.submit(self._persist, job, keyframe, parent_index, new_index)

        snapshot = Snapshot(inline + deferred, self._staging, submit)
        before = (self._prev, self._index, self._last_step, self._saves)
        self._prev, self._index = prev, new_index
        parent = self._last_step
        self._last_step = step
        self._saves += 1
        info = SaveInfo(step, 0.0, raw_total, Future())
        self._snapshot, self._snapshot_info = snapshot, info
        try:
            snapshot.run(until=len(inline))  # the whole copy unless overlapped
        except BaseException:  # nothing was submitted for commit: as if save was not called
            self._prev, self._index, self._last_step, self._saves = before
            raise
        if deferred:
            self._snapshotter.submit(snapshot.run)
        info.blocked_s = time.perf_counter() - started
        info.persisted = self._committer.submit(
            self._commit, snapshot, step, parent, keyframe, skeleton, entries,
            dict(metadata or {}), raw_total, started, info,
        )
        self._pending = [f for f in self._pending if not f.done()] + [info.persisted]
        if not cfg.async_save:
            self.wait()
            info.blocked_s = time.perf_counter() - started
        return info

    def _persist(self, job: ChunkJob, keyframe: bool, parent_index: dict[str, ChunkRef],
                 new_index: dict[str, ChunkRef]) -> None:
        try:
            job.future.set_result(self._encode(job, keyframe, parent_index, new_index))
        except BaseException as exc:
            job.future.set_exception(exc)
            with self._lock:
                if self._error is None:
                    self._error = exc
        finally:
            job.parent = None

    def _encode(self, job: ChunkJob, keyframe: bool, parent_index: dict[str, ChunkRef],
                new_index: dict[str, ChunkRef]) -> _Chunk:
        buf, cfg = job.buf, self.config
        job.buf = None
        keep_buf = job.kind == "lossless" and cfg.delta  # the next save's delta base
        try:
            digest = content_hash(buf)
            parent: _Chunk | None = job.parent.result() if job.parent is not None else None
            if (parent is not None and parent.source_digest == digest
                    and not (keyframe and parent.ref.chain)):  # unchanged: reference it
                keep_buf = False
                return _Chunk(parent.ref.model_copy(update={"stored_bytes": 0}), parent.recon,
                              digest)
            base = None
            if (parent is not None and not keyframe and parent.recon is not None
                    and parent.recon.size == buf.size):
                base = parent
            if job.kind == "lossless":
                key = digest if base is None else f"{digest}.x{base.ref.digest[:16]}"
                with self._lock:
                    known = parent_index.get(key) or new_index.get(key)
                if known is None:
                    blob = codecs.encode(buf, job.item, cfg.codec, cfg.zstd_level,
                                         base.recon if base is not None else None)
                    if base is not None and len(blob) > _DELTA_WORTH * buf.size:
                        plain = codecs.encode(buf, job.item, cfg.codec, cfg.zstd_level)
                        if len(plain) < len(blob):  # the delta did not pay: a keyframe chunk
                            blob, base, key = plain, None, digest
                            with self._lock:
                                known = parent_index.get(key) or new_index.get(key)
                    chain = [*base.ref.chain, base.ref.key] if base is not None else []
                    ref = ChunkRef(key=key, digest=digest, raw_bytes=buf.size,
                                   stored_bytes=len(blob), chain=chain)
                recon = buf if keep_buf else None
            else:
                known, ref, blob, recon = self._encode_lossy(job.kind, buf, digest, base,
                                                             parent_index, new_index)
            if known is not None:
                ref = known.model_copy(update={"stored_bytes": 0})
            else:
                _put(self.fs, chunk_path(self.root, ref.key), blob)
            with self._lock:
                new_index[ref.key] = ref
            return _Chunk(ref, recon, digest)
        finally:  # a delta base stays in memory, outside the staging budget
            self._staging.give(buf, reuse=not keep_buf)

    def _encode_lossy(self, kind: str, buf: np.ndarray, digest: str, base: _Chunk | None,
                      parent_index: dict[str, ChunkRef], new_index: dict[str, ChunkRef]
                      ) -> tuple[ChunkRef | None, ChunkRef, bytes, np.ndarray]:
        cfg = self.config
        error = {"lossy-w": cfg.lossy_weight_error, "lossy-m": cfg.lossy_momentum_error,
                 "lossy-v": cfg.lossy_second_moment_error}[kind]
        try:
            blob, recon = codecs.encode_lossy(buf, base.recon if base else None, error,
                                              kind == "lossy-v", cfg.zstd_level)
        except OverflowError:  # a residual beyond the code range: start a new chain
            base = None
            blob, recon = codecs.encode_lossy(buf, None, error, kind == "lossy-v",
                                              cfg.zstd_level)
        chain = [*base.ref.chain, base.ref.key] if base is not None else []
        tag = content_hash(f"{kind}:{error!r}:{chain[-1] if chain else ''}".encode())
        key = f"{digest}.l{tag[:16]}"
        ref = ChunkRef(key=key, digest=content_hash(recon), raw_bytes=buf.size,
                       stored_bytes=len(blob), chain=chain)
        with self._lock:
            known = parent_index.get(key) or new_index.get(key)
        return known, ref, blob, recon

    def _commit(self, snapshot: Snapshot, step: int, parent: int | None, keyframe: bool,
                skeleton: Any, entries: list[tuple[TensorEntry, list[ChunkJob]]],
                metadata: dict[str, Any], raw_total: int, started: float,
                info: SaveInfo) -> Manifest:
        try:
            snapshot.done.wait()
            if snapshot.error is not None:
                raise snapshot.error
            tensors = []
            for entry, jobs in entries:
                entry.chunks = [job.future.result().ref for job in jobs]
                tensors.append(entry)
            if self._error is not None:
                raise CheckpointWriteError(f"step {step} not committed: an earlier save failed")
            written = sum(r.stored_bytes for e in tensors for r in e.chunks)
            stats = {
                "raw_bytes": float(raw_total),
                "written_bytes": float(written),
                "chunks": float(sum(len(e.chunks) for e in tensors)),
                "chunks_written": float(sum(r.stored_bytes > 0 for e in tensors for r in e.chunks)),
                "blocked_s": info.blocked_s,
                "persist_s": time.perf_counter() - started,
            }
            manifest = Manifest(
                step=step, rank=self.rank, world_size=self.world_size,
                created_unix_s=time.time(), chunk_bytes=self.config.chunk_bytes,
                hash=DEFAULT_HASH, parent_step=parent, keyframe=keyframe, skeleton=skeleton,
                tensors=tensors, metadata=metadata, stats=stats,
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

    def _raise_background_error(self) -> None:
        if self._error is not None:
            exc = self._error
            raise CheckpointWriteError(
                f"a background checkpoint save to {self.url} failed: {type(exc).__name__}: {exc}"
            ) from exc

    def wait(self) -> None:
        """Block until every save so far is committed; raise if any failed."""
        self.wait_snapshot()
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
            for hook in self._hooks:
                hook.remove()
            self._hooks = []
            self._snapshotter.shutdown(wait=True)
            self._workers.shutdown(wait=True)
            self._committer.shutdown(wait=True)
            self._staging.clear()
            self._prev.clear()

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
            [e for e in manifest.tensors if wanted is None or e.name in wanted], manifest.hash
        )
        if wanted is not None:
            return Restored(manifest.step, tensors, manifest.metadata, manifest)
        state = unflatten_state(manifest.skeleton, tensors)
        return Restored(manifest.step, state, manifest.metadata, manifest)

    def _read_tensors(self, entries: list[TensorEntry], hash_name: str
                      ) -> dict[str, TensorLike]:
        def load(entry: TensorEntry, index: int, ref: ChunkRef, out: np.ndarray) -> None:
            where = (f"tensor {entry.name!r} chunk {index}/{len(entry.chunks)} "
                     f"(key {ref.key}) under {self.url}")
            try:
                raw = None
                for key in [*ref.chain, ref.key]:  # keyframe first, then the deltas on top
                    raw = codecs.decode(self.fs.cat_file(chunk_path(self.root, key)), raw)
            except FileNotFoundError as exc:
                raise IntegrityError(f"{where}: chunk is missing ({exc})") from exc
            except IntegrityError as exc:
                raise IntegrityError(f"{where}: {exc}") from exc
            if raw.size != ref.raw_bytes or out.size != ref.raw_bytes:
                raise IntegrityError(f"{where}: {raw.size} bytes, manifest says {ref.raw_bytes}")
            if self.config.verify_on_restore and content_hash(raw, hash_name) != ref.digest:
                raise IntegrityError(f"{where}: {hash_name} mismatch (corrupted chunk)")
            out[:] = raw

        futures, result = [], {}
        for entry in entries:
            buf = np.empty(entry.nbytes, dtype=np.uint8)
            offset = 0
            for i, ref in enumerate(entry.chunks):
                part = buf[offset : offset + ref.raw_bytes]
                futures.append(self._workers.submit(load, entry, i, ref, part))
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
        """Read back and checksum every chunk of every rank at ``step``; return the chunk count."""
        manifest = self.manifest(step)
        chunks = 0
        for rank in range(manifest.world_size):
            shard = self.manifest(manifest.step, rank)
            self._read_tensors(shard.tensors, shard.hash)
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
            values = self._read_tensors(entries, shard.hash).values()
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
