"""The pipeline's stages over one run layout: prepare → search → train → quantize → report.

Each function calls its stage's core API, records the result in the run's ``run.json``
and returns it. Operators, the CLI and ``run_pipeline`` all go through these.
"""

from __future__ import annotations

import logging
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from forgeline import storage
from forgeline.cache import CacheConfig, WarmupResult, warm_cache
from forgeline.datasets import DatasetConfig, DatasetResult, build_dataset
from forgeline.errors import ConfigError
from forgeline.quantize.stage import QuantizeOptions, QuantizeResult, quantize_stage
from forgeline.reports import ReportResult, build_report
from forgeline.runs import RunLayout, default_artifact_root, new_run_id
from forgeline.search.stage import StrategyOptions, StrategyResult, plan_strategy
from forgeline.train import TrainOptions, TrainResult, default_deepspeed_config, run_training

log = logging.getLogger(__name__)


def prepare(layout: RunLayout, config: DatasetConfig) -> DatasetResult:
    result = build_dataset(config, layout.stage_url("prepare"))
    layout.record("prepare", result.model_dump(mode="json"))
    return result


def _prepared(layout: RunLayout, field: str) -> dict[str, Any]:
    prepared = layout.load()["stages"].get("prepare")
    if prepared is None:
        raise ConfigError(
            field, None, f"not given, and run {layout.run_id!r} has no prepare result"
        )
    return prepared


def search(layout: RunLayout, options: StrategyOptions) -> StrategyResult:
    if options.seq_len is None:
        window = _prepared(layout, "seq_len")["window_tokens"]
        options = options.model_copy(update={"seq_len": window})
    result = plan_strategy(options, layout.stage_url("search"))
    layout.record("search", result.model_dump(mode="json"))
    return result


class TrainStageOptions(TrainOptions):
    """Training options plus how the workers read the data: directly, or through the
    importance-aware cache; and, to imitate object storage, through the throttled filesystem."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    cache_mode: Literal["auto", "on", "off"] = Field(
        "auto", description="Read samples through forgeline.cache: auto = when the dataset is "
        "read from remote (non-file://) storage."
    )
    cache_capacity_bytes: int = Field(64 * 2**20, ge=1, description="Cache byte budget.")
    cache_substitution_ratio: float = Field(
        0.3, ge=0.0, le=1.0, description="Share of low-importance misses served by a cached "
        "low-importance sample instead (0 = exact epochs)."
    )
    remote_like_data: bool = Field(
        False, description="Read the dataset through forgeline's throttled filesystem "
        "(per-request latency + shared bandwidth cap), as from object storage."
    )
    throttle_latency_s: float = Field(0.005, ge=0.0, description="Per-request latency.")
    throttle_bandwidth_bytes_per_s: float = Field(50e6, gt=0, description="Shared bandwidth.")

    def data_access(self, manifest_url: str, root: str) -> tuple[str, CacheConfig | None]:
        """The manifest URL the workers read, and the cache config (None: no cache)."""
        if self.remote_like_data:
            from forgeline.throttled import throttled_url

            manifest_url = throttled_url(manifest_url, self.throttle_latency_s,
                                         self.throttle_bandwidth_bytes_per_s)
        remote = not manifest_url.startswith("file://")
        if self.cache is not None or self.cache_mode == "off" or (
            self.cache_mode == "auto" and not remote
        ):
            return manifest_url, self.cache
        return manifest_url, CacheConfig(
            capacity_bytes=self.cache_capacity_bytes,
            substitution_ratio=self.cache_substitution_ratio,
            importance_url=storage.join(root, "cache", "importance"),
        )


def _apply_plan(options: TrainOptions, plan: dict[str, Any]) -> TrainOptions:
    """Run the search stage's plan as is; add only what the search does not decide (the LR
    schedule)."""
    schedule = default_deepspeed_config(total_steps=options.steps,
                                        warmup_steps=min(20, options.steps // 10))["scheduler"]
    return options.model_copy(update={
        "deepspeed_config": {"scheduler": schedule, **plan["deepspeed_config"]},
        "workers": plan["num_workers"],
        "activation_checkpointing": plan["activation_checkpointing"],
    })


def _base_train_options(options: TrainOptions) -> TrainOptions:
    fields = set(TrainOptions.model_fields)
    return TrainOptions(**options.model_dump(include=fields, exclude_unset=True))


def train(layout: RunLayout, options: TrainOptions) -> TrainResult:
    """Train; a run's search-stage plan decides the DeepSpeed config unless one is given;
    with ``TrainStageOptions`` the data access (throttling, cache) is decided here too."""
    manifest_url = options.manifest_url or _prepared(layout, "manifest_url")["manifest_url"]
    callbacks = []
    if isinstance(options, TrainStageOptions):
        manifest_url, cache = options.data_access(manifest_url, layout.root)
        options = _base_train_options(options).model_copy(update={"cache": cache})
        if cache is not None:
            from forgeline.ray.cache import CacheStatsCallback

            stats_url = storage.join(layout.stage_url("train"), "cache_stats.json")
            callbacks.append(CacheStatsCallback(stats_url))
    plan = layout.load()["stages"].get("search")
    if plan is not None and options.deepspeed_config is None:
        options = _apply_plan(options, plan)
    config = options.to_config(manifest_url)
    result = run_training(config, layout.stage_url("train"), layout.metrics_url, callbacks)
    layout.record("train", result.model_dump(mode="json"))
    return result


def warm(layout: RunLayout, options: TrainStageOptions) -> WarmupResult:
    """Load the cache server with the samples the previous run over this dataset found most
    important (needs a Ray cluster that outlives the task, e.g. ``RAY_ADDRESS``)."""
    manifest_url = options.manifest_url or _prepared(layout, "manifest_url")["manifest_url"]
    manifest_url, cache = options.data_access(manifest_url, layout.root)
    if cache is None:
        raise ConfigError("cache_mode", options.cache_mode, "no cache for this data to warm")
    result = warm_cache(cache, manifest_url)
    layout.record("cache", result.model_dump(mode="json"))
    return result


def quantize(layout: RunLayout, options: QuantizeOptions) -> QuantizeResult:
    """Quantize the run's trained model, calibrated and scored on its validation windows."""
    stages = layout.load()["stages"]
    model_url = options.model_url or stages.get("train", {}).get("model_url")
    if model_url is None:
        raise ConfigError("model_url", None, f"not given, and run {layout.run_id!r} has no "
                          "train result")
    manifest_url = options.manifest_url or _prepared(layout, "manifest_url")["manifest_url"]
    result = quantize_stage(options, model_url, manifest_url, layout.stage_url("quantize"))
    layout.record("quantize", result.model_dump(mode="json"))
    return result


def report(layout: RunLayout) -> ReportResult:
    result = build_report(layout.root, layout.run_id)
    layout.record("report", result.model_dump(mode="json"))
    return result


class PipelineParams(TrainStageOptions):
    """Every knob of the end-to-end pipeline; defaults are the demo's (and the DAG's Params)."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    strategy_search: bool = Field(
        True, description="Let the search stage choose micro-batch, accumulation and recompute "
        "for the global batch (workers × micro_batch_size × grad_accum_steps) at this "
        "zero_stage; off: train with the given values."
    )
    artifact_root: str | None = Field(
        None, description="Where runs are written; default $FORGELINE_ARTIFACT_ROOT or ./artifacts."
    )
    quantize_scheme: str = Field(
        "int8_wo", description="Post-training quantization: int8_wo, int4_rtn, int4_gptq, w8a8."
    )
    max_rel_ppl_increase: float = QuantizeOptions.model_fields["max_rel_ppl_increase"]
    source: str = DatasetConfig.model_fields["source"]
    window_tokens: int = DatasetConfig.model_fields["window_tokens"]
    val_fraction: float = DatasetConfig.model_fields["val_fraction"]
    max_source_bytes: int | None = DatasetConfig.model_fields["max_source_bytes"]

    def dataset_config(self) -> DatasetConfig:
        return DatasetConfig(**self.model_dump(include=set(DatasetConfig.model_fields)))

    def train_options(self) -> TrainStageOptions:
        fields = set(TrainStageOptions.model_fields)
        return TrainStageOptions(**self.model_dump(include=fields, exclude_unset=True))

    def quantize_options(self) -> QuantizeOptions:
        return QuantizeOptions(scheme=self.quantize_scheme,
                               max_rel_ppl_increase=self.max_rel_ppl_increase)

    def strategy_options(self) -> StrategyOptions:
        return StrategyOptions(
            devices_per_node=self.workers, workers=self.workers, model_size=self.model_size,
            global_batch_size=self.workers * self.micro_batch_size * self.grad_accum_steps,
            zero_stages=[self.zero_stage], lr=self.lr,
        )


class PipelineResult(BaseModel):
    run_url: str
    model_url: str
    quantized_model_url: str
    report_html_url: str
    report_markdown_url: str
    val_ppl_before: float
    val_ppl_after: float


def run_pipeline(params: PipelineParams, run_id: str | None = None) -> PipelineResult:
    """Run every stage in order under ``{root}/runs/{run_id}``, without Airflow."""
    layout = RunLayout(params.artifact_root or default_artifact_root(), run_id or new_run_id())
    dataset_config, train_options = params.dataset_config(), params.train_options()
    params.strategy_options(), params.quantize_options()  # validate all before any work
    log.info("run %s under %s", layout.run_id, layout.url)
    prepare(layout, dataset_config)
    if params.strategy_search and params.deepspeed_config is None:
        search(layout, params.strategy_options())
    trained = train(layout, train_options)
    quantized = quantize(layout, params.quantize_options())
    reported = report(layout)
    return PipelineResult(
        run_url=layout.url, model_url=trained.model_url,
        quantized_model_url=quantized.model_url, report_html_url=reported.html_url,
        report_markdown_url=reported.markdown_url, val_ppl_before=trained.val_ppl_before,
        val_ppl_after=trained.val_ppl_after,
    )

