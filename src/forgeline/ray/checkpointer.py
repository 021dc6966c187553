"""Worker-side ``Checkpointer``: save through forgeline's store, report a small pointer
``ray.train.Checkpoint`` to Ray. On resume the newest intact committed step *on storage* is
used, whether or not Ray's controller registered its pointer yet (under load it lags the
workers by many seconds); the log says which step was used and what Ray's pointer said.

Usable from any plain Ray Train ``train_func``::

    ckpt = Checkpointer("s3://bucket/ckpts", every_steps=100)
    ckpt.protect(engine)                 # overlapped snapshots: the next step waits for them
    restored = ckpt.restore()            # None on a fresh start
    for step in range(start, steps):
        ...
        if ckpt.should_save(step):
            ckpt.save(state, step, metrics={"loss": loss})
    ckpt.close()
"""

from __future__ import annotations

import json
import logging
import math
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from forgeline import storage
from forgeline.checkpoint import (
    CheckpointConfig,
    CheckpointReader,
    CheckpointStore,
    Restored,
    SaveInfo,
    TierConfig,
    TieredStore,
)
from forgeline.checkpoint.format import FAILURE_STATS_FILE
from forgeline.checkpoint.interval import planning_mtbf_s, young_daly_interval_s
from forgeline.checkpoint.retention import abandon_steps_after
from forgeline.errors import ConfigError

log = logging.getLogger(__name__)

POINTER_FILE = "forgeline_checkpoint.json"
NODE_ID_FIELD = "{node_id}"
"""In ``TierConfig.local_url``: replaced by the worker's Ray node id (one folder per node)."""


def read_pointer(checkpoint: Any) -> dict[str, Any]:
    """The ``{url, step, world_size}`` inside a pointer ``ray.train.Checkpoint``."""
    with checkpoint.as_directory() as folder:
        return json.loads((Path(folder) / POINTER_FILE).read_text())


class Checkpointer:
    """One per Ray Train worker; rank and world size come from ``ray.train.get_context()``.

    ``every_steps``: fixed interval. ``adaptive=True``: after each save, rank 0 recomputes
    the interval from the measured blocking save cost, the measured step time and the
    failure rate in ``{url}/failure_stats.json`` (written by ``FailureStatistics``), and
    broadcasts it so that every rank saves at the same steps. ``tiers``: commit to host
    memory and node-local disk before ``url`` (:class:`~forgeline.checkpoint.TieredStore`);
    ``restore`` then reads from the fastest tier holding the step (``resume_report`` says
    which, and how long it took). ``{node_id}`` in ``tiers.local_url`` becomes this worker's
    Ray node id: a folder per node where the "local" path is on storage nodes share, or
    where several Ray nodes run on one machine.
    """

    def __init__(self, url: str, config: CheckpointConfig | None = None,
                 every_steps: int = 100, adaptive: bool = False,
                 rank: int | None = None, world_size: int | None = None, *,
                 tiers: TierConfig | None = None) -> None:
        if every_steps < 1:
            raise ConfigError("every_steps", every_steps, "must be ≥ 1")
        if rank is None or world_size is None:
            import ray.train

            context = ray.train.get_context()
            rank, world_size = context.get_world_rank(), context.get_world_size()
        self.url = storage.normalize_root(url)
        self.rank, self.world_size = rank, world_size
        self.store = (TieredStore(self.url, _on_this_node(tiers), config, rank, world_size)
                      if tiers else
                      CheckpointStore(self.url, config, rank=rank, world_size=world_size))
        self.every_steps, self.adaptive = every_steps, adaptive
        self._next_step: int | None = None
        self._last_save: tuple[int, float] | None = None
        self.restored_step: int | None = None
        self.saves: list[dict[str, Any]] = []  # {step, tier, proactive} per save reported

    @property
    def resume_report(self) -> dict[str, Any] | None:
        """This rank's last tiered restore (``TierRestore.report()``: the tier, its URL, why
        faster tiers were skipped, the seconds); None without tiers or before a restore."""
        last = getattr(self.store, "last_resume", None)
        return None if last is None else last.report()

    # ------------------------------------------------------------------ resume
    def resume_step(self) -> int | None:
        """The step to resume from: the newest intact committed step under ``url`` (None on a
        fresh start), whatever Ray's pointer says; logs both. Rank 0 then moves the manifests
        of later, uncommitted or damaged steps aside, so that they can be saved again."""
        import ray.train

        checkpoint = ray.train.get_checkpoint()
        pointer = read_pointer(checkpoint) if checkpoint is not None else None
        said = f"Ray's pointer: step {pointer['step']}" if pointer else "Ray registered none"
        step = CheckpointReader(self.url).latest_good_step()
        if step is None:
            log.info("no committed checkpoint under %s (%s): starting fresh", self.url, said)
        else:
            log.warning("resuming from step %s, the newest committed checkpoint under %s (%s)",
                        step, self.url, said)
        if self.rank == 0:
            abandon_steps_after(self.url, -1 if step is None else step)
        return step

    def restore(self) -> Restored | None:
        """This rank's state from the step Ray resumes from (None on a fresh start)."""
        step = self.resume_step()
        if step is None:
            return None
        restored = self.store.restore(step)
        self.restored_step = restored.step
        return restored

    # ------------------------------------------------------------------ save
    def protect(self, target: Any) -> None:
        """Guard ``target``'s optimizer steps (torch optimizer or DeepSpeed engine) so that
        ``save`` returns at once and the snapshot overlaps the next forward/backward."""
        self.store.protect(target)

    def should_save(self, step: int) -> bool:
        if self._next_step is None:
            return step % self.every_steps == 0
        return step >= self._next_step

    def save(self, state: Any, step: int, metrics: dict[str, Any] | None = None,
             metadata: dict[str, Any] | None = None, *, proactive: bool = False) -> SaveInfo:
        """Snapshot and persist ``state`` (async per config), then report a pointer to Ray.

        ``proactive``: a save ahead of a predicted failure; it waits for its commit to the
        fastest tier (memory or local disk with tiers: not for the remote copy) before it is
        reported. The report says which tier the step is committed on at that time
        (``checkpoint_tier``: memory, local, remote, or ``pending`` while in flight)."""
        import ray.train

        info = self.store.save(state, step, metadata)
        commit_wait_s = 0.0
        if proactive:
            started = time.perf_counter()
            info.persisted.result()
            commit_wait_s = time.perf_counter() - started
        tier = self.tier_of(step, info)
        self.saves.append({"step": step, "tier": tier, "proactive": proactive})
        report = {**(metrics or {}), "step": step, "checkpoint_step": step,
                  "checkpoint_blocked_s": info.blocked_s + commit_wait_s,
                  "checkpoint_raw_bytes": float(info.raw_bytes),
                  "checkpoint_tier": tier, "checkpoint_proactive": proactive}
        if self.adaptive:
            self._plan_next(step, info.blocked_s)
            report["checkpoint_next_step"] = self._next_step
        pointer = None
        with tempfile.TemporaryDirectory(prefix="forgeline-pointer-") as folder:
            if self.rank == 0:
                (Path(folder) / POINTER_FILE).write_text(json.dumps(
                    {"url": self.url, "step": step, "world_size": self.world_size}))
                pointer = ray.train.Checkpoint.from_directory(folder)
            ray.train.report(report, checkpoint=pointer)
        return info

    def tier_of(self, step: int, info: SaveInfo) -> str:
        """The slowest tier ``step`` is committed on now (``pending``: on none yet)."""
        if isinstance(self.store, TieredStore):
            return self.store.tier_of(step) or "pending"
        done = info.persisted.done() and info.persisted.exception() is None
        return "remote" if done else "pending"

    def save_summary(self) -> dict[str, Any]:
        """This rank's saves: how many, how many proactive, the tier each was committed on
        when it was reported (counts), and the last one."""
        return {"saves": len(self.saves),
                "proactive_saves": sum(s["proactive"] for s in self.saves),
                "reported_tiers": dict(Counter(s["tier"] for s in self.saves)),
                "last": self.saves[-1] if self.saves else None}

    def _plan_next(self, step: int, cost_s: float) -> None:
        now = time.perf_counter()
        interval_steps = self.every_steps
        if self.rank == 0 and self._last_save is not None:
            step_s = (now - self._last_save[1]) / max(1, step - self._last_save[0])
            mtbf = math.inf
            stats_url = storage.join(self.url, FAILURE_STATS_FILE)
            if storage.exists(stats_url):
                mtbf = planning_mtbf_s(storage.read_json(stats_url))
            interval_s = young_daly_interval_s(cost_s, mtbf)
            if math.isfinite(interval_s) and step_s > 0:
                interval_steps = max(1, round(interval_s / step_s))
        interval_steps = self._broadcast(interval_steps)
        self._last_save = (step, now)
        self._next_step = step + interval_steps

    def _broadcast(self, value: int) -> int:
        import torch
        import torch.distributed as dist

        if self.world_size > 1 and dist.is_available() and dist.is_initialized():
            box = torch.tensor([value], dtype=torch.int64)
            dist.broadcast(box, src=0)
            return int(box.item())
        return value

    def wait(self) -> None:
        self.store.wait()

    def close(self) -> None:
        self.store.close()


def _on_this_node(tiers: TierConfig) -> TierConfig:
    """``tiers`` with ``NODE_ID_FIELD`` in ``local_url`` replaced by this Ray node's id."""
    if tiers.local_url is None or NODE_ID_FIELD not in tiers.local_url:
        return tiers
    import ray

    node_id = ray.get_runtime_context().get_node_id()
    return tiers.model_copy(update={"local_url": tiers.local_url.replace(NODE_ID_FIELD, node_id)})
