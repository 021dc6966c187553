"""Tiered checkpoints: commit to host memory, copy to local disk, then to the remote root.

Commit semantics per tier (:class:`~forgeline.checkpoint.config.TierConfig` says which exist;
the store writes to the fastest one, a copier thread carries each committed step down):

- **memory** (``memory://`` of this process, bounded by ``memory_bytes``): ``SaveInfo.persisted``
  resolves once the rank's manifest is there; only this process sees it; a crash loses it.
- **local** (``{local_url}/rank-{r:05d}``, private to the rank): copied next; survives the
  process, not the node; read on resume by a process on the same node.
- **remote** (the store URL): the durable tier. ``durable(step)`` resolves once the rank's
  manifest is there; the step counts as committed (resume, retention, export, Ray's pointer
  check) once every rank's manifest is on the remote root.

Each copy writes the chunks a tier lacks, then the manifest (atomically, :func:`publish`),
so every tier is consistent on its own. The fast tiers hold chunks raw (hashed and
deduplicated, not compressed: a resume there reads at memory or disk speed); the copy to the
remote root encodes them with the configured codec in the copier's low-priority thread — or
leaves them raw, the CPU budget's fast path, when a newer save already waits to be copied or
encoding would cost more than ``cpu_share`` of training's CPU time since the previous save.
Chunk blobs name their own codec, so every tier restores the same bytes. (With ``delta`` on,
every tier keeps the configured codec: a delta only pays once compressed.) Steps leave a
tier (its ``keep_last``, the memory bound) only after they reached every slower tier. A
failed copy is re-raised by the next ``save``/``wait``/``close``, like a failed save.
"""

from __future__ import annotations

import contextlib
import posixpath
import threading
import time
import uuid
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from forgeline import storage
from forgeline.checkpoint import codecs
from forgeline.checkpoint.config import CheckpointConfig, RetentionPolicy, TierConfig
from forgeline.checkpoint.errors import (
    CheckpointCorruptError,
    CheckpointNotFoundError,
    CheckpointWriteError,
)
from forgeline.checkpoint.format import CHUNKS_DIR, Manifest, chunk_path, step_dir
from forgeline.checkpoint.manifests import decode_manifest
from forgeline.checkpoint.publish import mtime_unix_s, publish
from forgeline.checkpoint.reader import CheckpointReader, Restored, manifest_path, step_folders
from forgeline.checkpoint.resume import TierRestore, restore_fastest, tier_urls
from forgeline.checkpoint.retention import _mark, abandon_steps_after, collect_garbage, sweep
from forgeline.checkpoint.writer import CheckpointStore, CpuMeter, SaveInfo, _lower_priority


class TieredStore:
    """A :class:`CheckpointStore` of one rank whose saves commit to memory, local disk and the
    remote root ``url`` in turn; ``restore`` reads from the fastest tier holding the step."""

    def __init__(self, url: str, tiers: TierConfig, config: CheckpointConfig | None = None,
                 rank: int = 0, world_size: int = 1) -> None:
        self.url, self.tiers = storage.normalize_root(url), tiers
        self.config = config or CheckpointConfig()
        self.rank, self.world_size = rank, world_size
        memory = (f"memory://forgeline-tier-{uuid.uuid4().hex[:12]}/rank-{rank:05d}"
                  if tiers.memory_bytes else None)
        self.tier_urls = tier_urls(self.url, tiers, rank, memory)
        self.remote_codec = self.config.codec
        fast = self.config
        if len(self.tier_urls) > 1 and not fast.delta:  # raw fast tiers, encoded remote
            fast = fast.model_copy(update={"codec": "raw"})
        self.store = CheckpointStore(self.tier_urls[0][1], fast, rank, world_size)
        self.encode_cpu = CpuMeter()  # the remote copies' encoding, per raw byte
        self._training_cpu_s: dict[int, float] = {}  # per step: training CPU since the last
        self._cpu_mark: tuple[float, float] | None = None
        self._waiting = 0  # saves whose copies have not started
        self.remote_codecs: dict[int, str] = {}  # the codec each step's remote copy used
        self._copier = ThreadPoolExecutor(1, "forgeline-ckpt-tiers", initializer=_lower_priority,
                                          initargs=(self.config.background_nice,))
        self._copy_pool = ThreadPoolExecutor(self.config.write_threads, "forgeline-ckpt-copy",
                                             initializer=_lower_priority,
                                             initargs=(self.config.background_nice,))
        self._present: dict[str, set[str]] = {name: set() for name, _ in self.tier_urls}
        self._durable: dict[int, Future] = {}
        self._fast: dict[int, Future] = {}  # per step: its commit to the fastest tier
        self._reached: dict[int, str] = {}  # per step: the slowest tier copied to so far
        self._lock = threading.Lock()
        self._error: BaseException | None = None
        self._closed = False
        self.copy_s: dict[str, float] = {}  # the last copy's seconds per tier
        self.remote = CheckpointReader(self.url, rank, True, self.config.write_threads)
        self.last_resume: TierRestore | None = None

    def protect(self, target: Any) -> None:
        self.store.protect(target)

    def save(self, state: Mapping[str, Any] | Any, step: int,
             metadata: Mapping[str, Any] | None = None,
             dim0_shards: Mapping[str, tuple[int, list[int]]] | None = None) -> SaveInfo:
        """Save ``step`` to the fastest tier (as ``CheckpointStore.save``); the copies to the
        slower tiers follow in the background, in save order."""
        self._raise_error()
        persisting = self.store.cpu.total_s + self.encode_cpu.total_s
        mark = (time.process_time(), persisting)
        if self._cpu_mark is not None:
            self._training_cpu_s[step] = (mark[0] - self._cpu_mark[0]) - (
                persisting - self._cpu_mark[1])
        self._cpu_mark = mark
        info = self.store.save(state, step, metadata, dim0_shards)
        durable: Future = Future()
        self._durable[step] = durable
        with self._lock:
            self._waiting += 1
        self._fast[step] = info.persisted
        info.persisted.add_done_callback(
            lambda persisted: self._copier.submit(self._replicate, step, persisted, durable))
        return info

    def durable(self, step: int) -> Future:
        """Resolves (to the manifest) once ``step`` is on the remote root."""
        return self._durable[step]

    def tier_of(self, step: int) -> str | None:
        """The slowest (most durable) tier ``step`` is committed on now; None while its save
        is in flight (or when it failed)."""
        if step in self._reached:
            return self._reached[step]
        fast = self._fast.get(step)
        if fast is None or not fast.done() or fast.cancelled() or fast.exception() is not None:
            return None
        return self.tier_urls[0][0]

    def _replicate(self, step: int, persisted: Future, durable: Future) -> None:
        with self._lock:
            self._waiting -= 1
        try:
            if self._error is not None:
                raise CheckpointWriteError(f"step {step} not copied: an earlier copy failed")
            manifest: Manifest = persisted.result()
            src_fs, src_root = storage.filesystem(self.tier_urls[0][1])
            blob = src_fs.cat_file(manifest_path(src_root, step, self.rank, self.world_size))
            keys = manifest.referenced_keys()
            for name, url in self.tier_urls[1:]:
                started = time.perf_counter()
                self._copy_step(name, url, (src_fs, src_root), keys, manifest, blob)
                self.copy_s[name] = time.perf_counter() - started
                self._reached[step] = name
            self._evict(step)
            durable.set_result(manifest)
        except BaseException as exc:
            with self._lock:
                self._error = self._error or exc
            durable.set_exception(exc)

    def _copy_step(self, name: str, url: str, src: tuple[Any, str], keys: set[str],
                   manifest: Manifest, blob: bytes) -> None:
        fs, root = storage.filesystem(url)
        src_fs, src_root = src
        present = self._present[name]
        missing = sorted(keys - present)
        codec = "raw"  # the blobs as the fastest tier holds them
        if name == "remote" and self.store.config.codec != self.remote_codec:
            codec = self.remote_codecs[manifest.step] = self._remote_codec(manifest,
                                                                           set(missing))

        def copy(key: str) -> None:
            path = chunk_path(root, key)
            if fs.exists(path):
                return
            started = time.thread_time()
            chunk = src_fs.cat_file(chunk_path(src_root, key))
            if codec != "raw":
                raw_len = len(chunk)
                chunk = codecs.transcode(chunk, codec, self.config.zstd_level)
                self.encode_cpu.add(codec, time.thread_time() - started, raw_len)
            publish(fs, path, chunk)

        list(self._copy_pool.map(copy, missing))
        present.update(missing)
        path = manifest_path(root, manifest.step, self.rank, self.world_size)
        try:
            publish(fs, path, blob, exclusive=True)
        except FileExistsError:
            if fs.cat_file(path) == blob:
                return
            if name == "remote":
                raise CheckpointWriteError(
                    f"step {manifest.step} rank {self.rank}: {path} already holds another "
                    "writer's manifest; two writers on one step are refused") from None
            fs.rm_file(path)  # a private tier's leftover of an earlier run: replaced
            publish(fs, path, blob, exclusive=True)

    def _remote_codec(self, manifest: Manifest, missing: set[str]) -> str:
        """The configured codec for this copy, or ``raw`` when a newer save already waits to
        be copied or encoding would cost more than ``cpu_share`` of the CPU time training
        used between this save and the previous one (costs measured, see CpuMeter)."""
        share = self.config.cpu_share
        if share is None:
            return self.remote_codec
        if self._waiting > 0:
            return "raw"
        raw_bytes = sum(r.raw_bytes for e in manifest.tensors for r in e.chunks
                        if r.key in missing)
        cost = self.encode_cpu.cost_s(self.remote_codec, raw_bytes)
        training = self._training_cpu_s.get(manifest.step)
        if cost is not None and training is not None and cost > share * training:
            return "raw"
        return self.remote_codec

    def _evict(self, step: int) -> None:
        """Apply each tier's retention to the steps that reached every tier (≤ ``step``)."""
        for name, url in self.tier_urls:
            if name == "remote":
                if self.tiers.remote_keep_last is not None:
                    collect_garbage(url, RetentionPolicy(keep_last=self.tiers.remote_keep_last))
                continue
            keep = (self.tiers.memory_keep_last if name == "memory"
                    else self.tiers.local_keep_last)
            first = url == self.tier_urls[0][1]  # the store writes there concurrently
            self._prune(name, url, step, keep, first)

    def _prune(self, name: str, url: str, step: int, keep: int, first: bool) -> None:
        fs, root = storage.filesystem(url)
        done = sorted(s for s in step_folders(fs, root) if s <= step)
        drop = done[:-keep]
        chunks_root = posixpath.join(root, CHUNKS_DIR)
        if name == "memory":  # the byte bound: oldest steps first, never the newest
            stored = sum(int(i.get("size") or 0) for i in fs.find(chunks_root, detail=True)
                         .values()) if fs.exists(chunks_root) else 0
            sizes = {s: self._step_bytes(fs, root, s) for s in done}
            stored -= sum(sizes[s] for s in drop)
            for s in done[len(drop):-1]:
                if stored <= self.tiers.memory_bytes:
                    break
                drop.append(s)
                stored -= sizes[s]
        if not drop:
            return
        for s in drop:
            with contextlib.suppress(FileNotFoundError):
                fs.rm(step_dir(root, s), recursive=True)
        referenced, unreadable = _mark(fs, root)
        if unreadable:
            return
        live = self.store.live_chunk_keys() if first else set()
        grace = self.tiers.memory_grace_s if first else 0.0
        now = time.time()
        found = fs.find(chunks_root, detail=True) if fs.exists(chunks_root) else {}
        doomed = {p: int(i.get("size") or 0) for p, i in found.items()
                  if posixpath.basename(p) not in referenced | live
                  and now - mtime_unix_s(i) >= grace}
        sweep(fs, doomed)
        self._present[name] -= {posixpath.basename(p) for p in doomed}

    def _step_bytes(self, fs: Any, root: str, step: int) -> int:
        """Stored bytes of the chunks this rank's manifest at ``step`` wrote (an estimate of
        what evicting it frees)."""
        path = manifest_path(root, step, self.rank, self.world_size)
        try:
            manifest = decode_manifest(fs.cat_file(path), path)
        except (FileNotFoundError, CheckpointCorruptError):
            return 0
        return sum(r.stored_bytes for e in manifest.tensors for r in e.chunks)

    def restore_fastest(self, step: int | None = None, names: Any = None
                        ) -> TierRestore | None:
        """This rank's state at ``step`` (default: the remote root's newest intact step) from
        the fastest tier that holds it intact (see :func:`restore_fastest`); the private
        tiers' later steps (a dead run's) are moved aside so they can be saved again."""
        result = restore_fastest(self.tier_urls, self.rank, step, names,
                                 self.config.write_threads)
        for name, url in self.tier_urls[:-1]:
            abandon_steps_after(url, -1 if result is None else result.step)
            self._present[name] = set()
        self.last_resume = result
        return result

    def restore(self, step: int | None = None, rank: int | None = None,
                names: Any = None) -> Restored:
        """``CheckpointReader.restore``'s contract: this rank's state from the fastest tier
        (``last_resume`` says which), another rank's (resharding) from the remote root."""
        if rank is not None and rank != self.rank:
            return self.remote.restore(step, rank, names)
        result = self.restore_fastest(step, names)
        if result is None:
            raise CheckpointNotFoundError(f"no committed checkpoint under {self.url}")
        return result.restored

    def manifest(self, step: int | None = None, rank: int | None = None) -> Manifest:
        """The remote root's checked manifest (the durable tier decides what exists)."""
        return self.remote.manifest(step, rank)

    def steps(self) -> list[int]:
        return self.remote.steps()

    def _raise_error(self) -> None:
        self.store._raise_background_error()
        if self._error is not None:
            exc = self._error
            raise CheckpointWriteError(
                f"copying a checkpoint to a slower tier failed: {type(exc).__name__}: {exc}"
            ) from exc

    def wait(self) -> None:
        """Block until every save so far is on every tier; raise if any save or copy failed."""
        self.store.wait()
        for future in list(self._durable.values()):
            with contextlib.suppress(BaseException):  # recorded in self._error
                future.result()
        self._raise_error()

    def close(self) -> None:
        """Wait for every save and copy, then free threads and the memory tier."""
        if self._closed:
            return
        self._closed = True
        try:
            self.store.close()
            self.wait()
        finally:
            self._copier.shutdown(wait=True)
            self._copy_pool.shutdown(wait=True)
            if self.tier_urls[0][0] == "memory":
                fs, root = storage.filesystem(self.tier_urls[0][1])
                with contextlib.suppress(FileNotFoundError):
                    fs.rm(root, recursive=True)

    def __enter__(self) -> TieredStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
