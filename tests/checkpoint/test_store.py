"""CheckpointStore: round trips, dedup, delta, async back-pressure, errors, N→M restore."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from forgeline.checkpoint import (
    CheckpointConfig,
    CheckpointNotFoundError,
    CheckpointStore,
    CheckpointWriteError,
    flatten_state,
    unflatten_state,
)
from forgeline.errors import ConfigError, IntegrityError, StorageError


def _state(step: int) -> dict:
    g = torch.Generator().manual_seed(step)
    return {
        "model": {"frozen": torch.arange(3000, dtype=torch.float32),
                  "w": torch.randn(40, 50, generator=g),
                  "bf16": torch.randn(300, generator=g).to(torch.bfloat16),
                  "ids": torch.arange(7)},
        "optimizer": {"state": {0: {"exp_avg": torch.randn(2000, generator=g),
                                    "exp_avg_sq": torch.rand(2000, generator=g) ** 4,
                                    "step": torch.tensor(float(step))}},
                      "param_groups": [{"lr": 1e-3, "betas": (0.9, 0.999), "params": [0]}]},
        "np": np.full(5, step, dtype=np.int16),
        "step": step, "nan": float("nan"), "empty": torch.empty(0),
    }


def _equal(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, np.ndarray):
        return a.dtype == b.dtype and np.array_equal(a, b)
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and all(_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and a != a:
        return b != b
    return a == b


@pytest.mark.parametrize("url_kind", ["file", "memory"])
@pytest.mark.parametrize("codec,delta", [("shuffle-zstd", False), ("raw", False),
                                         ("zstd", True), ("shuffle-zstd", True)])
def test_round_trip_is_bit_exact(tmp_path, url_kind, codec, delta):
    url = f"file://{tmp_path}/c" if url_kind == "file" else f"memory://rt-{codec}-{delta}"
    config = CheckpointConfig(chunk_bytes=1000, codec=codec, delta=delta, keyframe_every=3)
    with CheckpointStore(url, config) as store:
        for step in (1, 2, 3, 4):
            store.save(_state(step), step, metadata={"note": step})
    store = CheckpointStore(url)
    assert store.steps() == [1, 2, 3, 4]
    if delta:  # parent deltas: chains grow to keyframe_every - 1, then reset
        chains = {s: max(len(r.chain) for e in store.manifest(s).tensors for r in e.chunks)
                  for s in (1, 2, 3, 4)}
        assert chains == {1: 0, 2: 1, 3: 2, 4: 0}
    for step in (1, 2, 3, 4):
        restored = store.restore(step)
        assert restored.step == step and restored.metadata == {"note": step}
        assert _equal(restored.state, _state(step))
    assert store.verify() > 0


def test_unchanged_chunks_are_referenced_not_rewritten(tmp_path):
    url = f"file://{tmp_path}/c"
    with CheckpointStore(url, CheckpointConfig(chunk_bytes=1000)) as store:
        store.save(_state(1), 1)
        store.wait()
        first = store.last_stats
        store.save(_state(2), 2)
    second = CheckpointStore(url).manifest(2).stats
    frozen = next(e for e in CheckpointStore(url).manifest(2).tensors if e.name == "model/frozen")
    assert all(ref.stored_bytes == 0 for ref in frozen.chunks)  # referenced from step 1
    assert second["written_bytes"] < first["written_bytes"]
    assert second["chunks_written"] < second["chunks"]


def test_ranks_share_chunks_and_restore_n_to_m(tmp_path):
    url = f"file://{tmp_path}/c"
    full = torch.randn(10, 6)
    replicated = torch.randn(100)
    for rank, rows in enumerate(torch.tensor_split(full, 2)):
        with CheckpointStore(url, CheckpointConfig(chunk_bytes=64), rank, 2) as store:
            offset = 0 if rank == 0 else 5
            store.save({"model": {"w": rows, "b": replicated}}, 7,
                       dim0_shards={"model/w": (offset, [10, 6])})
    store = CheckpointStore(url)
    assert store.steps() == [7]
    m0 = store.manifest(7, 0)
    m1 = store.manifest(7, 1)
    b0 = next(e for e in m0.tensors if e.name == "model/b")
    b1 = next(e for e in m1.tensors if e.name == "model/b")
    assert [c.key for c in b0.chunks] == [c.key for c in b1.chunks]  # dedup across ranks
    parts = [store.load_resharded(7, "model/", r, 3) for r in range(3)]
    assert torch.equal(torch.cat([p["model/w"] for p in parts]), full)
    assert all(torch.equal(p["model/b"], replicated) for p in parts)
    with pytest.raises(ConfigError, match="rank=2.*saved by 2 ranks.*cannot be resharded"):
        store.restore(7, rank=2)


def test_a_step_is_committed_only_when_every_rank_wrote(tmp_path):
    url = f"file://{tmp_path}/c"
    with CheckpointStore(url, rank=0, world_size=2) as store:
        store.save({"x": torch.ones(3)}, 1)
    assert CheckpointStore(url).steps() == []
    with CheckpointStore(url, rank=1, world_size=2) as store:
        store.save({"x": torch.ones(3)}, 1)
    assert CheckpointStore(url).steps() == [1]


def test_async_save_returns_before_persisting_and_bounds_memory(tmp_path):
    chunk = 1 << 16
    config = CheckpointConfig(chunk_bytes=chunk, max_staging_bytes=4 * chunk, write_threads=2,
                              codec="zstd", zstd_level=9)
    state = {"w": torch.randn(64 * chunk // 4)}  # 64 chunks, staging holds 4
    with CheckpointStore(f"file://{tmp_path}/c", config) as store:
        info = store.save(state, 1)
        assert store._staging.peak <= 4 * chunk
        store.wait()
        assert info.persisted.done()
        assert store.restore().step == 1


def test_background_failure_surfaces_on_next_call(tmp_path, monkeypatch):
    from forgeline.checkpoint import writer as store_module

    def broken_put(fs, path, data, exclusive=False):
        raise OSError("disk on fire")

    with CheckpointStore(f"file://{tmp_path}/c", CheckpointConfig(chunk_bytes=256)) as store:
        monkeypatch.setattr(store_module, "publish", broken_put)
        store.save({"w": torch.randn(1000)}, 1)  # returns: the failure is in the background
        with pytest.raises(CheckpointWriteError, match="disk on fire"):
            store.save({"w": torch.randn(1000)}, 2)
        with pytest.raises(CheckpointWriteError):
            store.wait()
        monkeypatch.undo()
        with pytest.raises(CheckpointWriteError):
            store.close()
    assert CheckpointStore(f"file://{tmp_path}/c").steps() == []


def test_corrupted_or_missing_chunk_names_tensor_and_chunk(tmp_path):
    url = f"file://{tmp_path}/c"
    with CheckpointStore(url, CheckpointConfig(chunk_bytes=512, codec="raw")) as store:
        store.save({"model": {"a": torch.randn(300), "b": torch.randn(300)}}, 5)
    store = CheckpointStore(url)
    entry = next(e for e in store.manifest().tensors if e.name == "model/b")
    blob = tmp_path / "c" / "chunks" / entry.chunks[1].key[:2] / entry.chunks[1].key
    data = bytearray(blob.read_bytes())
    data[-3] ^= 0xFF
    blob.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match=r"tensor 'model/b' chunk 1/3 .*blake3 mismatch"):
        store.restore()
    for cut in (data[:-7], data + b"x"):  # a raw chunk cut short, or longer than its header
        blob.write_bytes(bytes(cut))
        with pytest.raises(IntegrityError, match=r"tensor 'model/b' chunk 1/3 .*payload bytes"):
            store.restore()
    blob.unlink()
    with pytest.raises(IntegrityError, match=r"tensor 'model/b' chunk 1/3 .*missing"):
        store.restore()


def test_bad_inputs_fail_clearly(tmp_path):
    with pytest.raises(ValueError, match="codec='lz77'.*unknown codec"):
        CheckpointConfig(codec="lz77")
    for bad in (0, -5):
        with pytest.raises(ValueError, match=f"chunk_bytes={bad}.*positive"):
            CheckpointConfig(chunk_bytes=bad)
    with pytest.raises(StorageError, match="url='nosuchfs://bucket/x'.*no usable filesystem"):
        CheckpointStore("nosuchfs://bucket/x")
    store = CheckpointStore(f"file://{tmp_path}/c")
    with pytest.raises(CheckpointNotFoundError, match="no committed checkpoint"):
        store.restore()
    store.save({"x": torch.ones(2)}, 3)
    store.wait()
    with pytest.raises(CheckpointNotFoundError, match=r"step=4: .*committed: \[3\]"):
        store.restore(4)
    with pytest.raises(ConfigError, match="step=3: must be greater"):
        store.save({"x": torch.ones(2)}, 3)
    with pytest.raises(ConfigError, match="cannot be checkpointed"):
        store.save({"x": object()}, 9)
    store.close()


def test_flatten_keeps_structure():
    state = {"a": (1, 2.5, None), 3: [torch.ones(2), {"b": np.zeros(2)}], "__odd": "x",
             "dtype": torch.float16}
    skeleton, tensors = flatten_state(state)
    import json

    json.dumps(skeleton)
    assert set(tensors) == {"3/0", "3/1/b"}
    assert _equal(unflatten_state(skeleton, tensors), state)


def test_verify_checksums_every_chunk_even_when_restore_does_not(tmp_path):
    url = f"file://{tmp_path}/c"
    config = CheckpointConfig(chunk_bytes=512, codec="raw", verify_on_restore=False)
    with CheckpointStore(url, config) as store:
        store.save({"w": torch.randn(300)}, 1)
    store = CheckpointStore(url, config)
    ref = store.manifest(1).tensors[0].chunks[1]
    blob = tmp_path / "c" / "chunks" / ref.key[:2] / ref.key
    data = bytearray(blob.read_bytes())
    data[-5] ^= 0x01  # one flipped bit in the payload: decodes fine, wrong values
    blob.write_bytes(bytes(data))
    store.restore(1)  # verify_on_restore=False: not checked here, by choice
    with pytest.raises(IntegrityError, match=r"tensor 'w' chunk 1/3 .*blake3 mismatch"):
        store.verify(1)


@pytest.mark.parametrize("url_kind", ["file", "throttled"])
def test_two_writers_on_one_step_the_second_fails_clearly(tmp_path, url_kind):
    from forgeline.throttled import throttled_url

    url = f"file://{tmp_path}/c"
    if url_kind == "throttled":
        url = throttled_url(url, latency_s=0.0, bandwidth_bytes_per_s=1e9)
    states = [{"w": torch.full((200_000,), float(i))} for i in (1, 2)]
    config = CheckpointConfig(chunk_bytes=1 << 16, codec="zstd", zstd_level=9)
    a, b = CheckpointStore(url, config), CheckpointStore(url, config)
    outcomes = []
    for store, state in ((a, states[0]), (b, states[1])):  # b usually starts before a commits
        try:
            store.save(state, 1)
            outcomes.append(None)
        except CheckpointWriteError as exc:
            outcomes.append(exc)
    for i, store in enumerate((a, b)):
        try:
            store.close()
        except CheckpointWriteError as exc:
            outcomes[i] = exc
    failed = [i for i, exc in enumerate(outcomes) if exc is not None]
    assert len(failed) == 1, outcomes
    assert re.search(r"step 1 rank 0: .*already holds a manifest written by another writer",
                     str(outcomes[failed[0]]))
    winner = 1 - failed[0]
    assert torch.equal(CheckpointStore(url).restore(1).state["w"], states[winner]["w"])
    with pytest.raises(CheckpointWriteError, match="two writers on one step are refused"):
        CheckpointStore(url).save(states[0], 1)  # and a later one is refused before any work
