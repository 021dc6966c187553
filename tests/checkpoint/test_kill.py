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

import contextlib
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from forgeline.checkpoint import (
    CheckpointReader,
    CheckpointStore,
    TierConfig,
    restore_fastest,
    tier_urls,
)
from forgeline.checkpoint.manifests import decode_manifest
from forgeline.checkpoint.reader import manifest_path
from forgeline.storage import filesystem
from forgeline.throttled import throttled_url

TRIALS = 51

ZYGOTE = r"""
import os, signal, sys
signal.signal(signal.SIGCHLD, signal.SIG_IGN)
import numpy as np
from forgeline.checkpoint import CheckpointConfig, CheckpointStore, RetentionPolicy
from forgeline.checkpoint import TierConfig, TieredStore, collect_garbage

def state(step, writer=0):
    rng = np.random.default_rng(step)
    return {"frozen": np.arange(20000, dtype=np.float32),
            "w": rng.standard_normal(40000).astype(np.float32) + writer,
            "m": rng.standard_normal(30000).astype(np.float32), "step": step,
            "writer": writer}

def run_tiered(url, local, writer):
    tiers = TierConfig(memory_bytes=1 << 20, local_url=local, local_keep_last=2,
                       memory_grace_s=0)
    config = CheckpointConfig(chunk_bytes=32768, codec="raw", write_threads=3)
    store = TieredStore(url, tiers, config)
    resumed = store.restore_fastest()
    step = (resumed.step if resumed else 0) + 1
    while True:
        store.save(state(step, writer), step)
        step += 1

def run(url, mode, *tiered):
    if mode == "tiered":
        return run_tiered(url, tiered[0], int(tiered[1]))
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
    pid = os.fork()
    if pid == 0:
        try:
            run(*line.split())
        finally:
            os._exit(0)
    print(pid, flush=True)
"""


def _expected(step: int, writer: int = 0) -> dict:
    rng = np.random.default_rng(step)
    return {"frozen": np.arange(20000, dtype=np.float32),
            "w": rng.standard_normal(40000).astype(np.float32) + writer,
            "m": rng.standard_normal(30000).astype(np.float32), "step": step,
            "writer": writer}


def _differences(restored: dict, expected: dict) -> list[str]:
    """The state keys whose restored value is not the saved one."""
    return [key for key in expected if not np.array_equal(restored[key], expected[key])]


def _wait_dead(pid: int) -> None:
    for _ in range(500):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.01)


def _fork_writer(zygote: subprocess.Popen, url: str, mode: str, *args: object) -> int:
    zygote.stdin.write(" ".join(map(str, (url, mode, *args))) + "\n")
    zygote.stdin.flush()
    return int(zygote.stdout.readline())


def _url(tmp_path, url_kind: str, name: str) -> str:
    url = f"file://{tmp_path}/{name}"
    if url_kind == "throttled":
        url = throttled_url(url, latency_s=0.0002, bandwidth_bytes_per_s=1e9,
                            bucket=f"kill-{os.getpid()}")
    return url


def _zygote() -> subprocess.Popen:
    zygote = subprocess.Popen([sys.executable, "-c", ZYGOTE], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    assert zygote.stdout.readline().strip() == "ready"
    return zygote


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
    zygote = _zygote()
    try:
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
                for key in _differences(restored, _expected(latest)):
                    failures.append((trial, mode, f"{key} differs at step {latest}"))
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


NODES = 3
"""Local tier folders the tiered trials rotate through: trial k's writer runs "on node" k % 3
(a restarted worker on another node), so the other folders hold older steps, or another
writer's copy of the same step numbers."""


def _same_manifest(local: str, remote: str, step: int) -> bool:
    """Whether ``local`` holds rank 0's manifest of ``step`` byte for byte as ``remote``."""
    (fs, root), (remote_fs, remote_root) = filesystem(local), filesystem(remote)
    path = manifest_path(root, step, 0, 1)
    return fs.exists(path) and fs.cat_file(path) == remote_fs.cat_file(
        manifest_path(remote_root, step, 0, 1))


def _unreferenced_chunks(folder: Path) -> set[str]:
    """Chunk files of the store ``folder`` that none of its manifests references: what a copy
    killed after some of its chunks and before its manifest leaves behind."""
    referenced: set[str] = set()
    for path in folder.glob("steps/*/*.json"):
        with contextlib.suppress(FileNotFoundError):  # pruned meanwhile
            referenced |= decode_manifest(path.read_bytes(), str(path)).referenced_keys()
    return {p.name for p in folder.glob("chunks/*/*")} - referenced


def _wait_for_a_manifest(folder: Path, since: float, timeout_s: float = 30) -> None:
    """Until a manifest newer than ``since`` (``time.time()``) is in the store ``folder``."""
    deadline = time.perf_counter() + timeout_s
    while time.perf_counter() < deadline:
        with contextlib.suppress(FileNotFoundError):  # moved aside or pruned meanwhile
            if any(p.stat().st_mtime >= since for p in folder.glob("steps/*/*")):
                return
        time.sleep(0.002)


def test_sigkill_during_tiered_saves_and_copies_never_uses_a_stale_tier(tmp_path):
    """A writer with memory, local and remote tiers resumes (``restore_fastest``) and saves
    every step, writer-specific state; SIGKILL at a random moment, during saves and the
    background copies. After each kill the newest step on the remote root restores, verified,
    to what its writer saved, from every node's view: from that node's local folder exactly
    when the folder holds the remote's very manifest, else from the remote with the reason."""
    remote = f"file://{tmp_path}/remote"
    nodes = [tmp_path / f"node{n}" for n in range(NODES)]
    zygote = _zygote()
    try:
        rng, to_local_s = random.Random(4321), []
        failures, writers = [], {}  # step → the trial that wrote the remote's copy of it
        counts = dict.fromkeys(("progressed", "mid-copy", "local", "older", "other"), 0)
        orphans: dict[Path, set[str]] = {}  # per store folder, after the last kill
        latest = None
        for trial in range(TRIALS):
            local = nodes[trial % NODES]
            pid = _fork_writer(zygote, remote, "tiered", local, trial)
            if trial % 4 != 3:  # a random moment of the saves and background copies, in
                started = time.time()  # units of this writer's first local copy
                _wait_for_a_manifest(local / "rank-00000", started)
                to_local_s.append(time.time() - started)
                time.sleep(rng.uniform(0.0, 1.5) * to_local_s[-1])
            else:  # anywhere from the start: resuming, the first save
                time.sleep(rng.uniform(0.0, 1.5) * float(np.median(to_local_s)))
            os.kill(pid, signal.SIGKILL)
            _wait_dead(pid)
            try:
                left = {f: _unreferenced_chunks(f) for f in (tmp_path / "remote",
                                                             local / "rank-00000")}
                counts["mid-copy"] += any(left[f] - orphans.get(f, set()) for f in left)
                orphans.update(left)
                newest = CheckpointReader(remote).latest_good_step()
                if latest is not None and (newest is None or newest < latest):
                    failures.append((trial, f"committed step {latest} vanished: {newest}"))
                    continue
                if newest is None:
                    continue
                if newest != latest:  # this writer resumed and committed steps
                    counts["progressed"] += 1
                    writers[newest] = trial
                latest = newest
                for node in nodes:  # what a worker restarted on each node would restore
                    node_url = f"file://{node}/rank-00000"
                    result = restore_fastest(tier_urls(remote, TierConfig(local_url=str(node)),
                                                       0))
                    same = _same_manifest(node_url, remote, newest)
                    reason = result.skipped.get("local", "")
                    if (result.step, result.tier) != (newest, "local" if same else "remote"):
                        failures.append((trial, node.name, result.step, result.tier, same,
                                         reason))
                    if result.tier == "remote":
                        kind = ("older" if reason.startswith(f"does not hold step {newest} ")
                                else "other" if "not the remote one" in reason else None)
                        if kind is None:
                            failures.append((trial, node.name, "unexpected reason", reason))
                            continue
                        counts[kind] += 1
                    else:
                        counts["local"] += 1
                    for key in _differences(result.restored.state,
                                            _expected(newest, writers[newest])):
                        failures.append((trial, node.name, f"{key} differs at {newest}"))
            except Exception as exc:  # noqa: BLE001 - every failure is counted and reported
                failures.append((trial, repr(exc)))
    finally:
        zygote.stdin.close()
        zygote.wait(timeout=30)
    print(f"\ntiered: first local copy after {np.median(to_local_s):.3f} s (median); SIGKILL "
          f"trials: {TRIALS}, failures: {len(failures)}, latest step {latest}; {counts}")
    assert not failures, failures
    assert counts["progressed"] >= TRIALS // 3  # the kills landed during saving
    assert counts["mid-copy"] >= TRIALS // 5  # many in the middle of a tier's copy
    # every view happened: a node's own fresh copy, older folders, another writer's step
    # (rarer: it needs a writer killed with its copy to the remote behind, then a short run)
    assert min(counts["local"], counts["older"]) >= 5 and counts["other"] >= 1, counts
