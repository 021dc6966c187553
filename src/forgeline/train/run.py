"""Driver side of the training stage: start (or join) Ray, run TorchTrainer, collect the result."""

from __future__ import annotations

import logging
import math
import os
import time
from typing import Any

import ray

from forgeline import storage
from forgeline.datasets import load_manifest
from forgeline.errors import ConfigError
from forgeline.logs import RAY_LOGS_DIR, MetricsProgress, collect_ray_logs, local_ray_environment
from forgeline.ray import CheckpointRetention, FailureStatistics, MetricsLogger
from forgeline.runs import safe_run_id
from forgeline.train.config import TrainConfig, TrainResult
from forgeline.train.loop import MODEL_CONFIG_FILE, MODEL_FILE, SUMMARY_FILE, train_loop_per_worker
from forgeline.train.models import describe_model, resolve_model

log = logging.getLogger(__name__)


def _ensure_ray(address: str | None, init_kwargs: dict[str, Any]) -> bool:
    """Connect to Ray; return True when this call started a local cluster that we own."""
    if ray.is_initialized():
        return False
    local = address is None and not os.environ.get("RAY_ADDRESS")
    if local:
        try:
            ray.init(**init_kwargs)
        except Exception as exc:  # Ray waits a fixed 30 s for its raylet; a loaded machine
            if "timed out during startup" not in str(exc):  # may need a second try
                raise
            log.warning("local Ray did not start in time (%s); trying once more", exc)
            ray.shutdown()
            ray.init(**init_kwargs)
    else:
        ray.init(address=address, log_to_driver=init_kwargs["log_to_driver"])
    return local


RAY_STORAGE_DIR = "ray"


def ray_storage(output_url: str) -> tuple[str, Any]:
    """Ray Train's ``(storage_path, storage_filesystem)``: ``{output_url}/ray`` on the output's
    own filesystem (any fsspec URL, through pyarrow's ``FSSpecHandler``), so Ray's run state
    lives beside forgeline's artifacts where every node, a restarted driver or a retried task
    finds it, never in the driver's ``~/ray_results``."""
    fs, path = storage.filesystem(output_url, "output_url")
    path = storage.join(path, RAY_STORAGE_DIR)
    if storage.is_local(fs):
        return path, None
    import pyarrow.fs

    return path, pyarrow.fs.PyFileSystem(pyarrow.fs.FSSpecHandler(fs))


def ray_run_name(config: TrainConfig) -> str:
    """Ray Train's run name: the same for every attempt of a forgeline run, so Ray hands the
    latest checkpoint back to a restarted driver or a retried task (Train V2 restores a run
    from its storage by name). Without a run id the name is fixed: the storage path is
    already per output."""
    return safe_run_id(f"forgeline-{config.run_name}") if config.run_name else "forgeline-train"


def _checkpoint_callbacks(config: TrainConfig, output_url: str) -> list[Any]:
    """Controller-side retention/GC and failure statistics for the training checkpoints."""
    url = config.checkpoint.store_url(output_url)
    if url is None:
        return []
    return [CheckpointRetention(url, config.checkpoint.retention()),
            FailureStatistics(url, config.health.horizon_steps, config.health.threshold)]


def _fit(config: TrainConfig, output_url: str, metrics_url: str | None,
         callbacks: list[Any] | None, owns_ray: bool) -> None:
    """Run the TorchTrainer with progress from the driver; keep Ray's logs of a local run."""
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    storage_path, storage_filesystem = ray_storage(output_url)
    try:
        trainer = TorchTrainer(
            train_loop_per_worker,
            train_loop_config={"train": config.model_dump(mode="json"), "output_url": output_url},
            scaling_config=ScalingConfig(num_workers=config.num_workers, use_gpu=config.use_gpu),
            run_config=RunConfig(
                name=ray_run_name(config),
                storage_path=storage_path,
                storage_filesystem=storage_filesystem,
                callbacks=([MetricsLogger(metrics_url)] if metrics_url else [])
                + _checkpoint_callbacks(config, output_url) + (callbacks or []),
                failure_config=FailureConfig(max_failures=config.max_failures),
            ),
        )
        if metrics_url is None:
            trainer.fit()
        else:
            with MetricsProgress(metrics_url, config.steps):
                trainer.fit()
    finally:
        if owns_ray:
            where = collect_ray_logs(storage.join(output_url, RAY_LOGS_DIR))
            if where:
                log.info("Ray and DeepSpeed output of this run: %s", where)
            ray.shutdown()


def run_training(
    config: TrainConfig, output_url: str, metrics_url: str | None = None,
    callbacks: list[Any] | None = None,
) -> TrainResult:
    """Train ``config.model`` on the dataset with Ray Train + DeepSpeed; write the model under
    ``output_url``; append metrics to ``metrics_url``; return the result."""
    if output_url.startswith("memory://"):
        raise ConfigError(
            "output_url", output_url,
            "Ray workers are separate processes; use a shared filesystem (file://, s3://, …)",
        )
    config = resolve_model(config, load_manifest(config.manifest_url))
    storage.ensure_writable(output_url, "output_url")
    started = time.perf_counter()
    with local_ray_environment() as init_kwargs:
        owns_ray = _ensure_ray(config.ray_address, init_kwargs)
        _fit(config, output_url, metrics_url, callbacks, owns_ray)
    summary = storage.read_json(storage.join(output_url, SUMMARY_FILE))
    return TrainResult(
        model_url=storage.join(output_url, MODEL_FILE),
        model_config_url=storage.join(output_url, MODEL_CONFIG_FILE),
        architecture=describe_model(config, output_url),
        num_params=summary["num_params"],
        workers=config.num_workers,
        zero_stage=config.zero_stage,
        steps=config.steps,
        micro_batch_size=config.micro_batch_size,
        grad_accum_steps=config.grad_accum_steps,
        train_loss_first=summary["train_loss_first"],
        train_loss_final=summary["train_loss_final"],
        val_loss_before=summary["val_loss_before"],
        val_ppl_before=math.exp(summary["val_loss_before"]),
        val_loss_after=summary["val_loss_after"],
        val_ppl_after=math.exp(summary["val_loss_after"]),
        tokens_per_s=summary["tokens_per_s"],
        wall_s=round(time.perf_counter() - started, 3),
        step_s=summary.get("step_s"),
        peak_rss_bytes=summary.get("peak_rss_bytes"),
        checkpoint_url=config.checkpoint.store_url(output_url),
        resumed_from_step=summary.get("resumed_from_step"),
        restore_s=summary.get("restore_s"),
        resume_tiers=summary.get("resume_tiers"),
        health=summary.get("health"),
        checkpoint_saves=summary.get("checkpoint_saves"),
    )
