"""Crash safety: SIGKILL the writing process at random points, then check that the latest
committed checkpoint always restores, verifies and holds exactly what was saved — on a local
folder and through throttled:// (the object-store imitation: no folders made for the writer,
a latency per request).

A "zygote" subprocess imports everything once and forks one writer per trial, so the ≥ 50
trials cost milliseconds each instead of an interpreter start-up each. The kill delays are
multiples of the measured time to a writer's first commit, so that on a loaded machine the
kills still land during saving rather than before it.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from forgeline.checkpoint import CheckpointStore
from forgeline.throttled import throttled_url

TRIALS = 51

ZYGOTE = r"""
import os, signal, sys
signal.signal(signal.SIGCHLD, signal.SIG_IGN)
import numpy as np
from forgeline.checkpoint import CheckpointConfig, CheckpointStore, RetentionPolicy
from forgeline.checkpoint import collect_garbage

def state(step):
    rng = np.random.default_rng(step)
    return {"frozen": np.arange(20000, dtype=np.float32),
            "w": rng.standard_normal(40000).astype(np.float32),
            "m": rng.standard_normal(30000).astype(np.float32), "step": step}

def run(url, mode):
    config = CheckpointConfig(chunk_bytes=8192, async_save=mode != "sync-gc",
                              delta=mode == "delta", keyframe_every=3, write_threads=3)
    store = CheckpointStore(url, config)
    step = (store.latest_step() or 0) + 1
    while True:
        store.save(state(step), step)
        if mode == "sync-gc":
            collect_garbage(url, RetentionPolicy(keep_last=2, gc_grace_s=0))
        step += 1

print("ready", flush=True)
for line in sys.stdin:
    url, mode = line.split()
    pid = os.fork()
    if pid == 0:
        try:
            run(url, mode)
        finally:
            os._exit(0)
    print(pid, flush=True)
"""


def _expected(step: int) -> dict:
    rng = np.random.default_rng(step)
    return {"frozen": np.arange(20000, dtype=np.float32),
            "w": rng.standard_normal(40000).astype(np.float32),
            "m": rng.standard_normal(30000).astype(np.float32), "step": step}


def _wait_dead(pid: int) -> None:
    for _ in range(500):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.01)


def _fork_writer(zygote: subprocess.Popen, url: str, mode: str) -> int:
    zygote.stdin.write(f"{url} {mode}\n")
    zygote.stdin.flush()
    return int(zygote.stdout.readline())


def _url(tmp_path, url_kind: str, name: str) -> str:
    url = f"file://{tmp_path}/{name}"
    if url_kind == "throttled":
        url = throttled_url(url, latency_s=0.0002, bandwidth_bytes_per_s=1e9,
                            bucket=f"kill-{os.getpid()}")
    return url


def _first_commit_s(zygote: subprocess.Popen, url: str) -> float:
    """Seconds from forking a writer to its first committed checkpoint."""
    started = time.perf_counter()
    pid = _fork_writer(zygote, url, "async")
    store = CheckpointStore(url)
    while store.latest_step() is None and time.perf_counter() - started < 60:
        time.sleep(0.002)
    elapsed = time.perf_counter() - started
    os.kill(pid, signal.SIGKILL)
    _wait_dead(pid)
    return elapsed


@pytest.mark.parametrize("url_kind", ["file", "throttled"])
def test_sigkill_at_random_points_never_breaks_the_latest_checkpoint(tmp_path, url_kind):
    zygote = subprocess.Popen([sys.executable, "-c", ZYGOTE], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert zygote.stdout.readline().strip() == "ready"
        first_commit_s = _first_commit_s(zygote, _url(tmp_path, url_kind, "calibration"))
        rng = random.Random(1234)
        failures, progressed, latest_seen = [], 0, {}
        for trial in range(TRIALS):
            mode = ("async", "sync-gc", "delta")[trial % 3]
            url = _url(tmp_path, url_kind, mode)
            pid = _fork_writer(zygote, url, mode)
            time.sleep(rng.uniform(0.3, 4.0) * first_commit_s)
            os.kill(pid, signal.SIGKILL)
            _wait_dead(pid)
            store = CheckpointStore(url)
            try:
                latest = store.latest_step()
                if latest is None:
                    if latest_seen.get(mode):
                        failures.append((trial, mode, "committed checkpoints vanished"))
                    continue
                if latest > latest_seen.get(mode, 0):
                    progressed += 1
                latest_seen[mode] = latest
                store.verify(latest)
                restored = store.restore(latest).state
                expected = _expected(latest)
                for key in ("frozen", "w", "m"):
                    if not np.array_equal(restored[key], expected[key]):
                        failures.append((trial, mode, f"{key} differs at step {latest}"))
                if restored["step"] != latest:
                    failures.append((trial, mode, "step field differs"))
            except Exception as exc:  # noqa: BLE001 - every failure is counted and reported
                failures.append((trial, mode, repr(exc)))
            finally:
                store.close()
    finally:
        zygote.stdin.close()
        zygote.wait(timeout=30)
    print(f"\n{url_kind}: first commit after {first_commit_s:.3f} s; SIGKILL trials: {TRIALS}, "
          f"failures: {len(failures)}, trials that "
          f"committed new checkpoints before the kill: {progressed}, latest steps: {latest_seen}")
    assert not failures, failures
    assert progressed >= TRIALS // 3  # the kills really landed during saving, not before it
