"""build_report on fake runs written with forgeline's own storage helpers (memory:// and file://)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import fsspec
import pytest

from forgeline import storage
from forgeline.errors import StorageError
from forgeline.reports import LOSS_PLOT_NAME, ReportResult, build_report, report_url
from forgeline.runs import RunLayout

PREPARE = {
    "manifest_url": "memory://x/prepare/manifest.json",
    "fingerprint": "f00dfeed",
    "source": "python-stdlib",
    "source_files": 42,
    "source_bytes": 1_234_567,
    "window_tokens": 256,
    "train_samples": 900,
    "validation_samples": 100,
    "bytes_written": 2_345_678,
    "wall_s": 3.25,
}

TRAIN = {
    "model_url": "memory://x/train/model.safetensors",
    "architecture": {"n_layers": 2, "d_model": 64, "n_heads": 4, "seq_len": 256, "vocab_size": 256},
    "num_params": 123_456,
    "workers": 2,
    "zero_stage": 2,
    "steps": 40,
    "micro_batch_size": 8,
    "grad_accum_steps": 2,
    "train_loss_first": 5.6,
    "train_loss_final": 2.1,
    "val_loss_before": 5.52,
    "val_ppl_before": 249.6,
    "val_loss_after": 2.53,
    "val_ppl_after": 12.48,
    "tokens_per_s": 54_321.0,
    "wall_s": 95.0,
}

ARTIFACT_BYTES = 3_000
"""Size of ``train/model.safetensors`` in the fake run: shows as 2.9 KiB."""


def metrics_lines(steps: int = 40) -> list[str]:
    train = [
        {"stage": "train", "step": i, "loss": 5.6 / (1 + i / 8), "tokens_per_s": 5400.0}
        for i in range(steps)
    ]
    val = [
        {"stage": "train", "split": "validation", "step": 0, "val_loss": 5.52},
        {"stage": "train", "split": "validation", "step": steps, "val_loss": 2.53},
    ]
    return [json.dumps(r) for r in train + val]


@pytest.fixture
def memory_root() -> Iterator[str]:
    """A fresh ``memory://`` root, removed afterwards (the memory store is process-wide)."""
    name = f"reports-{uuid.uuid4().hex}"
    yield f"memory://{name}"
    fs = fsspec.filesystem("memory")
    if fs.exists(f"/{name}"):
        fs.rm(f"/{name}", recursive=True)


@pytest.fixture(params=["memory", "file"])
def any_root(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """One root per filesystem kind: ``memory://`` and a local temp dir."""
    if request.param == "memory":
        return request.getfixturevalue("memory_root")
    return str(tmp_path / "artifacts")


MakeRun = Callable[..., RunLayout]


@pytest.fixture
def make_run() -> MakeRun:
    """Write a fake run: stage results (via ``RunLayout.record``), metrics, artifact files."""

    def make(
        root: str,
        run_id: str = "run-1",
        stages: dict[str, Any] | None = None,
        metrics: list[str] | None = None,
    ) -> RunLayout:
        layout = RunLayout(root, run_id)
        for stage, result in (
            stages if stages is not None else {"prepare": PREPARE, "train": TRAIN}
        ).items():
            layout.record(stage, result)
        if metrics is not None:
            storage.write_bytes_atomic(layout.metrics_url, "\n".join(metrics).encode())
        storage.write_bytes_atomic(
            storage.join(layout.stage_url("train"), "model.safetensors"), b"\0" * ARTIFACT_BYTES
        )
        storage.write_json_atomic(storage.join(layout.stage_url("prepare"), "manifest.json"), {})
        return layout

    return make


def read_text(url: str) -> str:
    fs, path = storage.filesystem(url)
    return fs.cat_file(path).decode("utf-8")


def read_bytes(url: str) -> bytes:
    fs, path = storage.filesystem(url)
    return fs.cat_file(path)


PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_report_has_every_section(any_root: str, make_run: MakeRun) -> None:
    make_run(any_root, metrics=metrics_lines())
    result = build_report(any_root, "run-1")

    assert result.stages == ["prepare", "train"]
    assert result.html_url.endswith("/runs/run-1/report/report.html")
    assert result.markdown_url.endswith("/runs/run-1/report/report.md")
    assert [u.rsplit("/", 1)[-1] for u in result.plot_urls] == [LOSS_PLOT_NAME]
    assert ReportResult.model_validate_json(result.model_dump_json()) == result

    html, md = read_text(result.html_url), read_text(result.markdown_url)
    for text in (html, md):
        assert "run-1" in text
        assert "Validation perplexity 249.6 → 12.48 (after / before = 0.05)" in text
        assert "python-stdlib" in text and "f00dfeed" in text
        assert "1.2 MiB (1,234,567 bytes)" in text  # source_bytes
        assert "2.2 MiB (2,345,678 bytes)" in text  # bytes_written
        assert "ZeRO stage" in text and "54,321" in text and "95 s (1 min 35 s)" in text
        assert "vocab_size" in text and "123.5 k (123,456)" in text
        # artifacts: relative paths, human size and exact bytes; the report folder left out
        assert "train/model.safetensors" in text and "2.9 KiB" in text and "3,000" in text
        assert "metrics.jsonl" in text and "run.json" in text
        assert "report/" not in text
    assert "![Training loss vs step](train_loss.png)" in md
    assert 'src="data:image/png;base64,' in html
    assert "<script" not in html and "http" not in html  # no JS, no external assets

    png = read_bytes(result.plot_urls[0])
    assert png.startswith(PNG_MAGIC) and len(png) > 1000


def test_unknown_stage_rendered_generically(memory_root: str, make_run: MakeRun) -> None:
    quantize = {
        "scheme": "int8-weight-only",
        "size_bytes": 4096,
        "layers": {"attn": {"bits": 8}, "mlp": {"bits": 4}},
        "sensitivity": [0.1 * i for i in range(100)],
        "calibration_s": 12.5,
        "per_layer": [{"name": "a"}, {"name": "b"}],
    }
    make_run(memory_root, stages={"prepare": PREPARE, "train": TRAIN, "quantize": quantize})
    result = build_report(memory_root, "run-1")

    assert result.stages == ["prepare", "train", "quantize"]
    for text in (read_text(result.html_url), read_text(result.markdown_url)):
        assert "Stage" in text and "quantize" in text and "Details" in text
        assert "layers.attn.bits" in text and "layers.mlp.bits" in text
        assert "100 items: 0, 0.1, 0.2" in text
        assert "2 items" in text
        assert "4.0 KiB (4,096 bytes)" in text and "12.5 s" in text


def test_missing_metrics_still_builds_with_note(memory_root: str, make_run: MakeRun) -> None:
    make_run(memory_root)
    result = build_report(memory_root, "run-1")

    assert result.plot_urls == []
    fs, path = storage.filesystem(report_url(memory_root, "run-1"))
    assert not fs.exists(f"{path}/{LOSS_PLOT_NAME}")
    for text in (read_text(result.html_url), read_text(result.markdown_url)):
        assert "No metrics.jsonl was recorded" in text
    assert "data:image/png" not in read_text(result.html_url)


def test_empty_or_garbled_metrics_give_a_note(memory_root: str, make_run: MakeRun) -> None:
    make_run(memory_root, metrics=["", "not json", '{"stage": "search", "step": 1, "loss": 1}'])
    result = build_report(memory_root, "run-1")

    assert result.plot_urls == []
    md = read_text(result.markdown_url)
    assert "no training-loss points" in md and "1 unreadable line(s)" in md


def test_rebuild_drops_stale_plot_and_own_folder(memory_root: str, make_run: MakeRun) -> None:
    layout = make_run(memory_root, metrics=metrics_lines())
    first = build_report(memory_root, "run-1")
    assert first.plot_urls
    layout.record("report", first.model_dump())  # an operator may record the report stage
    fs, path = storage.filesystem(layout.metrics_url)
    fs.rm_file(path)

    second = build_report(memory_root, "run-1")
    assert second.plot_urls == [] and second.stages == ["prepare", "train"]
    fs, plot_path = storage.filesystem(first.plot_urls[0])
    assert not fs.exists(plot_path)
    assert "report/" not in read_text(second.markdown_url)


def test_missing_keys_render_what_is_there(memory_root: str, make_run: MakeRun) -> None:
    make_run(memory_root, stages={"train": {"val_ppl_before": 300.0, "steps": 5}, "prepare": {}})
    result = build_report(memory_root, "run-1")

    md = read_text(result.markdown_url)
    assert "Validation perplexity 300 → —" in md
    assert "after / before" not in md
    assert "<summary>Dataset</summary>" in md and "<summary>Training</summary>" in md
    assert "### Training" in md  # the train card, with what it has


def test_no_stages_recorded(memory_root: str) -> None:
    storage.write_json_atomic(
        storage.join(memory_root, "runs", "bare", "run.json"),
        {"run_id": "bare", "root": memory_root, "stages": {}},
    )
    result = build_report(memory_root, "bare")

    assert result.stages == []
    md = read_text(result.markdown_url)
    assert "No prepare stage recorded" in md and "No train stage recorded" in md


def test_missing_run_is_a_clear_error_and_writes_nothing(memory_root: str) -> None:
    with pytest.raises(StorageError) as info:
        build_report(memory_root, "no-such-run")

    assert info.value.field == "run_id"
    message = str(info.value)
    assert "run_id=" in message and "no-such-run" in message and "no run.json here" in message
    fs, path = storage.filesystem(report_url(memory_root, "no-such-run"))
    assert not fs.exists(path)


def test_unreadable_run_json_is_a_clear_error(memory_root: str) -> None:
    storage.write_bytes_atomic(storage.join(memory_root, "runs", "bad", "run.json"), b"{oops")
    with pytest.raises(StorageError, match="run.json is not valid JSON") as info:
        build_report(memory_root, "bad")
    assert info.value.field == "run_id"


def test_html_escapes_hostile_values(memory_root: str, make_run: MakeRun) -> None:
    hostile = '<script>alert("x")</script>'
    stages = {
        "prepare": {**PREPARE, "source": hostile},
        "<img src=x onerror=alert(1)>": {"note": hostile},
    }
    make_run(memory_root, stages=stages)
    result = build_report(memory_root, "run-1")

    html = read_text(result.html_url)
    assert "<script>" not in html and "<img src=x" not in html
    assert "&lt;script&gt;" in html and "&lt;img src=x" in html
    md = read_text(result.markdown_url)
    assert "<script>" not in md


def test_worker_health_card_when_health_was_on(memory_root: str, make_run: MakeRun) -> None:
    train = {**TRAIN, "checkpoint_url": f"{memory_root}/ckpt",
             "health": {"health_proactive_saves": 2, "health_drained": 1,
                        "health_sources": "memory,threads,disk", "health_read_s": 0.004}}
    lines = [json.dumps({"stage": "train", "step": s, "loss": 3.0,
                         "health_job_hazard": 0.1 if s < 30 else 0.7}) for s in range(1, 41)]
    lines += [json.dumps({"stage": "train", "step": s, "checkpoint_step": s,
                          "checkpoint_blocked_s": 0.01, "checkpoint_proactive": True,
                          "checkpoint_tier": tier, "health_job_hazard": 0.7})
              for s, tier in ((31, "memory"), (39, "local"))]
    make_run(memory_root, stages={"prepare": PREPARE, "train": train}, metrics=lines)
    storage.write_json_atomic(f"{memory_root}/ckpt/failure_stats.json", {
        "failures": 3, "predicted_failures": 2, "mtbf_s": 600.0, "unpredicted_mtbf_s": 1800.0})
    result = build_report(memory_root, "run-1")
    html = read_text(result.html_url)
    assert "### Worker health" in read_text(result.markdown_url)
    card = html.split('id="card-health"')[1].split("</section>")[0]
    assert "Worker health" in card
    assert "max job hazard 0.70 · 2 proactive saves · 1 drained · 2 of 3 failures predicted" \
        in card
    assert "max 0.70 · mean 0.27 over 40 reports" in card
    assert "committed 1 on memory, 1 on local when reported" in card
    assert "2 predicted" in card and "1 unpredicted" in card and "30 min" in card


def test_no_worker_health_card_when_health_was_off(memory_root: str,
                                                   make_run: MakeRun) -> None:
    make_run(memory_root, metrics=metrics_lines())
    result = build_report(memory_root, "run-1")
    assert "card-health" not in read_text(result.html_url)
    assert "Worker health" not in read_text(result.markdown_url)
