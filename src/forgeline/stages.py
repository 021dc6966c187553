"""The stage table: every pipeline stage once — its name, options model, core function and
result model.

The CLI's subcommands, the Airflow operators and the pipeline are generated from this table
or call through it. Each core function works over one run layout
(``{root}/runs/{run_id}/{stage}/``): it calls its stage's library API, records the result in
the run's ``run.json`` and returns it. Importing this module is light (options models only);
a stage's engine (torch, Ray, DeepSpeed …) and its result model load when it runs.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from forgeline import storage
from forgeline.datasets.config import DatasetConfig
from forgeline.errors import ConfigError
from forgeline.export.stage import ExportOptions
from forgeline.options import Options
from forgeline.quantize.options import QuantizeOptions
from forgeline.runs import RunLayout
from forgeline.search.options import StrategyOptions
from forgeline.train.config import TrainOptions, default_deepspeed_config, warmup_steps_for

log = logging.getLogger(__name__)


class NoOptions(Options):
    """For stages without knobs."""


@dataclass(frozen=True)
class Stage:
    """One pipeline stage: what it is called, what it takes, what it does, what it returns."""

    name: str
    summary: str
    options: type[BaseModel]
    run: Callable[[RunLayout, Any], BaseModel]
    result_path: str
    """``module:Name`` of the result model, imported on use (it may need the engine)."""

    @property
    def result(self) -> type[BaseModel]:
        module, name = self.result_path.split(":")
        return getattr(importlib.import_module(module), name)


def _prepared(layout: RunLayout, field: str, required: bool = True) -> dict[str, Any] | None:
    """The run's prepare result; a missing one names ``field`` (None when not ``required``)."""
    prepared = layout.load()["stages"].get("prepare")
    if prepared is None and required:
        raise ConfigError(
            field, None, f"not given, and run {layout.run_id!r} has no prepare result"
        )
    return prepared


def prepare(layout: RunLayout, options: DatasetConfig) -> BaseModel:
    """Corpus → token windows → Parquet shards + manifest under ``prepare/``."""
    from forgeline.datasets.build import build_dataset

    result = build_dataset(options, layout.stage_url("prepare"))
    layout.record("prepare", result.model_dump(mode="json"))
    return result


def search(layout: RunLayout, options: StrategyOptions) -> BaseModel:
    """Rank parallel strategies for the run's model and data; write ``search/plan.json``."""
    from forgeline.search.stage import plan_strategy

    prepared = _prepared(layout, "seq_len", required=options.seq_len is None) or {}
    fill = {"seq_len": prepared.get("window_tokens"), "vocab_size": prepared.get("vocab_size")}
    options = options.model_copy(update={k: v for k, v in fill.items()
                                         if getattr(options, k) is None and v is not None})
    result = plan_strategy(options, layout.stage_url("search"))
    layout.record("search", result.model_dump(mode="json"))
    return result


def _apply_plan(options: TrainOptions, plan: dict[str, Any]) -> TrainOptions:
    """Run the search stage's plan as is; add only what the search does not decide (the LR
    schedule)."""
    schedule = default_deepspeed_config(total_steps=options.steps,
                                        warmup_steps=warmup_steps_for(options.steps))["scheduler"]
    return options.model_copy(update={
        "deepspeed_config": {"scheduler": schedule, **plan["deepspeed_config"]},
        "workers": plan["num_workers"],
        "activation_checkpointing": plan["activation_checkpointing"],
    })


def train(layout: RunLayout, options: TrainOptions) -> BaseModel:
    """Train with Ray Train + DeepSpeed; the run's search plan decides the DeepSpeed config
    unless one is given; the data is read throttled and/or cached as the options say."""
    from forgeline.train.run import run_training

    manifest_url = options.manifest_url or _prepared(layout, "manifest_url")["manifest_url"]
    plan = layout.load()["stages"].get("search")
    if plan is not None and options.deepspeed_config is None:
        options = _apply_plan(options, plan)
    config = options.to_config(manifest_url, layout.root).model_copy(
        update={"run_name": layout.run_id})
    callbacks = []
    if config.cache is not None:
        from forgeline.ray.cache import CacheStatsCallback

        stats_url = storage.join(layout.stage_url("train"), "cache_stats.json")
        callbacks.append(CacheStatsCallback(stats_url))
    result = run_training(config, layout.stage_url("train"), layout.metrics_url, callbacks)
    layout.record("train", result.model_dump(mode="json"))
    return result


def warm(layout: RunLayout, options: TrainOptions) -> BaseModel:
    """Load the cache server with the samples the previous run over this dataset found most
    important (needs a Ray cluster that outlives the task, e.g. ``RAY_ADDRESS``)."""
    from forgeline.cache.warmup import warm_cache

    manifest_url = options.manifest_url or _prepared(layout, "manifest_url")["manifest_url"]
    manifest_url, cache = options.data_access(manifest_url, layout.root)
    if cache is None:
        raise ConfigError("cache_mode", options.cache.mode, "no cache for this data to warm")
    result = warm_cache(cache, manifest_url)
    layout.record("cache", result.model_dump(mode="json"))
    return result


def quantize(layout: RunLayout, options: QuantizeOptions) -> BaseModel:
    """Quantize the run's trained model, calibrated and scored on its validation windows."""
    from forgeline.quantize.stage import quantize_stage

    stages = layout.load()["stages"]
    model_url = options.model_url or stages.get("train", {}).get("model_url")
    if model_url is None:
        raise ConfigError("model_url", None, f"not given, and run {layout.run_id!r} has no "
                          "train result")
    manifest_url = options.manifest_url or _prepared(layout, "manifest_url")["manifest_url"]
    result = quantize_stage(options, model_url, manifest_url, layout.stage_url("quantize"))
    layout.record("quantize", result.model_dump(mode="json"))
    return result


def report(layout: RunLayout, options: NoOptions | None = None) -> BaseModel:
    """The run's HTML/Markdown report from ``run.json`` and ``metrics.jsonl``."""
    from forgeline.reports.build import build_report

    result = build_report(layout.root, layout.run_id)
    layout.record("report", result.model_dump(mode="json"))
    return result


def export(layout: RunLayout, options: ExportOptions) -> BaseModel:
    """The run's model, checkpoint and plan in standard formats under ``export/``."""
    from forgeline.export.stage import export_run

    result = export_run(layout.load()["stages"], options, layout.stage_url("export"))
    layout.record("export", result.model_dump(mode="json"))
    return result


STAGES: dict[str, Stage] = {stage.name: stage for stage in (
    Stage("prepare", "build the token dataset", DatasetConfig, prepare,
          "forgeline.datasets.config:DatasetResult"),
    Stage("search", "rank parallel strategies; the train stage runs the best", StrategyOptions,
          search, "forgeline.search.options:StrategyResult"),
    Stage("train", "train with Ray Train + DeepSpeed", TrainOptions, train,
          "forgeline.train.config:TrainResult"),
    Stage("cache", "warm the cache server with the previous run's most important samples",
          TrainOptions, warm, "forgeline.cache.warmup:WarmupResult"),
    Stage("quantize", "post-training quantization of the trained model", QuantizeOptions,
          quantize, "forgeline.quantize.options:QuantizeResult"),
    Stage("report", "write the run's HTML/Markdown report", NoOptions, report,
          "forgeline.reports.result:ReportResult"),
    Stage("export", "the run's model (Hugging Face GPT-2), checkpoint (safetensors + torch "
          "DCP) and plan (ds_config.json + launch.sh) in standard formats", ExportOptions,
          export, "forgeline.export.stage:ExportResult"),
)}
"""Every stage by name, in pipeline order (``cache`` is optional and runs before ``train``)."""


def run_stage(name: str, layout: RunLayout, options: BaseModel | dict[str, Any]) -> BaseModel:
    """Validate ``options`` (a model or a flat/nested dict) for stage ``name`` and run it."""
    stage = STAGES[name]
    if not isinstance(options, stage.options):
        options = stage.options.model_validate(options)
    return stage.run(layout, options)
