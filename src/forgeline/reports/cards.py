"""One summary card per stage: what each optimization did for this run.

A card answers its stage's question in a headline, then a few labelled values and notes:
search (the chosen plan, predicted vs measured step time and memory, the top of the
ranking and why #1 won), training (loss, throughput), checkpoints (stall, bytes, dedup,
restore), worker health when it was on (hazard, proactive saves, drains, predicted vs
unpredicted failures), cache (hits, data wait, bytes not read) and quantization (scheme mix,
size, accuracy, latency, why layers kept more precision). Inputs are the stage results in
``run.json`` plus the files those stages wrote (``metrics.jsonl``, checkpoint manifests,
``failure_stats.json``, ``cache_stats.json``, the quantize report), gathered in
:class:`RunFacts`.
"""

from __future__ import annotations

import math
import statistics
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from forgeline.health.policy import PROACTIVE_REASONS
from forgeline.reports.formatting import MISSING, human_bytes, number, seconds


@dataclass(frozen=True)
class Grid:
    """A small table with a header row."""

    header: tuple[str, ...]
    rows: list[tuple[str, ...]]


@dataclass(frozen=True)
class Card:
    """One stage's summary: headline, labelled values, an optional grid, notes."""

    stage: str
    title: str
    headline: str
    rows: list[tuple[str, str]]
    grid: Grid | None = None
    notes: list[str] = field(default_factory=list)
    plot: bool = False
    """Show the run's loss plot in this card."""


@dataclass
class RunFacts:
    """Everything the cards read, already loaded from storage."""

    stages: dict[str, Any]
    records: list[dict[str, Any]] = field(default_factory=list)
    """``metrics.jsonl`` lines of the train stage."""
    checkpoint_stats: list[dict[str, float]] = field(default_factory=list)
    """``Manifest.stats`` of every rank of every retained checkpoint."""
    checkpoints_kept: int = 0
    checkpoint_stored_bytes: float | None = None
    """Bytes of chunks on the checkpoint root: what the kept checkpoints occupy there."""
    cache_stats: dict[str, float] | None = None
    quantize_report: dict[str, Any] | None = None
    failure_stats: dict[str, Any] | None = None
    """The checkpoint root's ``failure_stats.json`` (the FailureStatistics callback's)."""


def _num(value: Any) -> float | None:
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    return float(value) if ok else None


def _n(value: Any) -> str:
    """A number's display text; ``—`` for a missing or non-numeric value."""
    return number(value) if _num(value) is not None else MISSING


def _ms(value_s: float) -> str:
    return f"{value_s * 1000:.0f} ms" if value_s >= 0.01 else f"{value_s * 1000:.2f} ms"


def duration(value_s: float) -> str:
    """Milliseconds under a second, else ``seconds``."""
    return _ms(value_s) if value_s < 1 else seconds(value_s)


def _pct(value: float | None, signed: bool = True) -> str:
    if value is None:
        return MISSING
    return f"{100 * value:+.2f} %" if signed else f"{100 * value:.1f} %"


def plan_text(config: dict[str, Any]) -> str:
    """``2 × data parallel · ZeRO-2 · micro-batch 16 · recompute none`` from a ranked plan."""
    parts = [f"{config.get('data_parallel', 1)} × data parallel"]
    for key, label in (("tensor_parallel", "tensor"), ("pipeline_parallel", "pipeline")):
        if (config.get(key) or 1) > 1:
            parts.append(f"{config[key]} × {label} parallel")
    parts += [f"ZeRO-{config.get('zero_stage')}", f"micro-batch {config.get('micro_batch_size')}",
              f"recompute {config.get('recompute', 'none')}"]
    if config.get("offload") not in (None, "none"):
        parts.append(f"offload {config['offload']}")
    return " · ".join(parts)


def measured_step_s(train: dict[str, Any], records: list[dict[str, Any]]) -> float | None:
    """Mean optimizer-step time of the run: recorded by the train stage, else from metrics."""
    if _num(train.get("step_s")) is not None:
        return float(train["step_s"])
    timed = [(r["step"], r["time_s"]) for r in records
             if _num(r.get("time_s")) is not None and _num(r.get("step")) is not None]
    if len(timed) < 2:
        return None
    (s0, t0), (s1, t1) = timed[0], timed[-1]
    return (t1 - t0) / (s1 - s0) if s1 > s0 else None


def search_card(search: dict[str, Any], train: dict[str, Any] | None,
                records: list[dict[str, Any]]) -> Card:
    ranking = search.get("ranking") or []
    recompute = "on" if search.get("activation_checkpointing") else "off"
    headline = (f"{search.get('num_workers')} workers · ZeRO-{search.get('zero_stage')} · "
                f"micro-batch {search.get('micro_batch_size')} × {search.get('grad_accum_steps')}"
                f" accumulation · recompute {recompute}")
    predicted = _num(search.get("predicted_step_s"))
    measured = measured_step_s(train or {}, records) if train else None
    step = f"predicted {_n(predicted)} s" if predicted is not None else MISSING
    if measured is not None:
        step += f" · measured {_n(measured)} s"
        if predicted:
            step += f" (measured ÷ predicted = {measured / predicted:.2f})"
    else:
        step += " · not trained yet"
    memory = f"predicted {human_bytes(search['predicted_memory_bytes'])}" if _num(
        search.get("predicted_memory_bytes")) is not None else MISSING
    rss = _num((train or {}).get("peak_rss_bytes"))
    if rss is not None:
        memory += (f" · measured peak {human_bytes(rss)} resident (the whole worker process: "
                   "Python, Ray and DeepSpeed included)")
    rows = [("Step time", step), ("Memory per worker", memory),
            ("Search", f"{search.get('candidates_evaluated')} candidates on "
                       f"{search.get('cluster')} in {seconds(float(search.get('search_s', 0)))}"),
            ("Bound by", str(search.get("bound_by", MISSING)))]
    grid = Grid(("#", "plan", "predicted step", "memory / device", "bound by"), [
        (str(i), plan_text(p.get("config") or {}), f"{_n(p['step_time_s'])} s",
         human_bytes(p["memory_bytes"]), str(p.get("bound_by", "")))
        for i, p in enumerate(ranking[:3], 1)
    ]) if ranking else None
    notes = []
    if len(ranking) >= 2:
        first, second = ranking[0]["step_time_s"], ranking[1]["step_time_s"]
        count = search.get("candidates_evaluated")
        notes.append(f"#1 won: the shortest predicted step among the {count} candidates "
                     f"that fit in memory, {100 * (second - first) / second:.1f} % "
                     f"faster than #2 (ties go to less memory).")
    elif ranking:
        notes.append("#1 is the only candidate that fits in memory.")
    return Card("search", "Parallel strategy search", headline, rows, grid, notes)


def train_card(train: dict[str, Any], records: list[dict[str, Any]]) -> Card:
    before, after = _num(train.get("val_loss_before")), _num(train.get("val_loss_after"))
    headline = (f"Validation loss {_n(before)} → {_n(after)} "
                f"(perplexity {_n(train.get('val_ppl_before'))} → "
                f"{_n(train.get('val_ppl_after'))}) in {train.get('steps')} steps"
                if before is not None and after is not None else "Trained")
    step_s = measured_step_s(train, records)
    throughput = f"{train['tokens_per_s']:,.0f} tokens/s" if _num(
        train.get("tokens_per_s")) is not None else MISSING
    if step_s is not None:
        throughput += f" · {_n(step_s)} s per optimizer step"
    arch = train.get("architecture") or {}
    shape = arch.get("shape") or arch  # older runs: the ModelConfig itself
    name = f"{arch['name']} · " if arch.get("name") else ""
    rows = [
        ("Throughput", throughput),
        ("Train loss", f"{_n(train.get('train_loss_first'))} first logged → "
                       f"{_n(train.get('train_loss_final'))} final"),
        ("Model", f"{name}{_n(train.get('num_params', 0))} parameters"
                  + (f" · {shape['n_layers']} layers × {shape.get('d_model')} wide"
                     if "n_layers" in shape else "")
                  + f" · context {arch.get('seq_len', shape.get('seq_len'))}"),
        ("Run", f"{train.get('workers')} Ray Train workers · ZeRO-{train.get('zero_stage')} · "
                f"micro-batch {train.get('micro_batch_size')} × {train.get('grad_accum_steps')}"),
        ("Wall time", seconds(float(train.get("wall_s", 0))) + " (Ray start-up and validation "
                      "included)"),
    ]
    return Card("train", "Training", headline, rows, plot=True)


def checkpoint_card(train: dict[str, Any], facts: RunFacts) -> Card | None:
    saves = [r for r in facts.records if _num(r.get("checkpoint_step")) is not None]
    if not train.get("checkpoint_url") and not saves:
        return None
    stalls = [float(r["checkpoint_blocked_s"]) for r in saves
              if _num(r.get("checkpoint_blocked_s")) is not None]
    stall = (f"median {_ms(statistics.median(stalls))}, max {_ms(max(stalls))} "
             "(training time each save blocked)" if stalls else MISSING)
    headline = f"{len(saves)} saves, {facts.checkpoints_kept} kept"
    if stalls:
        headline += f" · {_ms(statistics.median(stalls))} stall per save"
    raw = sum(s.get("raw_bytes", 0.0) for s in facts.checkpoint_stats)
    written = (facts.checkpoint_stored_bytes if facts.checkpoint_stored_bytes is not None
               else sum(s.get("written_bytes", 0.0) for s in facts.checkpoint_stats))
    chunks = sum(s.get("chunks", 0.0) for s in facts.checkpoint_stats)
    new_chunks = sum(s.get("chunks_written", 0.0) for s in facts.checkpoint_stats)
    rows = [("Stall per save", stall)]
    if raw:
        rows.append(("Bytes stored vs raw",
                     f"{human_bytes(written)} on the checkpoint root for {human_bytes(raw)} of "
                     f"training state ({raw / max(written, 1):.1f}× less; the "
                     f"{facts.checkpoints_kept} kept checkpoints, all ranks)"))
    if chunks:
        rows.append(("Dedup ratio", f"{chunks / max(new_chunks, 1):.2f} chunk references per "
                                    f"chunk stored ({int(chunks - new_chunks):,} of "
                                    f"{int(chunks):,} chunks were already stored)"))
    if _num(train.get("restore_s")) is not None:
        rows.append(("Time to restore", f"{seconds(float(train['restore_s']))} (resumed from "
                                        f"step {train.get('resumed_from_step')})"))
    else:
        rows.append(("Time to restore", "no resume in this run"))
    resumed = _last_time_to_resume(facts.failure_stats)
    if resumed is not None:
        rows.append(("Time to resume", resumed))
    store = train.get("checkpoint_url")
    return Card("checkpoint", "Checkpoints", headline, rows,
                notes=[f"Store: {store}"] if store else [])


_RESUME_PARTS = (("detection_s", "detection ≤ "), ("restart_s", "Ray Train restart "),
                 ("setup_s", "setup "), ("restore_s", "restore "), ("first_step_s", "first step "))


def _last_time_to_resume(stats: dict[str, Any] | None) -> str | None:
    """The last failure's time to resume, part by part (``FailureStatistics``); None if
    no failure was followed by a resumed step."""
    records = [r for r in (stats or {}).get("failure_records") or []
               if isinstance(r.get("time_to_resume"), dict)]
    if not records:
        return None
    parts = records[-1]["time_to_resume"]
    shown = [f"{label}{duration(float(parts[key]))}" for key, label in _RESUME_PARTS
             if _num(parts.get(key)) is not None]
    total = _num(parts.get("total_s"))
    lead = (f"{duration(total)} from the last report before the failure to the first step "
            "after it" if total is not None else "after the last failure")
    return f"{lead}: " + ", ".join(shown)


def _tier_counts(saves: list[dict[str, Any]]) -> str:
    counts = Counter(str(save.get("checkpoint_tier") or "unknown") for save in saves)
    return ", ".join(f"{n} on {tier}" for tier, n in counts.most_common())


def _failures_text(stats: dict[str, Any] | None) -> str:
    if not stats or not _num(stats.get("failures")):
        return "none recorded"
    failures = int(stats["failures"])
    predicted = int(stats.get("predicted_failures") or 0)
    return (f"{failures}: {predicted} predicted (a proactive save or hazard ≥ threshold "
            f"within the horizon before it), {failures - predicted} unpredicted")


def health_card(train: dict[str, Any], facts: RunFacts) -> Card | None:
    """Worker health (``forgeline.health``): None when it was off for this run."""
    health = train.get("health") if isinstance(train.get("health"), dict) else None
    hazards = [h for r in facts.records if "checkpoint_step" not in r
               and (h := _num(r.get("health_job_hazard"))) is not None and math.isfinite(h)]
    if health is None and not hazards:
        return None
    saves = [r for r in facts.records if _num(r.get("checkpoint_step")) is not None]
    proactive = [r for r in saves if r.get("checkpoint_proactive") is True
                 or r.get("health_save_reason") in PROACTIVE_REASONS]
    count = len(proactive) if saves else int((health or {}).get("health_proactive_saves", 0))
    drained = int(_num((health or {}).get("health_drained")) or 0)
    stats = facts.failure_stats
    hazard = (f"max {max(hazards):.2f} · mean {statistics.fmean(hazards):.2f} over "
              f"{len(hazards)} reports" if hazards else MISSING)
    tiers = _tier_counts(proactive)
    rows = [
        ("Job hazard", hazard),
        ("Proactive saves", f"{count}" + (f" (committed {tiers} when reported)"
                                          if tiers else "")),
        ("Drained nodes", f"{drained} rank{'s' * (drained != 1)} reported for draining"),
        ("Failures", _failures_text(stats)),
    ]
    mtbf = _num((stats or {}).get("unpredicted_mtbf_s"))
    if mtbf is not None:
        rows.append(("Interval plans for", f"MTBF {seconds(mtbf)} of the unpredicted "
                                           "failures (Young/Daly)"))
    if health and health.get("health_sources"):
        rows.append(("Signals", f"{health['health_sources']} · host reads "
                                f"{duration(float(health.get('health_read_s') or 0.0))} "
                                "on rank 0"))
    headline = (f"max job hazard {max(hazards):.2f} · " if hazards else "") + (
        f"{count} proactive save{'s' * (count != 1)} · {drained} drained")
    if stats and _num(stats.get("failures")):
        headline += (f" · {int(stats.get('predicted_failures') or 0)} of "
                     f"{int(stats['failures'])} failures predicted")
    return Card("health", "Worker health", headline, rows)


def cache_card(train: dict[str, Any], stats: dict[str, float] | None) -> Card | None:
    if not stats:
        return None
    hits, subs = stats.get("cache_hits", 0.0), stats.get("cache_substitutions", 0.0)
    misses, remote = stats.get("cache_misses", 0.0), stats.get("cache_remote_bytes", 0.0)
    requested = hits + subs + misses
    served = hits + subs
    share = served / requested if requested else None
    wait = stats.get("cache_wait_s_max_worker", 0.0)
    rows = [
        ("Served from the cache", f"{_pct(share, signed=False)} of {int(requested):,} sample "
                                  f"reads ({int(hits):,} hits + {int(subs):,} substitutions)"),
        ("Substitution rate", f"{_pct(subs / requested if requested else None, signed=False)}"
                              " (a miss replaced by an important cached sample)"),
        ("Data wait", f"{duration(wait)} on the slowest worker "
                      f"({duration(stats.get('cache_wait_s', 0.0))} summed over "
                      f"{int(stats.get('workers', 0))} workers)"),
        ("Read from storage", f"{human_bytes(remote)} for {int(misses):,} samples"),
    ]
    if misses:
        rows.append(("Not read from storage",
                     f"≈ {human_bytes(served * remote / misses)} ({int(served):,} samples × "
                     f"{human_bytes(remote / misses)} per sample read)"))
    headline = (f"{_pct(share, signed=False)} of samples from the cache · {duration(wait)} "
                "data wait")
    return Card("cache", "Data cache", headline, rows)


def _mix(counts: dict[str, int]) -> str:
    return ", ".join(f"{n} × {s}" for s, n in sorted(counts.items(), key=lambda kv: -kv[1]))


def _why_higher_precision(report: dict[str, Any] | None) -> list[str]:
    """Why any layer stayed above the ladder's smallest scheme (the mixed-precision steps)."""
    mixed = (report or {}).get("mixed_precision")
    notes = [f"{layer['name']}: {note}" for layer in (report or {}).get("layers", [])
             for note in layer.get("notes", [])]
    if not mixed:
        return notes
    budget = float(mixed.get("max_rel_metric_loss", 0.0))
    steps = mixed.get("steps") or []
    promoted = [(steps[i - 1], s) for i, s in enumerate(steps) if i and s.get("promoted")]
    if not promoted and steps:
        notes.insert(0, f"No layer needed more precision: with every layer at the smallest "
                        f"scheme the perplexity rose {_pct(steps[0]['rel_metric_loss'])} in "
                        f"the mixed-precision search's own evaluation, within the "
                        f"{_pct(budget)} budget.")
    for before, step in promoted:
        notes.append(f"{step['promoted']} → {step['to_scheme']}: the model was at "
                     f"{_pct(before['rel_metric_loss'])} (budget {_pct(budget)}) and this "
                     f"was the most sensitive layer left; after: {_pct(step['rel_metric_loss'])}.")
    return notes


def _latency_notes(quantize: dict[str, Any]) -> list[str]:
    """What the latency objective changed (grouped by move), and whether the model met it."""
    moves: dict[str, list[str]] = {}
    for layer, reason in (quantize.get("latency_changes") or {}).items():
        moves.setdefault(reason.split(":", 1)[0], []).append(layer)
    notes = [f"Latency objective: {len(layers)} layer{'s' * (len(layers) > 1)} {move} "
             f"({', '.join(sorted(layers)[:3])}{' …' if len(layers) > 3 else ''}): the float "
             "op was faster than the accuracy choice's kernel" for move, layers in moves.items()]
    if quantize.get("latency_met") is False:
        notes.append("The quantized model is still slower than float at some batch size here "
                     "(see Latency vs float).")
    return notes


def quantize_card(quantize: dict[str, Any], report: dict[str, Any] | None) -> Card:
    counts = quantize.get("scheme_counts") or {}
    mix = _mix(counts) if counts else MISSING
    ratio = _num(quantize.get("size_ratio"))
    headline = (f"{_n(ratio)}× smaller ({mix}) · perplexity "
                f"{_pct(_num(quantize.get('rel_ppl_increase')))}")
    latency = quantize.get("latency_ms") or {}
    ratios = quantize.get("latency_ratio") or {}
    speed = []
    for b in (1, 32):
        f, q = _num(latency.get(f"float_b{b}")), _num(latency.get(f"quantized_b{b}"))
        if f and q is not None:
            speed.append(f"batch {b}: {_n(f)} → {_n(q)} ms ({_n(ratios.get(f'b{b}'))}× float)")
    budget = (report or {}).get("mixed_precision", {}) or {}
    accuracy = (f"perplexity {_n(quantize.get('val_ppl_float'))} → "
                f"{_n(quantize.get('val_ppl_quantized'))} "
                f"({_pct(_num(quantize.get('rel_ppl_increase')))}")
    if budget:
        met = "met" if quantize.get("budget_met") else "not met"
        accuracy += f"; budget {_pct(budget.get('max_rel_metric_loss'))}, {met}"
    accuracy += ")"
    rows = [
        ("Scheme mix", f"{mix} layers"),
        ("Size", f"{human_bytes(quantize.get('float_bytes', 0))} → "
                 f"{human_bytes(quantize.get('stored_bytes', 0))} ({_n(ratio)}× smaller)"),
        ("Accuracy", accuracy),
        ("Latency vs float", " · ".join(speed) if speed else MISSING),
    ]
    if budget:
        rows.append(("Scheme choice", f"mixed precision: every layer starts at the smallest "
                     f"scheme and the most sensitive is promoted until the budget holds "
                     f"(option scheme={quantize.get('scheme')} applies when mixed precision "
                     "is off)"))
    return Card("quantize", "Quantization", headline, rows,
                notes=_why_higher_precision(report) + _latency_notes(quantize))


def build_cards(facts: RunFacts) -> list[Card]:
    """The cards of the stages this run has, in pipeline order."""
    stages = facts.stages
    train = stages.get("train") if isinstance(stages.get("train"), dict) else None
    cards: list[Card | None] = []
    if isinstance(stages.get("search"), dict):
        cards.append(search_card(stages["search"], train, facts.records))
    if train is not None:
        cards += [train_card(train, facts.records), checkpoint_card(train, facts),
                  health_card(train, facts), cache_card(train, facts.cache_stats)]
    if isinstance(stages.get("quantize"), dict):
        cards.append(quantize_card(stages["quantize"], facts.quantize_report))
    return [c for c in cards if c is not None]
