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


COLLECT = r"""
import json, sys
from forgeline.checkpoint import RetentionPolicy, collect_garbage
url = sys.argv[1]
print("ready", flush=True)
sys.stdin.readline()  # both collectors start together
result = collect_garbage(url, RetentionPolicy(keep_last=2, gc_grace_s=0))
print(json.dumps(result.model_dump()))
"""


def test_two_collectors_in_two_processes_never_crash_nor_delete_a_live_chunk(tmp_path):
    import json
    import subprocess
    import sys

    from forgeline.throttled import throttled_url

    local = f"file://{tmp_path}/c"
    _fill(local, list(range(1, 9)))
    url = throttled_url(local, latency_s=0.002, bandwidth_bytes_per_s=1e9, bucket="gc-two")
    procs = [subprocess.Popen([sys.executable, "-c", COLLECT, url], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    for proc in procs:
        assert proc.stdout.readline().strip() == "ready"
    for proc in procs:
        proc.stdin.write("go\n")
        proc.stdin.flush()
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=180)
        assert proc.returncode == 0, err
        results.append(json.loads(out))
    ran = [r for r in results if r["skipped"] is None]
    assert ran, results
    assert sorted(s for r in ran for s in r["deleted_steps"]) == [1, 2, 3, 4, 5, 6]
    assert sum(r["deleted_chunks"] for r in ran) > 0
    store = CheckpointStore(local)
    assert store.steps() == [7, 8]
    for step in store.steps():
        store.verify(step)
    assert not (tmp_path / "c" / "gc.lease").exists()  # released


def test_sweep_skips_chunks_that_vanished_under_it(tmp_path):
    from forgeline.checkpoint.retention import sweep

    store = CheckpointStore(f"file://{tmp_path}/c")
    here = tmp_path / "here"
    here.write_bytes(b"12345")
    assert sweep(store.fs, {str(tmp_path / "gone"): 10, str(here): 5}) == (1, 5)
    assert not here.exists()


def test_a_live_lease_makes_a_second_collector_skip_and_an_expired_one_is_broken(tmp_path):
    import json

    url = f"file://{tmp_path}/c"
    _fill(url, [1, 2, 3])
    lease = tmp_path / "c" / "gc.lease"
    lease.write_text(json.dumps({"owner": "other", "expires_unix_s": time.time() + 60}))
    skipped = collect_garbage(url, RetentionPolicy(keep_last=1, gc_grace_s=0))
    assert skipped.skipped and "another collector holds" in skipped.skipped
    assert skipped.deleted_steps == [] and CheckpointStore(url).steps() == [1, 2, 3]
    lease.write_text(json.dumps({"owner": "dead", "expires_unix_s": time.time() - 1}))
    result = collect_garbage(url, RetentionPolicy(keep_last=1, gc_grace_s=0))
    assert result.skipped is None and result.deleted_steps == [1, 2]
    assert not lease.exists()
    CheckpointStore(url).verify(3)
