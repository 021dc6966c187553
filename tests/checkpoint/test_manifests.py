"""Manifests that cannot lie: every kind of damage is reported as CheckpointCorruptError
naming step, rank and path; restoring "the latest" falls back to the newest intact step with
a warning; GC neither crashes nor deletes anything for a step it cannot read."""

from __future__ import annotations

import json
import logging

import pytest
import torch

from forgeline.checkpoint import (
    CheckpointConfig,
    CheckpointCorruptError,
    CheckpointStore,
    RetentionPolicy,
    collect_garbage,
)


def _state(step: int) -> dict:
    g = torch.Generator().manual_seed(step)
    return {"w": torch.randn(600, generator=g), "ids": torch.arange(50) * step, "step": step}


def _flip(data: bytes) -> bytes:
    out = bytearray(data)
    out[len(out) // 2] ^= 0x04
    return bytes(out)


def _edit(field: str):
    def edit(data: bytes) -> bytes:
        body = json.loads(data)
        entry = next(e for e in body["tensors"] if e["name"] == "w")
        if field == "dtype":
            entry["dtype"] = "int32"
        elif field == "shape":
            entry["shape"] = [20, 30]
        else:
            entry["chunks"].reverse()
        return json.dumps(body).encode()
    return edit


DAMAGE = {
    "flipped-byte": _flip,
    "truncated": lambda data: data[: len(data) // 3],
    "empty": lambda data: b"",
    "edited-dtype": _edit("dtype"),
    "edited-shape": _edit("shape"),
    "reordered-chunks": _edit("chunks"),
    "copied-from-step-2": None,
}


@pytest.fixture
def store_with_three_steps(tmp_path):
    url = f"file://{tmp_path}/c"
    with CheckpointStore(url, CheckpointConfig(chunk_bytes=512, codec="raw")) as store:
        for step in (1, 2, 3):
            store.save(_state(step), step)
    return url, tmp_path / "c" / "steps"


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_damaged_manifest_is_reported_skipped_on_restore_and_left_alone_by_gc(
        store_with_three_steps, damage, caplog):
    url, steps = store_with_three_steps
    shard = steps / f"{3:012d}" / "rank-00000-of-00001.json"
    source = steps / f"{2:012d}" / "rank-00000-of-00001.json"
    damaged = source.read_bytes() if DAMAGE[damage] is None else DAMAGE[damage](shard.read_bytes())
    shard.write_bytes(damaged)
    store = CheckpointStore(url)

    for call in (lambda: store.restore(3), lambda: store.verify(3)):
        with pytest.raises(CheckpointCorruptError, match=r"step 3 rank 0 \(.*000000000003/"
                           r"rank-00000-of-00001\.json\) is damaged") as err:
            call()
        assert (err.value.step, err.value.rank) == (3, 0)

    with caplog.at_level(logging.WARNING, logger="forgeline.checkpoint.reader"):
        latest = store.restore()
    assert latest.step == 2 and torch.equal(latest.state["w"], _state(2)["w"])
    assert "skipping a damaged checkpoint: checkpoint step 3" in caplog.text
    assert "using step 2" in caplog.text

    result = collect_garbage(url, RetentionPolicy(keep_last=1, gc_grace_s=0))
    assert result.damaged_steps == [3] and result.deleted_steps == [1]
    assert result.deleted_chunks == 0  # step 3's references are unknown: nothing swept
    assert shard.read_bytes() == damaged  # never deleted for
    assert CheckpointStore(url).steps() == [2, 3]
    CheckpointStore(url).verify(2)


def test_an_intact_manifest_records_its_checksum_and_writer(store_with_three_steps):
    url, steps = store_with_three_steps
    body = json.loads((steps / f"{1:012d}" / "rank-00000-of-00001.json").read_bytes())
    assert body["checksum"].startswith("blake3:") and body["format_version"] == 3
    assert len(body["writer"]) == 16
    assert CheckpointStore(url).restore(1).step == 1
