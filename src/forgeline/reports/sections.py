"""Turn stage results into display sections (label/value tables), shared by HTML and Markdown.

``prepare`` and ``train`` get curated labels; every other stage (and any key the
curated lists do not know) is rendered generically, so a new stage never breaks it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from forgeline.reports.formatting import MISSING, generic_rows, number, value_text


@dataclass(frozen=True)
class Table:
    """A titled two-column (label, value) table."""

    title: str
    rows: list[tuple[str, str]]


@dataclass(frozen=True)
class Image:
    """A PNG a stage wrote; ``path`` is relative to the run folder."""

    alt: str
    path: str
    png: bytes = field(repr=False)


@dataclass(frozen=True)
class Section:
    """One stage's display: headline facts, then tables, then images."""

    stage: str
    title: str
    facts: list[str] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    images: list[Image] = field(default_factory=list)
    code: list[tuple[str, str]] = field(default_factory=list)
    """Titled verbatim blocks (e.g. a DeepSpeed config as JSON), shown as they are."""


_PREPARE_FIELDS: tuple[tuple[str, str], ...] = (
    ("Source", "source"),
    ("Source files", "source_files"),
    ("Source size", "source_bytes"),
    ("Window (tokens)", "window_tokens"),
    ("Train samples", "train_samples"),
    ("Validation samples", "validation_samples"),
    ("Bytes written", "bytes_written"),
    ("Fingerprint", "fingerprint"),
    ("Manifest", "manifest_url"),
    ("Wall time", "wall_s"),
)

_TRAIN_FIELDS: tuple[tuple[str, str], ...] = (
    ("Parameters", "num_params"),
    ("Workers", "workers"),
    ("ZeRO stage", "zero_stage"),
    ("Steps", "steps"),
    ("Micro-batch size", "micro_batch_size"),
    ("Gradient accumulation steps", "grad_accum_steps"),
    ("Throughput (tokens/s)", "tokens_per_s"),
    ("Wall time", "wall_s"),
    ("Train loss, first step", "train_loss_first"),
    ("Train loss, final step", "train_loss_final"),
    ("Validation loss, before", "val_loss_before"),
    ("Validation loss, after", "val_loss_after"),
    ("Validation perplexity, before", "val_ppl_before"),
    ("Validation perplexity, after", "val_ppl_after"),
    ("Model", "model_url"),
)


def _curated_rows(
    result: dict[str, Any], fields: tuple[tuple[str, str], ...]
) -> list[tuple[str, str]]:
    return [(label, value_text(key, result[key])) for label, key in fields if key in result]


def _leftover_table(result: dict[str, Any], known: set[str]) -> list[Table]:
    rows = generic_rows(result, skip=known)
    return [Table("Other fields", rows)] if rows else []


def _positive(value: Any) -> float | None:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and value > 0
    return float(value) if ok else None


def perplexity_ratio(train: dict[str, Any]) -> float | None:
    """Validation perplexity after / before training; None when either is missing."""
    before, after = _positive(train.get("val_ppl_before")), _positive(train.get("val_ppl_after"))
    return after / before if before is not None and after is not None else None


def prepare_section(result: dict[str, Any]) -> Section:
    """The dataset summary."""
    facts = []
    if "train_samples" in result or "validation_samples" in result:
        train = value_text("train_samples", result.get("train_samples"))
        val = value_text("validation_samples", result.get("validation_samples"))
        facts.append(f"{train} training and {val} validation samples")
    tables = [Table("Summary", _curated_rows(result, _PREPARE_FIELDS))]
    tables += _leftover_table(result, {key for _, key in _PREPARE_FIELDS})
    return Section("prepare", "Dataset", facts, [t for t in tables if t.rows])


def train_section(result: dict[str, Any]) -> Section:
    """Training summary: perplexity before → after first, then run and model tables."""
    facts = []
    before, after = result.get("val_ppl_before"), result.get("val_ppl_after")
    if before is not None or after is not None:
        fact = (
            f"Validation perplexity {value_text('val_ppl_before', before)} → "
            f"{value_text('val_ppl_after', after)}"
        )
        ratio = perplexity_ratio(result)
        if ratio is not None:
            fact += f" (after / before = {number(ratio)})"
        facts.append(fact)
    rows = _curated_rows(result, _TRAIN_FIELDS)
    ratio = perplexity_ratio(result)
    if ratio is not None:
        rows.append(("Validation perplexity, after / before", number(ratio)))
    tables = [Table("Run", rows)]
    config = result.get("architecture")
    if isinstance(config, dict) and config:
        tables.append(Table("Model config", generic_rows(config)))
    known = {key for _, key in _TRAIN_FIELDS} | {"architecture"}
    tables += _leftover_table(result, known)
    return Section("train", "Training", facts, [t for t in tables if t.rows])


_QUANTIZE_FIELDS: tuple[tuple[str, str], ...] = (
    ("Scheme option (all layers when mixed precision is off)", "scheme"),
    ("Layers per scheme", "scheme_counts"),
    ("Budget met", "budget_met"),
    ("Validation perplexity, float", "val_ppl_float"),
    ("Validation perplexity, quantized", "val_ppl_quantized"),
    ("Relative perplexity increase", "rel_ppl_increase"),
    ("Float size", "float_bytes"),
    ("Stored size", "stored_bytes"),
    ("Size ratio", "size_ratio"),
    ("Linear-weight size ratio", "linear_size_ratio"),
    ("Quantization time", "quantize_s"),
    ("Wall time", "wall_s"),
    ("Quantized model", "model_url"),
)


def _percent(value: Any) -> str:
    return f"{100 * value:+.2f} %" if isinstance(value, int | float) else MISSING


def quantize_section(
    result: dict[str, Any], layer_rows: list[dict[str, Any]], plot: Image | None
) -> Section:
    """Size and perplexity first; then latency, and each layer's precision and sensitivity."""
    facts = []
    if "size_ratio" in result and "val_ppl_float" in result:
        counts = ", ".join(f"{n} × {s}" for s, n in (result.get("scheme_counts") or {}).items())
        facts.append(
            f"{number(result['size_ratio'])}× smaller{f' ({counts})' if counts else ''}; "
            "validation perplexity "
            f"{number(result['val_ppl_float'])} → {number(result.get('val_ppl_quantized'))} "
            f"({_percent(result.get('rel_ppl_increase'))})"
        )
    shown = {**result, "rel_ppl_increase": _percent(result.get("rel_ppl_increase"))}
    tables = [Table("Summary", [(label, value_text(key, shown[key]))
                                for label, key in _QUANTIZE_FIELDS if key in result])]
    latency, ratio = result.get("latency_ms") or {}, result.get("latency_ratio") or {}
    tables.append(Table("CPU latency (ms, median)", [
        (f"batch {b}", f"float {number(latency[f'float_b{b}'])} → quantized "
                       f"{number(latency[f'quantized_b{b}'])}"
                       + (f" ({number(ratio[f'b{b}'])}× float)" if f"b{b}" in ratio else ""))
        for b in (1, 32) if f"float_b{b}" in latency and f"quantized_b{b}" in latency
    ]))
    sensitivity: dict[str, list[str]] = {}
    for row in layer_rows:
        loss = row.get("rel_metric_loss")
        sensitivity.setdefault(str(row.get("layer")), []).append(
            f"{row.get('scheme')} {_percent(loss)}"
        )
    assignment = result.get("assignment") or {}
    tables.append(Table("Per-layer precision (sensitivity: relative perplexity increase "
                        "when only that layer is quantized)", [
        (layer, f"{scheme}" + (f" · {'; '.join(sensitivity[layer])}"
                                if layer in sensitivity else ""))
        for layer, scheme in assignment.items()
    ]))
    known = {key for _, key in _QUANTIZE_FIELDS} | {"latency_ms", "latency_ratio", "assignment"}
    tables += _leftover_table(result, known)
    return Section("quantize", "Quantization", facts, [t for t in tables if t.rows],
                   [plot] if plot else [])


_SEARCH_FIELDS: tuple[tuple[str, str], ...] = (
    ("Cluster", "cluster"),
    ("Devices", "devices"),
    ("Workers", "num_workers"),
    ("ZeRO stage", "zero_stage"),
    ("Micro-batch size", "micro_batch_size"),
    ("Gradient accumulation steps", "grad_accum_steps"),
    ("Activation recompute", "activation_checkpointing"),
    ("Predicted step time", "predicted_step_s"),
    ("Predicted memory per device", "predicted_memory_bytes"),
    ("Bound by", "bound_by"),
    ("Candidates evaluated", "candidates_evaluated"),
    ("Search time", "search_s"),
    ("Plan file", "plan_url"),
)


def search_section(result: dict[str, Any]) -> Section:
    """The chosen plan's fields, every ranked plan, and the DeepSpeed config verbatim."""
    import json

    from forgeline.reports.cards import plan_text

    tables = [Table("Chosen plan", _curated_rows(result, _SEARCH_FIELDS))]
    ranking = result.get("ranking") or []
    tables.append(Table("Ranking (predicted step time; memory per device)", [
        (f"#{i} {plan_text(p.get('config') or {})}",
         f"{value_text('step_time_s', p.get('step_time_s'))}; "
         f"{value_text('memory_bytes', p.get('memory_bytes'))}")
        for i, p in enumerate(ranking, 1)
    ]))
    known = {key for _, key in _SEARCH_FIELDS} | {"ranking", "deepspeed_config"}
    tables += _leftover_table(result, known)
    code = []
    if isinstance(result.get("deepspeed_config"), dict):
        code.append(("DeepSpeed config", json.dumps(result["deepspeed_config"], indent=2,
                                                    sort_keys=True)))
    return Section("search", "Strategy search", tables=[t for t in tables if t.rows],
                   code=code)


def generic_section(stage: str, result: Any) -> Section:
    """Any stage as one flattened key/value table."""
    if not isinstance(result, dict):
        return Section(stage, stage, tables=[Table("Result", [("value", value_text("", result))])])
    rows = generic_rows(result) or [("(no fields)", MISSING)]
    return Section(stage, stage, tables=[Table("Result", rows)])
