"""Retention (keep-last-k / keep-every-n) and GC: never delete what a committed manifest uses."""

from __future__ import annotations

import os
import time

import torch

from forgeline.checkpoint import (
    CheckpointConfig,
    CheckpointStore,
    RetentionPolicy,
    apply_retention,
    collect_garbage,
)
from forgeline.checkpoint.retention import steps_to_delete


def _fill(url: str, steps: list[int], delta: bool = False) -> None:
    shared = torch.arange(4096, dtype=torch.float32)
    with CheckpointStore(url, CheckpointConfig(chunk_bytes=2048, delta=delta,
                                               keyframe_every=3)) as store:
        for step in steps:
            store.save({"shared": shared, "w": torch.randn(2048) + step}, step)


def test_policy_keeps_last_k_and_every_n():
    policy = RetentionPolicy(keep_last=2, keep_every_steps=10)
    assert steps_to_delete([5, 10, 15, 20, 25, 30], policy) == [5, 15]
    assert steps_to_delete([1], RetentionPolicy(keep_last=1)) == []


def test_gc_deletes_only_unreferenced_chunks(tmp_path):
    url = f"file://{tmp_path}/c"
    _fill(url, [1, 2, 3, 4, 5], delta=True)
    policy = RetentionPolicy(keep_last=2, keep_every_steps=2, gc_grace_s=0)
    result = collect_garbage(url, policy)
    assert result.deleted_steps == [1, 3]
    assert result.deleted_chunks > 0
    store = CheckpointStore(url)
    assert store.steps() == [2, 4, 5]
    for step in store.steps():
        store.verify(step)  # every kept checkpoint still restores, including delta bases
    assert collect_garbage(url, policy).deleted_chunks == 0  # nothing left to collect


def test_gc_grace_protects_in_flight_chunks(tmp_path):
    url = f"file://{tmp_path}/c"
    _fill(url, [1])
    orphan = tmp_path / "c" / "chunks" / "ab" / "ab-orphan"
    orphan.parent.mkdir(parents=True, exist_ok=True)
    orphan.write_bytes(b"from a save whose manifest is not written yet")
    assert collect_garbage(url, RetentionPolicy(gc_grace_s=60)).deleted_chunks == 0
    assert orphan.exists()
    old = time.time() - 120
    os.utime(orphan, (old, old))
    assert collect_garbage(url, RetentionPolicy(gc_grace_s=60)).deleted_chunks == 1
    assert not orphan.exists()
    CheckpointStore(url).verify(1)


def test_retention_on_memory_filesystem():
    url = "memory://retention-test"
    _fill(url, [1, 2, 3])
    assert apply_retention(url, RetentionPolicy(keep_last=1)) == [1, 2]
    collect_garbage(url, RetentionPolicy(keep_last=1, gc_grace_s=0))
    assert CheckpointStore(url).steps() == [3]
    CheckpointStore(url).verify(3)
