"""Writes on every fsspec backend: local disk, memory:// (whole-object PUT semantics) and
throttled:// over a folder (no folders made for you, rename): saves work, chunks are never
rewritten once stored, and a kill during a restarted writer's save keeps the committed step."""

from __future__ import annotations

import signal
import subprocess
import sys
import uuid

import numpy as np
import pytest

from forgeline.checkpoint import CheckpointConfig, CheckpointStore
from forgeline.checkpoint.publish import is_object_store, publish
from forgeline.throttled import throttled_url


def _url(kind: str, tmp_path) -> str:
    if kind == "memory":
        return f"memory://publish-{uuid.uuid4().hex}"
    local = f"file://{tmp_path}/c"
    return local if kind == "file" else throttled_url(local, latency_s=0.0,
                                                      bandwidth_bytes_per_s=1e9)


def _state(step: int) -> dict:
    rng = np.random.default_rng(step)
    return {"frozen": np.arange(5000, dtype=np.float32),
            "w": rng.standard_normal(6000).astype(np.float32), "step": step}


@pytest.mark.parametrize("kind", ["file", "memory", "throttled"])
def test_save_restore_and_verify_on_every_backend(tmp_path, kind):
    url = _url(kind, tmp_path)
    config = CheckpointConfig(chunk_bytes=4096, delta=True, keyframe_every=2)
    with CheckpointStore(url, config) as store:
        for step in (1, 2, 3):
            store.save(_state(step), step)
    store = CheckpointStore(url)
    assert store.steps() == [1, 2, 3]
    for step in (1, 2, 3):
        restored = store.restore(step).state
        assert np.array_equal(restored["w"], _state(step)["w"]) and restored["step"] == step
        assert store.verify(step) > 0


@pytest.mark.parametrize("kind", ["file", "memory", "throttled"])
def test_a_restarted_writer_finds_stored_chunks_on_storage_and_writes_none(tmp_path, kind):
    url = _url(kind, tmp_path)
    config = CheckpointConfig(chunk_bytes=4096)
    with CheckpointStore(url, config) as store:
        store.save(_state(1), 1)
    with CheckpointStore(url, config) as restarted:  # empty in-memory index
        restarted.save(_state(1), 2)
    stats = CheckpointStore(url).manifest(2).stats
    assert stats["chunks"] > 0 and stats["chunks_written"] == 0 and stats["written_bytes"] == 0


def test_publish_never_replaces_an_existing_file(tmp_path):
    from fsspec.implementations.memory import MemoryFileSystem

    for fs, root in ((CheckpointStore(f"file://{tmp_path}/p").fs, str(tmp_path / "p")),
                     (MemoryFileSystem(), f"/publish-{uuid.uuid4().hex}")):
        path = f"{root}/ab/abcd"
        assert publish(fs, path, b"first") is True  # the folder is created where needed
        assert publish(fs, path, b"second") is False
        assert fs.cat_file(path) == b"first"
        with pytest.raises(FileExistsError):
            publish(fs, path, b"third", exclusive=True)
        assert fs.cat_file(path) == b"first"
        assert [p for p in fs.find(root) if p.endswith(".tmp")] == []
    assert is_object_store(MemoryFileSystem())


KILL_DURING_WRITE = r"""
import os, signal, sys
import numpy as np
from fsspec.implementations.local import LocalFileSystem
from forgeline.checkpoint import CheckpointConfig, CheckpointStore

def die_half_written(self, path, value, **kwargs):  # SIGKILL in the middle of a write
    with open(path, "wb") as f:
        f.write(bytes(value)[: len(value) // 2])
        f.flush()
    os.kill(os.getpid(), signal.SIGKILL)

LocalFileSystem.pipe_file = die_half_written
rng = np.random.default_rng(1)
state = {"frozen": np.arange(5000, dtype=np.float32),
         "w": rng.standard_normal(6000).astype(np.float32), "step": 1}
store = CheckpointStore(sys.argv[1], CheckpointConfig(chunk_bytes=4096, async_save=False))
store.save(state, 2)  # unchanged chunks, new step: the first write is killed half-way
"""


def test_sigkill_while_a_restarted_writer_saves_unchanged_chunks_keeps_the_committed_step(
        tmp_path):
    local = f"file://{tmp_path}/c"
    with CheckpointStore(local, CheckpointConfig(chunk_bytes=4096)) as store:
        store.save(_state(1), 1)
    url = throttled_url(local, latency_s=0.0, bandwidth_bytes_per_s=1e9)
    child = subprocess.run([sys.executable, "-c", KILL_DURING_WRITE, url], capture_output=True,
                           text=True, timeout=120)
    assert child.returncode == -signal.SIGKILL, child.stderr
    store = CheckpointStore(url)
    assert store.steps() == [1]
    store.verify(1)
    assert np.array_equal(store.restore(1).state["w"], _state(1)["w"])
