"""The Ray Train Checkpointer with tiers: a restarted worker on a surviving node resumes from
its local disk tier, and says so."""

from __future__ import annotations

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
