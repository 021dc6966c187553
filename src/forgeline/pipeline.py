"""The end-to-end pipeline: prepare → search → train → quantize → report over one run.

``PipelineParams`` holds every knob in one section per stage; the DAG's Params, the trigger
form and ``forgeline run``'s flags are its flattened fields. ``stage_options`` derives each
stage's options from it (the only place that does), so the CLI, the operators and
``run_pipeline`` hand every stage the same thing.
"""

from __future__ import annotations

import logging
from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field

from forgeline.datasets.config import DatasetConfig
from forgeline.options import Options
from forgeline.quantize.options import QuantizeOptions
from forgeline.runs import RunLayout, default_artifact_root, new_run_id
from forgeline.search.options import StrategyOptions
from forgeline.stages import STAGES, NoOptions
from forgeline.train.config import TrainOptions

log = logging.getLogger(__name__)

PIPELINE_ORDER = ("prepare", "search", "train", "quantize", "report")


class PipelineParams(Options):
    """Every knob of the end-to-end pipeline; defaults are the demo's (and the DAG's Params)."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=(), title="Storage")

    filled_by_pipeline: ClassVar[frozenset[str]] = frozenset(
        {"train_manifest_url", "quantize_model_url", "quantize_manifest_url"})
    """Flat fields the pipeline fills from earlier stages: not offered at the edges."""

    data: DatasetConfig = Field(default_factory=DatasetConfig,
                                description="The token dataset the prepare stage builds.",
                                json_schema_extra={"section": "Data"})
    strategy_search: bool = Field(
        True, description="Let the search stage choose micro-batch, accumulation and "
        "recompute for the global batch (workers × micro-batch × accumulation) at the given "
        "ZeRO stage; off: train with the given values.",
        json_schema_extra={"section": "Parallelism"},
    )
    train: TrainOptions = Field(default_factory=TrainOptions,
                                description="Training, data access and checkpoints.")
    quantize: QuantizeOptions = Field(default_factory=QuantizeOptions,
                                      description="Post-training quantization.",
                                      json_schema_extra={"section": "Quantization"})
    artifact_root: str | None = Field(
        None, description="Where runs are written (any fsspec URL); default "
        "$FORGELINE_ARTIFACT_ROOT or ./artifacts."
    )

    @property
    def search_enabled(self) -> bool:
        """The search runs unless switched off or a full DeepSpeed config is given."""
        return self.strategy_search and self.train.deepspeed_config is None

    def strategy_options(self) -> StrategyOptions:
        """Search at the run's worker count and ZeRO stage for its global batch."""
        train = self.train
        return StrategyOptions(
            devices_per_node=train.workers, workers=train.workers, model_size=train.model.preset,
            model=None if train.model.kind == "preset" else train.model.model_dump(mode="json"),
            seq_len=self.data.window_tokens,
            global_batch_size=train.workers * train.micro_batch_size * train.grad_accum_steps,
            zero_stages=[train.zero_stage], lr=train.lr,
        )

    def stage_options(self, stage: str) -> BaseModel | None:
        """The options of ``stage`` in this pipeline; None when the stage is switched off."""
        if stage == "search":
            return self.strategy_options() if self.search_enabled else None
        sections = {"prepare": self.data, "train": self.train, "cache": self.train,
                    "quantize": self.quantize, "report": NoOptions()}
        return sections[stage]

    def layout(self, run_id: str | None = None) -> RunLayout:
        return RunLayout(self.artifact_root or default_artifact_root(), run_id or new_run_id())


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
    layout = params.layout(run_id)
    options = {name: params.stage_options(name) for name in PIPELINE_ORDER}  # all checked first
    log.info("run %s under %s", layout.run_id, layout.url)
    results = {}
    for name, stage_options in options.items():
        if stage_options is not None:
            results[name] = STAGES[name].run(layout, stage_options)
    trained, quantized, reported = results["train"], results["quantize"], results["report"]
    return PipelineResult(
        run_url=layout.url, model_url=trained.model_url,
        quantized_model_url=quantized.model_url, report_html_url=reported.html_url,
        report_markdown_url=reported.markdown_url, val_ppl_before=trained.val_ppl_before,
        val_ppl_after=trained.val_ppl_after,
    )
