"""Resume from the fastest surviving tier; an older or corrupted local copy is never used."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import torch

from forgeline.checkpoint import (
    CheckpointConfig,
    CheckpointStore,
    TierConfig,
    TieredStore,
    restore_fastest,
    tier_urls,
)

CONFIG = CheckpointConfig(chunk_bytes=8192)


def _state(step: int) -> dict:
    g = torch.Generator().manual_seed(step)
    return {"w": torch.randn(32, 256, generator=g), "step": step}


def _save_tiered(tmp_path: Path, steps: tuple[int, ...]) -> TierConfig:
    tiers = TierConfig(local_url=str(tmp_path / "local"), local_keep_last=5)
    with TieredStore(f"file://{tmp_path}/remote", tiers, CONFIG) as store:
        for step in steps:
            store.save(_state(step), step)
    return tiers


def test_resume_prefers_the_local_tier_when_it_holds_the_latest_step(tmp_path):
    tiers = _save_tiered(tmp_path, (1, 2, 3))
    result = restore_fastest(tier_urls(f"file://{tmp_path}/remote", tiers, 0))
    assert (result.tier, result.step, result.skipped) == ("local", 3, {})
    assert torch.equal(result.restored.state["w"], _state(3)["w"])
    assert result.report()["resume_s"] > 0


def test_an_older_local_tier_is_never_used(tmp_path, caplog):
    tiers = _save_tiered(tmp_path, (1, 2))
    with CheckpointStore(f"file://{tmp_path}/remote", CONFIG) as other:  # the run went on
        other.save(_state(5), 5)  # elsewhere: the remote root is newer than this node's disk
    with caplog.at_level(logging.WARNING):
        result = restore_fastest(tier_urls(f"file://{tmp_path}/remote", tiers, 0))
    assert (result.tier, result.step) == ("remote", 5)
    assert "does not hold step 5 (newest step there: 2)" in result.skipped["local"]
    assert torch.equal(result.restored.state["w"], _state(5)["w"])
    # the same step number saved by another writer on the local disk is not used either
    result = restore_fastest(tier_urls(f"file://{tmp_path}/remote", tiers, 0), step=2)
    assert result.tier == "local"
    with CheckpointStore(str(tmp_path / "local" / "rank-00000"), CONFIG) as stray:
        stray.save(_state(6), 6)
    with CheckpointStore(f"file://{tmp_path}/remote", CONFIG) as other:
        other.save(_state(6), 6)
    result = restore_fastest(tier_urls(f"file://{tmp_path}/remote", tiers, 0))
    assert result.tier == "remote" and "not the remote one" in result.skipped["local"]


def test_a_corrupted_local_copy_falls_back_to_the_remote_with_a_logged_reason(tmp_path, caplog):
    tiers = _save_tiered(tmp_path, (1, 2))
    chunks = (tmp_path / "local" / "rank-00000" / "chunks").rglob("*")
    for blob in (p for p in chunks if p.is_file()):
        data = bytearray(blob.read_bytes())
        data[-100] ^= 0xFF  # one flipped byte per chunk, in a raw-length-preserving spot
        blob.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING, logger="forgeline.checkpoint.resume"):
        result = restore_fastest(tier_urls(f"file://{tmp_path}/remote", tiers, 0))
    assert (result.tier, result.step) == ("remote", 2)
    assert "IntegrityError" in result.skipped["local"]
    assert any("not restoring from the local tier" in r.getMessage()
               and "falling back" in r.getMessage() for r in caplog.records)
    assert torch.equal(result.restored.state["w"], _state(2)["w"])


_WRITER = textwrap.dedent("""
    import sys, time, torch
    from forgeline.checkpoint import CheckpointConfig, TierConfig, TieredStore
    tmp = sys.argv[1]
    store = TieredStore(f"file://{tmp}/remote", TierConfig(memory_bytes=1 << 20,
                        local_url=f"{tmp}/local"), CheckpointConfig(chunk_bytes=8192))
    for step in (1, 2, 3):
        g = torch.Generator().manual_seed(step)
        store.save({"w": torch.randn(32, 256, generator=g), "step": step}, step)
        store.durable(step).result()
    print("durable", flush=True)
    time.sleep(600)
""")


def test_a_killed_worker_process_resumes_from_its_local_tier(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(tmp_path)],
                            stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout.readline().strip() == "durable"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    tiers = TierConfig(memory_bytes=1 << 20, local_url=str(tmp_path / "local"))
    with TieredStore(f"file://{tmp_path}/remote", tiers, CONFIG) as store:  # the restarted worker
        result = store.restore_fastest()
        assert (result.tier, result.step) == ("local", 3)  # its memory tier died with it
        assert torch.equal(result.restored.state["w"], _state(3)["w"])
        store.save(_state(4), 4)  # and the run goes on
        assert store.durable(4).result().step == 4
