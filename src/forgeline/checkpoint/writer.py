"""The checkpoint writer: save (sync or async), persist, encode and commit one rank's state.

One ``CheckpointStore`` per writing rank. ``save`` takes a host snapshot of the state into
bounded staging buffers — inside the call, or (once ``protect`` guards the optimizer) on a
background thread overlapped with the next forward/backward, the next optimizer step waiting
for it (CheckFreq's snapshot/persist split). Worker threads then hash, deduplicate, encode
and write the chunks in parallel; a committer thread writes the rank's manifest atomically,
in save order. A background failure is re-raised by the next ``save``/``wait``/``close`` and
no later checkpoint of this store is committed after it. Reading is inherited from
:class:`~forgeline.checkpoint.reader.CheckpointReader`.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
import uuid
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from forgeline.checkpoint.chunking import (
    DEFAULT_HASH,
    chunk_spans,
    content_hash,
    dtype_name,
    itemsize,
    tensor_bytes,
)
from forgeline.checkpoint.config import CheckpointConfig
from forgeline.checkpoint.encoding import (
    EncodedChunk,
    chunk_kind,
    encode_lossless,
    encode_lossy,
    lossless_key,
)
from forgeline.checkpoint.errors import CheckpointWriteError
from forgeline.checkpoint.format import ChunkRef, Manifest, TensorEntry, chunk_path
from forgeline.checkpoint.guard import guard_optimizer_steps
from forgeline.checkpoint.manifests import encode_manifest
from forgeline.checkpoint.publish import publish
from forgeline.checkpoint.reader import CheckpointReader, manifest_path
from forgeline.checkpoint.snapshot import ChunkJob, Snapshot
from forgeline.checkpoint.staging import StagingPool
from forgeline.checkpoint.state import flatten_state
from forgeline.errors import ConfigError


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
class _PendingSave:
    """One save on its way to commit: the snapshot, the tensors' chunk jobs, the manifest's
    fields that are known at ``save`` time."""

    snapshot: Snapshot
    step: int
    parent: int | None
    keyframe: bool
    skeleton: Any
    entries: list[tuple[TensorEntry, list[ChunkJob]]]
    metadata: dict[str, Any]
    raw_bytes: int
    started: float
    info: SaveInfo
    codec: str = ""
    dedup: _Dedup | None = None


@dataclass
class _Dedup:
    """What a save's chunk may reuse: the previous save's refs and this save's so far; and
    the lossless codec this save uses (``raw`` on the CPU budget's fast path)."""

    keyframe: bool
    parent_index: dict[str, ChunkRef]
    new_index: dict[str, ChunkRef]
    codec: str = "raw"
    fast: bool = False


def _lower_priority(nice: int) -> None:
    """Raise the calling thread's niceness by ``nice`` (Linux threads have their own)."""
    if nice and hasattr(os, "setpriority"):
        with contextlib.suppress(OSError):
            tid = threading.get_native_id()
            os.setpriority(os.PRIO_PROCESS, tid,
                           min(19, os.getpriority(os.PRIO_PROCESS, tid) + nice))


class CpuMeter:
    """Measured CPU seconds per raw byte of persisting (hash + encode + write), per codec:
    what the CPU budget (``CheckpointConfig.cpu_share``) predicts a save's cost from."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.cpu_s: dict[str, float] = {}
        self.bytes: dict[str, int] = {}
        self.total_s = 0.0  # every chunk persisted so far

    def add(self, codec: str, cpu_s: float, nbytes: int) -> None:
        with self._lock:
            self.total_s += cpu_s
            self.cpu_s[codec] = self.cpu_s.get(codec, 0.0) + cpu_s
            self.bytes[codec] = self.bytes.get(codec, 0) + nbytes

    def cost_s(self, codec: str, nbytes: int) -> float | None:
        """Predicted CPU seconds to persist ``nbytes`` with ``codec``; None before measured."""
        with self._lock:
            measured = self.bytes.get(codec, 0)
            return self.cpu_s[codec] / measured * nbytes if measured else None


class CheckpointStore(CheckpointReader):
    """Chunked, deduplicated, compressed, async checkpoints of one rank under ``url``."""

    def __init__(self, url: str, config: CheckpointConfig | None = None, rank: int = 0,
                 world_size: int = 1) -> None:
        if not 0 <= rank < world_size:
            raise ConfigError("rank", rank, f"must be in [0, world_size={world_size})")
        self.config = config or CheckpointConfig()
        super().__init__(url, rank, self.config.verify_on_restore, self.config.write_threads)
        self.world_size = world_size
        self.writer_id = uuid.uuid4().hex[:16]
        self._staging = StagingPool(self.config.max_staging_bytes, self.config.chunk_bytes)
        nice = (self.config.background_nice,)
        self._workers = ThreadPoolExecutor(self.config.write_threads, "forgeline-ckpt-write",
                                           initializer=_lower_priority, initargs=nice)
        self._committer = ThreadPoolExecutor(1, "forgeline-ckpt-commit",
                                             initializer=_lower_priority, initargs=nice)
        self._snapshotter = ThreadPoolExecutor(1, "forgeline-ckpt-snapshot",
                                               initializer=_lower_priority, initargs=nice)
        self.cpu = CpuMeter()
        self._live: list[_Dedup] = []  # dedup indexes of saves not yet committed
        self._last_save_cpu: tuple[float, float] | None = None  # (process, persisting) CPU-s
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
        self._refuse_taken(step)
        self.wait_snapshot()  # counted in the previous save's waited_s
        started = time.perf_counter()
        cfg = self.config
        keyframe = self._saves % cfg.keyframe_every == 0
        skeleton, tensors = flatten_state(state)
        json.dumps(metadata or {})  # fail here, not in the background
        dedup = _Dedup(keyframe, self._index, {}, cfg.codec)
        with self._lock:
            self._live.append(dedup)
        entries: list[tuple[TensorEntry, list[ChunkJob]]] = []
        inline: list[ChunkJob] = []
        deferred: list[ChunkJob] = []
        prev: dict[tuple[str, int], Future] = {}
        overlapped = self.overlapped
        raw_total = 0
        for name, value in tensors.items():
            raw = tensor_bytes(value)
            kind = chunk_kind(cfg, name, value)
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
        if self._over_budget(raw_total):
            dedup.codec, dedup.fast = "raw", True
            for entry, _ in entries:
                if entry.codec == cfg.codec:
                    entry.codec = "raw"
        self._last_save_cpu = (time.process_time(), self.cpu.total_s)

        def submit(job: ChunkJob) -> None:
            self._workers.submit(self._persist, job, dedup)

        snapshot = Snapshot(inline + deferred, self._staging, submit)
        before = (self._prev, self._index, self._last_step, self._saves)
        self._prev, self._index = prev, dedup.new_index
        parent = self._last_step
        self._last_step = step
        self._saves += 1
        info = SaveInfo(step, 0.0, raw_total, Future())
        self._snapshot, self._snapshot_info = snapshot, info
        try:
            snapshot.run(until=len(inline))  # the whole copy unless overlapped
        except BaseException:  # nothing was submitted for commit: as if save was not called
            self._prev, self._index, self._last_step, self._saves = before
            with self._lock:
                self._live.remove(dedup)
            raise
        if deferred:
            self._snapshotter.submit(snapshot.run)
        info.blocked_s = time.perf_counter() - started
        pending = _PendingSave(snapshot, step, parent, keyframe, skeleton, entries,
                               dict(metadata or {}), raw_total, started, info, dedup.codec,
                               dedup)
        info.persisted = self._committer.submit(self._commit, pending)
        self._pending = [f for f in self._pending if not f.done()] + [info.persisted]
        if not cfg.async_save:
            self.wait()
            info.blocked_s = time.perf_counter() - started
        return info

    def _over_budget(self, raw_bytes: int) -> bool:
        """Whether this save takes the raw fast path: the previous save is still being
        persisted, or persisting this one with ``codec`` would cost more CPU than
        ``cpu_share`` of the CPU time the rest of the process (training) used since the
        previous save — CPU seconds, not wall time, so other load on the machine does not
        move the budget (costs measured, see CpuMeter)."""
        cfg = self.config
        if cfg.cpu_share is None or cfg.codec == "raw" or self._last_save_cpu is None:
            return False
        if any(not f.done() for f in self._pending):
            return True
        cost = self.cpu.cost_s(cfg.codec, raw_bytes)
        process_s, persisting_s = self._last_save_cpu
        training_s = (time.process_time() - process_s) - (self.cpu.total_s - persisting_s)
        return cost is not None and cost > cfg.cpu_share * training_s

    def live_chunk_keys(self) -> set[str]:
        """Chunk keys that saves in flight may reference without writing them again: the
        previous save's and every uncommitted save's (what a tier's eviction must keep)."""
        with self._lock:
            live = set(self._index)
            for dedup in self._live:
                live |= set(dedup.parent_index) | set(dedup.new_index)
            return live

    def _record_error(self, exc: BaseException) -> None:
        with self._lock:
            if self._error is None:
                self._error = exc

    def _persist(self, job: ChunkJob, dedup: _Dedup) -> None:
        try:
            job.future.set_result(self._encode(job, dedup))
        except BaseException as exc:
            job.future.set_exception(exc)
            self._record_error(exc)
        finally:
            job.parent = None

    def _known(self, dedup: _Dedup, key: str) -> ChunkRef | None:
        with self._lock:
            return dedup.parent_index.get(key) or dedup.new_index.get(key)

    def _encode(self, job: ChunkJob, dedup: _Dedup) -> EncodedChunk:
        size, cpu_started = job.buf.size, time.thread_time()
        try:
            return self._encode_chunk(job, dedup)
        finally:
            self.cpu.add(dedup.codec, time.thread_time() - cpu_started, size)

    def _encode_chunk(self, job: ChunkJob, dedup: _Dedup) -> EncodedChunk:
        buf, cfg = job.buf, self.config
        job.buf = None
        keep_buf = job.kind == "lossless" and cfg.delta  # the next save's delta base
        try:
            digest = content_hash(buf)
            parent: EncodedChunk | None = (job.parent.result() if job.parent is not None
                                           else None)
            if (parent is not None and parent.source_digest == digest
                    and not (dedup.keyframe and parent.ref.chain)):  # unchanged: reference it
                keep_buf = False
                return EncodedChunk(parent.ref.model_copy(update={"stored_bytes": 0}),
                                    parent.recon, digest)
            base = None
            if (parent is not None and not dedup.keyframe and parent.recon is not None
                    and parent.recon.size == buf.size
                    and not (dedup.fast and job.kind == "lossless")):  # no delta on raw
                base = parent
            if job.kind == "lossless":
                key = lossless_key(digest, base)
                known = self._known(dedup, key)
                if known is None:
                    blob, used = encode_lossless(cfg, buf, job.item, base, dedup.codec)
                    if used is None and base is not None:  # fell back to a keyframe chunk
                        base, key = None, digest
                        known = self._known(dedup, key)
                    chain = [*base.ref.chain, base.ref.key] if base is not None else []
                    ref = ChunkRef(key=key, digest=digest, raw_bytes=buf.size,
                                   stored_bytes=len(blob), chain=chain)
                recon = buf if keep_buf else None
            else:
                ref, blob, recon = encode_lossy(cfg, job.kind, buf, digest, base)
                known = self._known(dedup, ref.key)
            if known is not None or not publish(self.fs, chunk_path(self.root, ref.key), blob):
                ref = (known or ref).model_copy(update={"stored_bytes": 0})  # already stored
            with self._lock:
                dedup.new_index[ref.key] = ref
            return EncodedChunk(ref, recon, digest)
        finally:  # a delta base stays in memory, outside the staging budget
            self._staging.give(buf, reuse=not keep_buf)

    def _commit(self, save: _PendingSave) -> Manifest:
        try:
            save.snapshot.done.wait()
            if save.snapshot.error is not None:
                raise save.snapshot.error
            tensors = []
            for entry, jobs in save.entries:
                entry.chunks = [job.future.result().ref for job in jobs]
                tensors.append(entry)
            if self._error is not None:
                raise CheckpointWriteError(
                    f"step {save.step} not committed: an earlier save failed")
            refs = [r for e in tensors for r in e.chunks]
            stats = {
                "raw_bytes": float(save.raw_bytes),
                "written_bytes": float(sum(r.stored_bytes for r in refs)),
                "chunks": float(len(refs)),
                "chunks_written": float(sum(r.stored_bytes > 0 for r in refs)),
                "blocked_s": save.info.blocked_s,
                "persist_s": time.perf_counter() - save.started,
                "fast_path": float(save.codec != self.config.codec),
            }
            manifest = Manifest(
                step=save.step, rank=self.rank, world_size=self.world_size,
                created_unix_s=time.time(), chunk_bytes=self.config.chunk_bytes,
                hash=DEFAULT_HASH, parent_step=save.parent, keyframe=save.keyframe,
                skeleton=save.skeleton, tensors=tensors, metadata=save.metadata, stats=stats,
                writer=self.writer_id,
            )
            path = manifest_path(self.root, save.step, self.rank, self.world_size)
            try:
                publish(self.fs, path, encode_manifest(manifest), exclusive=True)
            except FileExistsError:
                raise self._taken_error(save.step, path) from None
            self.last_stats = stats
            return manifest
        except BaseException as exc:
            self._record_error(exc)
            raise
        finally:
            with self._lock:  # committed (its keys are in self._index) or failed
                self._live = [d for d in self._live if d is not save.dedup]

    def _taken_error(self, step: int, path: str) -> CheckpointWriteError:
        return CheckpointWriteError(
            f"step {step} rank {self.rank}: {path} already holds a manifest written by another "
            f"writer; two writers on one step are refused (this one is {self.writer_id}) — "
            "resume from the newest step, or save to another URL")

    def _refuse_taken(self, step: int) -> None:
        """Fail before any work when another writer already committed ``step`` for this rank."""
        path = manifest_path(self.root, step, self.rank, self.world_size)
        if self.fs.exists(path):
            raise self._taken_error(step, path)

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
