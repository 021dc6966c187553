"""The per-worker training loop run by Ray Train: DeepSpeed engine, distributed sampling,
periodic metrics through ``ray.train.report``, validation before/after, safetensors export."""

from __future__ import annotations

import logging
import math
import os
import resource
import time
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from forgeline import storage
from forgeline.checkpoint.training import (
    capture_training_state,
    load_training_state,
    restore_training_state,
)
from forgeline.datasets import TokenDataset
from forgeline.logs import quiet_worker
from forgeline.train.batches import BatchSource, ShuffledBatches
from forgeline.train.config import TrainConfig
from forgeline.train.deepspeed_ops import skip_unused_deepspeed_ops
from forgeline.train.model import lm_loss, per_sample_loss
from forgeline.train.models import MODEL_CONFIG_FILE as MODEL_CONFIG_FILE  # re-exported
from forgeline.train.models import MODEL_FILE as MODEL_FILE
from forgeline.train.models import build_model, save_trained_model

log = logging.getLogger(__name__)

SUMMARY_FILE = "summary.json"


def _world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _mean_across_ranks(*values: float) -> list[float]:
    tensor = torch.tensor(values, dtype=torch.float64)
    if _world()[1] > 1:
        dist.all_reduce(tensor)
        tensor /= _world()[1]
    return tensor.tolist()


@torch.no_grad()
def evaluate(model: torch.nn.Module, dataset: TokenDataset, samples: int, batch: int) -> float:
    """Mean validation loss over the first ``samples`` windows, split across ranks."""
    rank, world = _world()
    indices = list(range(min(samples, len(dataset))))[rank::world]
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for first in range(0, len(indices), batch):
        tokens = torch.from_numpy(dataset.get_many(indices[first : first + batch])).long()
        loss = lm_loss(model(tokens[:, :-1]), tokens[:, 1:])
        total, count = total + loss.item() * len(tokens), count + len(tokens)
    model.train(was_training)
    sums = torch.tensor([total, count], dtype=torch.float64)
    if world > 1:
        dist.all_reduce(sums)
    return (sums[0] / sums[1]).item()


def _full_state_dict(engine: Any, zero_stage: int) -> dict[str, torch.Tensor]:
    """The whole model's fp32 weights on every rank (ZeRO-3 partitions gathered first)."""
    module = engine.module
    if zero_stage == 3:
        import deepspeed

        with deepspeed.zero.GatheredParameters(list(module.parameters()), modifier_rank=None):
            return {k: v.detach().clone().float() for k, v in module.state_dict().items()}
    return {k: v.detach().clone().float() for k, v in module.state_dict().items()}


def save_model(state: dict[str, torch.Tensor], config: TrainConfig, output_url: str) -> str:
    return save_trained_model(state, config, output_url)


def progress_line(step: int, steps: int, loss: float, tokens_per_s: float,
                  step_s: float) -> str:
    """``step 10/40 · loss 4.1800 · 26,000 tokens/s · ETA 12 s``: the periodic log line."""
    eta = max(0.0, (steps - step) * step_s)
    return (f"step {step}/{steps} · loss {loss:.4f} · {tokens_per_s:,.0f} tokens/s · "
            f"ETA {eta:.0f} s")


def make_batch_source(
    config: TrainConfig, dataset: TokenDataset, rank: int, world: int
) -> BatchSource:
    """The training batches of this rank: uniform shuffling unless a cache is configured."""
    if config.cache is not None:
        from forgeline.cache import CachedBatches

        return CachedBatches.from_config(
            config.cache, dataset.manifest_url, config.micro_batch_size, config.seed, rank,
            world=world,
        )
    return ShuffledBatches(dataset, config.micro_batch_size, config.seed, rank, world)


def make_checkpointer(config: TrainConfig, output_url: str, rank: int, world: int) -> Any:
    """The worker's forgeline ``Checkpointer`` (None when checkpointing is off)."""
    url = config.checkpoint.store_url(output_url)
    if url is None:
        return None
    from forgeline.ray.checkpointer import Checkpointer

    return Checkpointer(url, config.checkpoint.store_config(), config.checkpoint.every_steps,
                        rank=rank, world_size=world, tiers=config.checkpoint.tiers())


def make_health_guard(config: TrainConfig, output_url: str, checkpointer: Any, rank: int,
                      world: int) -> Any:
    """The worker's ``HealthGuard`` (None when ``health.enabled`` is off). Its base interval
    is the checkpoint interval; the observed MTBF of the failures no proactive save covered
    comes from ``failure_stats.json``."""
    if not config.health.enabled:
        return None
    from forgeline.checkpoint.format import FAILURE_STATS_FILE
    from forgeline.checkpoint.interval import planning_mtbf_s
    from forgeline.health.guard import HealthGuard, torch_gather

    options, mtbf_s = config.health, None
    if checkpointer is not None:
        stats_url = storage.join(checkpointer.url, FAILURE_STATS_FILE)
        if storage.exists(stats_url):
            mtbf = planning_mtbf_s(storage.read_json(stats_url))
            mtbf_s = mtbf if math.isfinite(mtbf) else None
        if options.disk_path is None and checkpointer.url.startswith("file://"):
            folder = checkpointer.url.removeprefix("file://")
            os.makedirs(folder, exist_ok=True)
            options = options.model_copy(update={"disk_path": folder})
    return HealthGuard(options, config.checkpoint.every_steps or 10**9, rank=rank,
                       world_size=world, gather=torch_gather, mtbf_s=mtbf_s,
                       report_url=storage.join(output_url, "health"))


def _resume_tiers(checkpointer: Any, world: int) -> list[dict[str, Any] | None] | None:
    """Every rank's tiered restore report (rank order) with its Ray node id; None without
    tiers."""
    import ray

    report = checkpointer.resume_report
    mine = None if report is None else {**report,
                                        "node_id": ray.get_runtime_context().get_node_id()}
    everyone = [mine]
    if world > 1:
        everyone = [None] * world
        dist.all_gather_object(everyone, mine)
    return None if all(r is None for r in everyone) else everyone


def _grad_norm(engine: Any) -> float | None:
    norm = getattr(engine, "get_global_grad_norm", lambda: None)()
    return None if norm is None else float(norm)


def train_loop_per_worker(loop_config: dict[str, Any]) -> None:
    """Entry point of each Ray Train worker. ``loop_config`` = {"train": ..., "output_url": ...}."""
    attempt_started = time.time()
    os.environ.setdefault("DS_ACCELERATOR", "cuda" if torch.cuda.is_available() else "cpu")
    quiet_worker()
    import deepspeed
    import ray.train

    from forgeline.ray.checkpoint_callbacks import RESUME_TIMESTAMPS

    skip_unused_deepspeed_ops()
    config = TrainConfig.model_validate(loop_config["train"])
    output_url = loop_config["output_url"]
    rank, world = _world()
    torch.manual_seed(config.seed)
    train_set = TokenDataset(config.manifest_url, "train")
    val_set = TokenDataset(config.manifest_url, "validation")
    model = build_model(config)
    engine, _, _, scheduler = deepspeed.initialize(
        model=model, model_parameters=model.parameters(), config=config.deepspeed_config,
        dist_init_required=False,
    )
    micro = config.micro_batch_size
    eval_batch = max(micro, 32)
    val_before = evaluate(engine, val_set, config.eval_samples, eval_batch)
    ray.train.report({"step": 0, "val_loss": val_before, "split": "validation"})

    source = make_batch_source(config, train_set, rank, world)
    checkpointer = make_checkpointer(config, output_url, rank, world)
    if checkpointer is not None:
        checkpointer.protect(engine)
    start_step, extra, restore_s, resume_tiers, resume_stamps = 0, {}, None, None, None
    restore_started, restore_started_unix = time.perf_counter(), time.time()
    resume = checkpointer.resume_step() if checkpointer and config.checkpoint.resume else None
    if resume is not None:  # saved by any worker count: ZeRO optimizer partitions resharded
        optimizer = config.checkpoint.resume_optimizer
        state = load_training_state(checkpointer.store, resume, rank, world, optimizer)
        start_step = restore_training_state(state, engine, scheduler, source, config.zero_stage,
                                            saved_world_size=world, world_size=world,
                                            load_optimizer=optimizer)
        extra = state.get("extra") or {}
        restore_s = time.perf_counter() - restore_started
        resume_stamps = [attempt_started, restore_started_unix, time.time()]  # + first step
        resume_tiers = _resume_tiers(checkpointer, world)
        log.info("rank %d resumed from forgeline checkpoint step %d in %.2f s", rank,
                 start_step, restore_s)
    guard = make_health_guard(config, output_url, checkpointer, rank, world)
    if guard is not None:
        guard.policy.last_save_step = start_step
    batches = iter(source)
    tokens_per_step = world * micro * config.grad_accum_steps * config.seq_len
    started = last_time = time.perf_counter()
    first_loss, window_losses = extra.get("first_loss", math.nan), []
    mean_loss = extra.get("last_loss", math.nan)
    for step in range(start_step + 1, config.steps + 1):
        step_started, data_wait_s = time.perf_counter(), 0.0
        for _ in range(config.grad_accum_steps):
            waited = time.perf_counter()
            indices, tokens = next(batches)
            data_wait_s += time.perf_counter() - waited
            sample_losses = per_sample_loss(engine(tokens[:, :-1]), tokens[:, 1:])
            loss = sample_losses.mean()
            engine.backward(loss)
            source.feedback(indices, sample_losses.detach())
            engine.step()
            window_losses.append(loss.item())
        if resume_stamps is not None and len(resume_stamps) < len(RESUME_TIMESTAMPS):
            resume_stamps.append(time.time())  # the first step after the restore is done
        decision = None if guard is None else guard.step(
            step, time.perf_counter() - step_started, data_wait_s, window_losses[-1],
            _grad_norm(engine))
        if step % config.log_every_steps == 0 or step == config.steps:
            now = time.perf_counter()
            steps_in_window = len(window_losses) / config.grad_accum_steps
            mean_loss, = _mean_across_ranks(float(np.mean(window_losses)))
            if math.isnan(first_loss):
                first_loss = mean_loss
            metrics = {
                "step": step,
                "loss": mean_loss,
                "lr": float(scheduler.get_last_lr()[0]) if scheduler else math.nan,
                "tokens_per_s": tokens_per_step * steps_in_window / (now - last_time),
                "time_s": now - started,
                **source.stats(),
                **(guard.metrics() if guard is not None else {}),
            }
            if resume_stamps is not None:  # the first report after a resume: its timing
                metrics.update(zip(RESUME_TIMESTAMPS, resume_stamps, strict=True))
                resume_stamps = None
            if rank == 0:
                log.info("%s", progress_line(step, config.steps, mean_loss,
                                             metrics["tokens_per_s"],
                                             (now - started) / (step - start_step)))
            ray.train.report(metrics)
            last_time, window_losses = now, []
        save = (decision.save if decision is not None else
                checkpointer is not None and checkpointer.should_save(step))
        if checkpointer is not None and save:
            info = checkpointer.save(capture_training_state(
                engine, scheduler, source, step, config.zero_stage,
                extra={"first_loss": first_loss, "last_loss": mean_loss},
            ), step, metrics=guard.save_metrics(decision) if guard is not None else None,
                proactive=decision is not None and decision.proactive)
            if guard is not None:
                guard.saved(step, info.blocked_s)
    if checkpointer is not None:
        checkpointer.close()
    train_s = time.perf_counter() - started
    source.close()
    val_after = evaluate(engine, val_set, config.eval_samples, eval_batch)
    state = _full_state_dict(engine, config.zero_stage)
    summary = {
        "val_loss_before": val_before,
        "val_loss_after": val_after,
        "train_loss_first": first_loss,
        "train_loss_final": mean_loss,
        "tokens_per_s": tokens_per_step * (config.steps - start_step) / train_s,
        "num_params": sum(v.numel() for v in state.values()),
        "step_s": train_s / max(1, config.steps - start_step),
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "resumed_from_step": start_step if resume is not None else None,
        "restore_s": restore_s,
        "resume_tiers": resume_tiers,
        "health": guard.metrics() if guard is not None else None,
        "checkpoint_saves": checkpointer.save_summary() if checkpointer is not None else None,
    }
    if rank == 0:
        save_model(state, config, output_url)
        storage.write_json_atomic(storage.join(output_url, SUMMARY_FILE), summary)
    if world > 1:
        dist.barrier()
    ray.train.report({"step": config.steps, "split": "validation", "val_loss": val_after})
