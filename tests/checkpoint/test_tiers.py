"""Tiered saves: memory first, then local disk, then the remote root; per-tier retention."""

from __future__ import annotations

import torch

from forgeline.checkpoint import CheckpointConfig, CheckpointReader, TierConfig, TieredStore, codecs
from forgeline.checkpoint.reader import step_folders
from forgeline.storage import filesystem
from forgeline.throttled import throttled_url

CONFIG = CheckpointConfig(chunk_bytes=8192)


def _state(step: int) -> dict:
    g = torch.Generator().manual_seed(step)
    return {"w": torch.randn(32, 256, generator=g), "b": torch.full((64,), float(step)),
            "step": step}


def _steps(url: str) -> list[int]:
    return sorted(step_folders(*filesystem(url)))


def test_saves_reach_every_tier_each_with_its_own_retention(tmp_path):
    remote = throttled_url(f"file://{tmp_path}/remote", latency_s=0.001,
                           bandwidth_bytes_per_s=1e9, bucket="tiers-test")
    tiers = TierConfig(memory_bytes=40_000, memory_keep_last=3, local_url=str(tmp_path / "local"),
                       local_keep_last=2, memory_grace_s=0)
    with TieredStore(remote, tiers, CONFIG) as store:
        for step in (1, 2, 3, 4):
            info = store.save(_state(step), step)
            assert info.persisted.result().step == step  # committed to memory
            assert store.durable(step).result().step == step  # then on the remote root
        names = dict(store.tier_urls)
        assert list(names) == ["memory", "local", "remote"]
        # 3 steps of ~33 KB stored each exceed the 40 KB bound: only the newest stays
        assert _steps(names["memory"]) == [4]
        assert _steps(names["local"]) == [3, 4]
        restored = store.restore_fastest()
        assert restored.tier == "memory" and restored.step == 4
        assert torch.equal(restored.restored.state["w"], _state(4)["w"])
        memory_fs, memory_root = filesystem(names["memory"])
    assert CheckpointReader(remote).steps() == [1, 2, 3, 4]
    assert not memory_fs.exists(memory_root)  # close frees the memory tier
    assert CheckpointReader(f"file://{tmp_path}/remote").restore(2).state["step"] == 2


def test_local_tier_is_the_first_when_there_is_no_memory_tier(tmp_path):
    tiers = TierConfig(local_url=str(tmp_path / "local"), local_keep_last=1, memory_grace_s=0)
    with TieredStore(f"file://{tmp_path}/remote", tiers, CONFIG, rank=1, world_size=2) as store:
        for step in (1, 2):
            store.save(_state(step), step)
        store.wait()
        assert [name for name, _ in store.tier_urls] == ["local", "remote"]
        assert _steps(dict(store.tier_urls)["local"]) == [2]
        assert dict(store.tier_urls)["local"].endswith("/rank-00001")


def _codecs_under(url: str) -> set[str]:
    fs, root = filesystem(url)
    return {codecs.blob_codec(fs.cat_file(p)) for p in fs.find(f"{root}/chunks")}


def test_fast_tiers_hold_raw_chunks_and_the_remote_copy_is_compressed(tmp_path):
    tiers = TierConfig(local_url=str(tmp_path / "local"))
    with TieredStore(f"file://{tmp_path}/remote", tiers, CONFIG) as store:
        store.save(_state(1), 1)
        store.wait()
        local, remote = dict(store.tier_urls)["local"], f"file://{tmp_path}/remote"
        assert store.remote_codecs == {1: "shuffle-zstd"}
    assert _codecs_under(local) == {"raw"}
    assert _codecs_under(remote) == {"shuffle-zstd"}
    for url in (local, remote):
        assert torch.equal(CheckpointReader(url).restore(1).state["w"], _state(1)["w"])


def test_remote_copies_stay_raw_when_encoding_exceeds_the_cpu_budget(tmp_path):
    config = CheckpointConfig(chunk_bytes=8192, cpu_share=1e-9)  # no CPU to spare
    tiers = TierConfig(local_url=str(tmp_path / "local"))
    with TieredStore(f"file://{tmp_path}/remote", tiers, config) as store:
        for step in (1, 2):
            store.save(_state(step), step)
            store.wait()  # the first copy measures what encoding costs
    assert store.remote_codecs == {1: "shuffle-zstd", 2: "raw"}
    assert CheckpointReader(f"file://{tmp_path}/remote").restore(2).state["step"] == 2


def test_with_delta_every_tier_keeps_the_configured_codec(tmp_path):
    config = CheckpointConfig(chunk_bytes=8192, delta=True)
    tiers = TierConfig(local_url=str(tmp_path / "local"))
    with TieredStore(f"file://{tmp_path}/remote", tiers, config) as store:
        store.save(_state(1), 1)
        store.wait()
        local = dict(store.tier_urls)["local"]
    assert _codecs_under(local) == {"shuffle-zstd"} and store.remote_codecs == {}
