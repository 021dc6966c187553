"""Predict published runs the cost model was not fitted on, and score the predictions.

Two protocols, both over :data:`forgeline.search.published.PUBLISHED_RUNS`:

* **Named fit subset.** The compute factor is calibrated on Korthikanti et al.'s eight
  Megatron-LM runs (A100) only; every published run is then predicted on its own preset
  with that factor (:meth:`Calibration.apply`) and held out.
* **Leave one framework out.** For each framework family, the factor is calibrated on all
  runs of the other families (the Korthikanti runs included) and the family is predicted.

A run's open choices (micro-batch, interleaving, recompute) are picked by the search on
the calibrated cluster, as a user would pick them, then held fixed while calibrating.
Errors are on throughput: ``|published / predicted step time - 1|``.
"""

from __future__ import annotations

import statistics

from pydantic import BaseModel, Field

from forgeline.errors import ConfigError
from forgeline.search.calibration import Calibration, Observation, calibrate
from forgeline.search.flops import spec_model_flops
from forgeline.search.plan import RECOMPUTE_CODES, ParallelConfig, Plan
from forgeline.search.published import PUBLISHED_RUNS, PublishedRun
from forgeline.search.ranking import search
from forgeline.search.reference import korthikanti_observations
from forgeline.search.space import SearchSpace
from forgeline.search.specs import ClusterSpec, TrainingSpec

FIT_FAMILY = "megatron-lm"
"""The family of the Korthikanti runs, the named fit subset."""


class RunPrediction(BaseModel):
    """One published run next to its prediction."""

    name: str
    family: str
    metric: str
    published: float
    predicted: float
    error_pct: float = Field(description="signed throughput error, %: published step time / "
                             "predicted - 1 (positive: predicted faster)")
    plan: str = Field(description="the configuration predicted (open choices as searched)")
    bound_by: str
    memory_fits: bool = Field(description="the memory model agrees the published layout fits")


class ValidationReport(BaseModel):
    """Held-out errors of one protocol."""

    protocol: str
    fit_runs: int
    mape_pct: float
    max_error_pct: float
    runs: list[RunPrediction]
    by_family: dict[str, float] = Field(description="MAPE per framework family, %")
    compute_scale: dict[str, float] = Field(description="fitted factor per held-out family "
                                            "(one entry for the named-subset protocol)")


def training_for(run: PublishedRun) -> TrainingSpec:
    """The run's optimizer-step setup: batch, precision, framework, fused attention."""
    return TrainingSpec(global_batch_size=run.global_batch_size, precision=run.precision,
                        framework=run.framework, flash_attention=run.framework not in (
                            "megatron-deepspeed", "megatron-lm-2021"))


def cluster_for(run: PublishedRun) -> ClusterSpec:
    """The run's preset at its GPU count, with the run's overrides."""
    per_node = ClusterSpec.preset(run.gpu).devices_per_node
    nodes = -(-run.gpus // per_node)
    return ClusterSpec.preset(run.gpu, nodes=nodes, **run.cluster_overrides)


def published_step_s(run: PublishedRun) -> float:
    """Seconds per step the published number implies."""
    tokens = run.global_batch_size * run.model.seq_len
    if run.metric == "step_s":
        return run.value
    if run.metric == "tokens_per_s_per_gpu":
        return tokens / (run.value * run.gpus)
    return float(spec_model_flops(run.model, run.global_batch_size)) / (run.value * 1e12
                                                                        * run.gpus)


def _value(run: PublishedRun, step_s: float) -> float:
    """A predicted ``step_s`` in the run's published unit."""
    return step_s if run.metric == "step_s" else run.value * published_step_s(run) / step_s


def plan_for(run: PublishedRun, cluster: ClusterSpec) -> Plan:
    """The fastest plan with the run's published layout (its open choices searched).

    The run did fit its GPUs; where the memory model says it does not, the step time is
    still predicted (on the same cluster with twice the device memory) and the plan's
    ``fits`` says so."""
    space = SearchSpace(
        tensor_parallel=[run.tensor_parallel], pipeline_parallel=[run.pipeline_parallel],
        data_parallel=[run.data_parallel], context_parallel=[run.context_parallel],
        virtual_stages=[run.virtual_stages] if run.virtual_stages else None,
        micro_batch_sizes=[run.micro_batch_size] if run.micro_batch_size else None,
        zero_stages=[run.zero_stage], sequence_parallel=[run.sequence_parallel],
        recompute=[run.recompute] if run.recompute else list(RECOMPUTE_CODES),
        offload=["none"])
    found = search(run.model, cluster, training_for(run), top_k=1, space=space)
    if found.feasible:
        return found.best
    roomy = ClusterSpec(**{**cluster.model_dump(),
                           "device_memory_bytes": 2 * cluster.device_memory_bytes})
    again = search(run.model, roomy, training_for(run), top_k=1, space=space)
    if not again.feasible:
        raise ConfigError("runs", run.name, f"its published layout does not fit: {found.reason}")
    return again.best.model_copy(update={"fits": False})


def _observation(run: PublishedRun, config: ParallelConfig) -> Observation:
    return Observation(model=run.model, config=config, training=training_for(run),
                       step_time_s=published_step_s(run), source=run.name,
                       cluster=cluster_for(run))


def _predict(runs: list[PublishedRun], fit: Calibration) -> list[RunPrediction]:
    out = []
    for run in runs:
        plan = plan_for(run, fit.apply(cluster_for(run)))
        error = published_step_s(run) / plan.step_time_s - 1  # on throughput
        out.append(RunPrediction(
            name=run.name, family=run.family, metric=run.metric, published=run.value,
            predicted=_value(run, plan.step_time_s), error_pct=100 * error,
            plan=plan.summary(), bound_by=plan.bound_by, memory_fits=plan.fits))
    return out


def _report(protocol: str, fit_runs: int, rows: list[RunPrediction],
            scales: dict[str, float]) -> ValidationReport:
    families: dict[str, list[float]] = {}
    for r in rows:
        families.setdefault(r.family, []).append(abs(r.error_pct))
    return ValidationReport(
        protocol=protocol, fit_runs=fit_runs,
        mape_pct=statistics.mean(abs(r.error_pct) for r in rows),
        max_error_pct=max(abs(r.error_pct) for r in rows), runs=rows,
        by_family={f: statistics.mean(v) for f, v in families.items()}, compute_scale=scales)


def _fit(observations: list[Observation], base: ClusterSpec) -> Calibration:
    return calibrate(observations, base, fit_comm=False, fit_framework=False)


def validate(runs: tuple[PublishedRun, ...] = PUBLISHED_RUNS) -> tuple[ValidationReport,
                                                                       ValidationReport]:
    """(named-subset report, leave-one-framework-out report) over ``runs``."""
    if not runs:
        raise ConfigError("runs", runs, "need at least one published run")
    base = ClusterSpec.preset("a100-80gb")
    korthikanti = korthikanti_observations()
    named = _fit(korthikanti, base)
    fixed = _report(f"calibrated on Korthikanti et al. ({len(korthikanti)} Megatron-LM runs), "
                    "every published run held out", len(korthikanti), _predict(list(runs), named),
                    {FIT_FAMILY: named.compute_scale})
    # open choices fixed as the named fit's search picked them, so every fit sees one config
    configs = {r.name: plan_for(r, named.apply(cluster_for(r))).config for r in runs}
    rows, scales = [], {}
    for family in dict.fromkeys(r.family for r in runs):
        held = [r for r in runs if r.family == family]
        fit_obs = korthikanti + [_observation(r, configs[r.name]) for r in runs
                                 if r.family != family]
        fit = _fit(fit_obs, base)
        scales[family] = fit.compute_scale
        rows += _predict(held, fit)
    lofo = _report("leave one framework family out (fit on Korthikanti + the other "
                   "families' published runs)", len(korthikanti) + len(runs), rows, scales)
    return fixed, lofo
