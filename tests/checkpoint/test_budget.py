"""The CPU budget of background persisting: the raw fast path and the threads' niceness."""

from __future__ import annotations

import os
import threading
import time

import pytest
import torch

from forgeline.checkpoint import CheckpointConfig, CheckpointStore
from forgeline.throttled import throttled_url


def _state(step: int) -> dict:
    g = torch.Generator().manual_seed(step)
    return {"w": torch.randn(64, 256, generator=g), "frozen": torch.arange(4096.0),
            "step": step}


@pytest.mark.parametrize("kind", ["file", "memory", "throttled"])  # each publish path
def test_over_budget_saves_store_raw_chunks_still_deduplicated_and_verified(tmp_path, kind):
    url = {"file": f"file://{tmp_path}/c", "memory": f"memory://budget-{tmp_path.name}",
           "throttled": throttled_url(f"file://{tmp_path}/c", latency_s=0.0,
                                      bandwidth_bytes_per_s=1e10, bucket="budget")}[kind]
    config = CheckpointConfig(chunk_bytes=16384, cpu_share=1e-6, delta=True)
    with CheckpointStore(url, config) as store:
        store.save(_state(1), 1)
        store.wait()  # measures the codec's CPU cost per byte
        store.save(_state(2), 2)  # over 1e-6 of the training CPU time in between
    reader = CheckpointStore(url)
    first, second = reader.manifest(1), reader.manifest(2)
    assert first.stats["fast_path"] == 0.0 and second.stats["fast_path"] == 1.0
    codecs = {e.name: e.codec for e in second.tensors}
    assert codecs["w"] == "raw" and all(not r.chain for e in second.tensors for r in e.chunks)
    frozen = next(e for e in second.tensors if e.name == "frozen")
    assert all(r.stored_bytes == 0 for r in frozen.chunks)  # unchanged: deduplicated
    w = next(e for e in second.tensors if e.name == "w")
    assert all(r.stored_bytes > r.raw_bytes for r in w.chunks)  # raw blob = header + bytes
    restored = reader.restore(2).state
    assert torch.equal(restored["w"], _state(2)["w"]) and restored["step"] == 2
    assert reader.verify(2) == sum(len(e.chunks) for e in second.tensors)


def test_within_budget_saves_keep_the_codec(tmp_path):
    config = CheckpointConfig(chunk_bytes=16384, cpu_share=1.0)
    with CheckpointStore(f"file://{tmp_path}/c", config) as store:
        store.save(_state(1), 1)
        store.wait()
        x = torch.randn(256, 256)
        started = time.process_time()
        while time.process_time() - started < 0.3:  # "training": its CPU time sets the budget
            x = torch.tanh(x @ x)
        store.save(_state(2), 2)
    manifest = CheckpointStore(f"file://{tmp_path}/c").manifest(2)
    assert manifest.stats["fast_path"] == 0.0
    assert {e.codec for e in manifest.tensors} == {"shuffle-zstd"}


def test_background_threads_run_at_a_lower_priority(tmp_path):
    base = os.getpriority(os.PRIO_PROCESS, 0)
    with CheckpointStore(f"file://{tmp_path}/c", CheckpointConfig(background_nice=5)) as store:
        store.save(_state(1), 1)
        store.wait()
        workers = [t for t in threading.enumerate()
                   if t.name.startswith("forgeline-ckpt-write")]
        assert workers
        for thread in workers:
            assert os.getpriority(os.PRIO_PROCESS, thread.native_id) == min(19, base + 5)
    assert os.getpriority(os.PRIO_PROCESS, 0) == base  # the trainer's own thread is untouched
