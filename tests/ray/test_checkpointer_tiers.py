"""The Ray Train Checkpointer with tiers: a restarted worker on a surviving node resumes from
its local disk tier, and says so; `{node_id}` gives each Ray node its own local folder."""

from __future__ import annotations

from collections import Counter

import torch

from forgeline.checkpoint import CheckpointReader, TierConfig
from forgeline.ray import Checkpointer


def test_a_restarted_worker_resumes_from_its_local_tier(tmp_path, monkeypatch):
    import ray.train

    monkeypatch.setattr(ray.train, "report", lambda *args, **kwargs: None)
    monkeypatch.setattr(ray.train, "get_checkpoint", lambda: None)
    url, tiers = f"file://{tmp_path}/ck", TierConfig(memory_bytes=1 << 20,
                                                      local_url=str(tmp_path / "node"))
    ckpt = Checkpointer(url, rank=0, world_size=1, tiers=tiers)
    assert ckpt.restore() is None
    for step in (5, 10):
        ckpt.save({"x": torch.full((3,), float(step))}, step)
    ckpt.close()
    assert CheckpointReader(url).steps() == [5, 10]  # durable on the remote root

    again = Checkpointer(url, rank=0, world_size=1, tiers=tiers)
    restored = again.restore()
    assert restored.step == 10 and torch.equal(restored.state["x"], torch.full((3,), 10.0))
    assert again.resume_report["tier"] == "local" and again.resume_report["resume_s"] > 0
    again.close()


def test_node_id_in_the_local_tier_url_gives_each_ray_node_its_own_folder(ray_cluster,
                                                                         tmp_path):
    node = ray_cluster.get_runtime_context().get_node_id()
    tiers = TierConfig(local_url=f"{tmp_path}/local/{{node_id}}")
    ckpt = Checkpointer(f"file://{tmp_path}/ck", rank=0, world_size=1, tiers=tiers)
    ckpt.store.save({"x": torch.ones(3)}, 1)
    ckpt.close()
    assert dict(ckpt.store.tier_urls)["local"] == f"file://{tmp_path}/local/{node}/rank-00000"
    assert [p.name for p in (tmp_path / "local").iterdir()] == [node]
    assert CheckpointReader(f"file://{tmp_path}/local/{node}/rank-00000").steps() == [1]


def test_a_proactive_save_counts_once_on_the_fastest_tier(tmp_path, monkeypatch):
    """A proactive save is reported once committed to memory, while its copy to the slow
    remote root is still running; each report says the tier and whether it was proactive."""
    import ray.train

    from forgeline.throttled import throttled_url

    reports = []
    monkeypatch.setattr(ray.train, "report", lambda metrics, checkpoint=None:
                        reports.append(metrics))
    remote = throttled_url(f"file://{tmp_path}/ck", latency_s=0.05, bandwidth_bytes_per_s=1e9,
                           bucket="proactive-test")
    tiers = TierConfig(memory_bytes=1 << 20, local_url=str(tmp_path / "node"))
    ckpt = Checkpointer(remote, rank=0, world_size=1, tiers=tiers)
    ckpt.save({"x": torch.ones(3)}, 5, proactive=True)
    assert ckpt.store.tier_of(5) in ("memory", "local") and not ckpt.store.durable(5).done()
    ckpt.wait()
    assert ckpt.store.tier_of(5) == "remote"
    ckpt.save({"x": torch.ones(3)}, 10)
    ckpt.close()
    first, second = reports
    assert first["checkpoint_tier"] in ("memory", "local") and first["checkpoint_proactive"]
    assert second["checkpoint_tier"] in ("pending", "memory", "local", "remote")
    assert second["checkpoint_proactive"] is False
    tiers = Counter([first["checkpoint_tier"], second["checkpoint_tier"]])
    assert ckpt.save_summary() == {
        "saves": 2, "proactive_saves": 1, "last": {"step": 10, "tier": second["checkpoint_tier"],
                                                   "proactive": False},
        "reported_tiers": dict(tiers)}
    assert CheckpointReader(f"file://{tmp_path}/ck").steps() == [5, 10]
