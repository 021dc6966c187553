"""Gather one run's record, metrics and artifacts into the document both renderers draw."""

from __future__ import annotations

import json
import posixpath
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from forgeline import storage
from forgeline.errors import StorageError
from forgeline.reports.artifacts import Artifact, list_artifacts
from forgeline.reports.cards import Card, RunFacts, build_cards
from forgeline.reports.metrics import LossCurve, load_loss_curve, read_records
from forgeline.reports.sections import (
    Image,
    Section,
    generic_section,
    prepare_section,
    quantize_section,
    search_section,
    train_section,
)
from forgeline.runs import RunLayout

REPORT_STAGE = "report"
"""The report's own folder (and stage name) under the run; never part of its contents."""

PIPELINE_ORDER: tuple[str, ...] = ("prepare", "search", "cache", "train", "checkpoint", "quantize",
                                   "export")
CACHE_STATS_FILE = "cache_stats.json"
"""Written by the train stage's cache statistics callback under ``train/``."""
"""Stages in pipeline order; unknown stages follow, alphabetically."""


@dataclass
class ReportDocument:
    """Everything a report shows, already formatted."""

    run_id: str
    root: str
    run_url: str
    generated_at: str
    stages: list[str]
    dataset: Section | None
    training: Section | None
    others: list[Section]
    curve: LossCurve
    artifacts: list[Artifact] = field(default_factory=list)
    cards: list[Card] = field(default_factory=list)
    """One summary card per stage, shown first; the sections are the raw tables below."""

    @property
    def artifacts_total_bytes(self) -> int:
        return sum(a.size_bytes for a in self.artifacts)


def ordered_stages(stages: dict[str, Any]) -> list[str]:
    """Known stages in pipeline order, then the rest by name; the report's own stage left out."""
    names = [s for s in stages if s != REPORT_STAGE]
    known = [s for s in PIPELINE_ORDER if s in names]
    return known + sorted(s for s in names if s not in PIPELINE_ORDER)


def read_run_record(layout: RunLayout) -> dict[str, Any]:
    """``run.json`` as a dict; ``StorageError`` naming ``run_id`` if it is missing or unreadable."""
    fs, path = storage.filesystem(layout.run_json_url, "root")
    where = f"{layout.run_json_url} (run {layout.run_id!r} under root {layout.root!r})"
    if not fs.exists(path):
        raise StorageError("run_id", layout.url, f"no run.json here: {where}")
    try:
        record = storage.read_json(layout.run_json_url)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise StorageError("run_id", layout.url, f"run.json is not valid JSON: {exc}") from exc
    if not isinstance(record, dict) or not isinstance(record.get("stages", {}), dict):
        raise StorageError(
            "run_id", layout.url, "run.json must be an object with a 'stages' object"
        )
    return record


def _quantize_extras(result: dict[str, Any], run_url: str) -> tuple[list[dict], Image | None]:
    """The per-layer sensitivity rows and plot the quantize stage wrote, where readable."""
    rows: list[dict[str, Any]] = []
    report_url = result.get("report_url")
    if isinstance(report_url, str) and storage.exists(report_url):
        from forgeline.quantize.report import QuantizeReport

        rows = QuantizeReport.model_validate(storage.read_json(report_url)).sensitivity_table()
    plot = None
    plot_url = result.get("sensitivity_plot_url")
    if isinstance(plot_url, str) and storage.exists(plot_url):
        fs, path = storage.filesystem(plot_url)
        rel = plot_url[len(run_url) + 1:] if plot_url.startswith(run_url + "/") else plot_url
        plot = Image("Per-layer sensitivity", rel, fs.cat_file(path))
    return rows, plot


def _checkpoint_stats(url: Any) -> tuple[list[dict[str, float]], int, float | None]:
    """``Manifest.stats`` of every rank of every committed checkpoint, how many steps, and
    the bytes of chunks on the root (a tiered store's manifests count its fast tier's raw
    chunks; the root holds them compressed)."""
    if not isinstance(url, str):
        return [], 0, None
    from forgeline.checkpoint import CheckpointReader, committed_steps
    from forgeline.checkpoint.format import CHUNKS_DIR

    committed = committed_steps(url)
    reader = CheckpointReader(url)
    stats = []
    for step, world in sorted(committed.items()):
        for rank in range(world):
            try:
                stats.append(dict(reader.manifest(step, rank).stats))
            except FileNotFoundError:  # removed by retention while we read
                continue
    fs, root = storage.filesystem(url)
    chunks = posixpath.join(root, CHUNKS_DIR)
    stored = float(fs.du(chunks)) if committed and fs.exists(chunks) else None
    return stats, len(committed), stored


def _json_or_none(url: Any) -> Any:
    return storage.read_json(url) if isinstance(url, str) and storage.exists(url) else None


def gather_facts(layout: RunLayout, stages: dict[str, Any]) -> RunFacts:
    """What the cards need beyond ``run.json``: metrics, manifests, failure statistics, cache
    and quantize files."""
    train = stages.get("train") if isinstance(stages.get("train"), dict) else {}
    quantize = stages.get("quantize") if isinstance(stages.get("quantize"), dict) else {}
    checkpoint_stats, kept, stored = _checkpoint_stats(train.get("checkpoint_url"))
    cache = _json_or_none(storage.join(layout.stage_url("train"), CACHE_STATS_FILE))
    from forgeline.checkpoint.format import FAILURE_STATS_FILE

    checkpoint_url = train.get("checkpoint_url")
    failures = _json_or_none(storage.join(checkpoint_url, FAILURE_STATS_FILE)) \
        if isinstance(checkpoint_url, str) else None
    return RunFacts(
        stages=stages, records=read_records(layout.metrics_url),
        checkpoint_stats=checkpoint_stats, checkpoints_kept=kept,
        checkpoint_stored_bytes=stored,
        cache_stats=cache.get("latest") if isinstance(cache, dict) else None,
        quantize_report=_json_or_none(quantize.get("report_url")),
        failure_stats=failures if isinstance(failures, dict) else None,
    )


def _stage_section(stage: str, result: Any, run_url: str) -> Section:
    if isinstance(result, dict) and stage == "search":
        return search_section(result)
    if isinstance(result, dict) and stage == "quantize":
        return quantize_section(result, *_quantize_extras(result, run_url))
    if isinstance(result, dict) and stage == "prepare":
        return prepare_section(result)
    if isinstance(result, dict) and stage == "train":
        return train_section(result)
    return generic_section(stage, result)


def build_document(layout: RunLayout) -> ReportDocument:
    """Read the run (failing before any write if it is not there) into a ``ReportDocument``."""
    record = read_run_record(layout)
    results: dict[str, Any] = record.get("stages") or {}
    stages = ordered_stages(results)
    sections = {stage: _stage_section(stage, results[stage], layout.url) for stage in stages}
    return ReportDocument(
        run_id=str(record.get("run_id") or layout.run_id),
        root=str(record.get("root") or layout.root),
        run_url=layout.url,
        generated_at=datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
        stages=stages,
        dataset=sections.pop("prepare", None),
        training=sections.pop("train", None),
        others=list(sections.values()),
        curve=load_loss_curve(layout.metrics_url),
        artifacts=list_artifacts(layout.url, exclude_dirs=(REPORT_STAGE,)),
        cards=build_cards(gather_facts(layout, results)),
    )
