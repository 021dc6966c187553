"""The pipeline's stages over one run layout: prepare → train → report.

Each function calls its stage's core API, records the result in the run's ``run.json``
and returns it. Operators, the CLI and ``run_pipeline`` all go through these.
"""

from __future__ import annotations

import logging

from pydantic import BaseModel, ConfigDict, Field

from forgeline.datasets import DatasetConfig, DatasetResult, build_dataset
from forgeline.errors import ConfigError
from forgeline.reports import ReportResult, build_report
from forgeline.runs import RunLayout, default_artifact_root, new_run_id
from forgeline.train import TrainOptions, TrainResult, run_training

log = logging.getLogger(__name__)


def prepare(layout: RunLayout, config: DatasetConfig) -> DatasetResult:
    result = build_dataset(config, layout.stage_url("prepare"))
    layout.record("prepare", result.model_dump(mode="json"))
    return result


def train(layout: RunLayout, options: TrainOptions) -> TrainResult:
    manifest_url = options.manifest_url
    if manifest_url is None:
        prepared = layout.load()["stages"].get("prepare")
        if prepared is None:
            raise ConfigError("manifest_url", None,
                              f"not given, and run {layout.run_id!r} has no prepare result")
        manifest_url = prepared["manifest_url"]
    config = options.to_config(manifest_url)
    result = run_training(config, layout.stage_url("train"), layout.metrics_url)
    layout.record("train", result.model_dump(mode="json"))
    return result


def report(layout: RunLayout) -> ReportResult:
    result = build_report(layout.root, layout.run_id)
    layout.record("report", result.model_dump(mode="json"))
    return result


class PipelineParams(TrainOptions):
    """Every knob of the end-to-end pipeline; defaults are the demo's (and the DAG's Params)."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    artifact_root: str | None = Field(
        None, description="Where runs are written; default $FORGELINE_ARTIFACT_ROOT or ./artifacts."
    )
    source: str = DatasetConfig.model_fields["source"]
    window_tokens: int = DatasetConfig.model_fields["window_tokens"]
    val_fraction: float = DatasetConfig.model_fields["val_fraction"]
    max_source_bytes: int | None = DatasetConfig.model_fields["max_source_bytes"]

    def dataset_config(self) -> DatasetConfig:
        return DatasetConfig(**self.model_dump(include=set(DatasetConfig.model_fields)))

    def train_options(self) -> TrainOptions:
        return TrainOptions(**self.model_dump(include=set(TrainOptions.model_fields)))


class PipelineResult(BaseModel):
    run_url: str
    model_url: str
    report_html_url: str
    report_markdown_url: str
    val_ppl_before: float
    val_ppl_after: float


def run_pipeline(params: PipelineParams, run_id: str | None = None) -> PipelineResult:
    """Run every stage in order under ``{root}/runs/{run_id}``, without Airflow."""
    layout = RunLayout(params.artifact_root or default_artifact_root(), run_id or new_run_id())
    dataset_config, train_options = params.dataset_config(), params.train_options()
    log.info("run %s under %s", layout.run_id, layout.url)
    prepare(layout, dataset_config)
    trained = train(layout, train_options)
    reported = report(layout)
    return PipelineResult(
        run_url=layout.url, model_url=trained.model_url, report_html_url=reported.html_url,
        report_markdown_url=reported.markdown_url, val_ppl_before=trained.val_ppl_before,
        val_ppl_after=trained.val_ppl_after,
    )

