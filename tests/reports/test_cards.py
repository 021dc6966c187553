"""The report's summary cards on a real tiny run (prepare → search → train with checkpoints
and the cache → quantize → report, then export): every card shows real values, no raw
config key is a row of its own, and headless Chromium renders the page."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from forgeline.reports.document import build_document
from forgeline.reports.formatting import MISSING
from forgeline.runs import RunLayout

pytestmark = pytest.mark.slow

CARDS = ("search", "train", "checkpoint", "cache", "quantize")


@pytest.fixture(scope="module")
def tiny_run(tiny_dag_run) -> RunLayout:
    """The session's tiny end-to-end DAG run (cache and checkpoints on, then exported)."""
    return tiny_dag_run.layout


def test_every_card_shows_real_values(tiny_run: RunLayout) -> None:
    doc = build_document(tiny_run)
    cards = {card.stage: card for card in doc.cards}
    assert tuple(cards) == CARDS
    for card in cards.values():
        assert card.headline and card.rows, card.stage
        for label, value in card.rows:
            assert value and not value.startswith(MISSING), (card.stage, label, value)
    rows = {stage: dict(card.rows) for stage, card in cards.items()}
    assert "measured" in rows["search"]["Step time"]
    assert "measured peak" in rows["search"]["Memory per worker"]
    assert len(cards["search"].grid.rows) == 3 and cards["search"].notes
    assert "tokens/s" in rows["train"]["Throughput"] and cards["train"].plot
    assert cards["checkpoint"].headline.startswith("2 saves")
    assert "median" in rows["checkpoint"]["Stall per save"]
    assert "chunk references" in rows["checkpoint"]["Dedup ratio"]
    assert "on the checkpoint root" in rows["checkpoint"]["Bytes stored vs raw"]
    assert "sample reads" in rows["cache"]["Served from the cache"]
    assert "× float" in rows["quantize"]["Latency vs float"]
    assert " × " in rows["quantize"]["Scheme mix"] and "keys" not in rows["quantize"]["Scheme mix"]
    assert cards["quantize"].notes  # why layers kept (or did not need) more precision


def test_no_raw_config_key_is_a_row(tiny_run: RunLayout) -> None:
    doc = build_document(tiny_run)
    for section in [doc.dataset, doc.training, *doc.others]:
        for table in section.tables:
            for label, _ in table.rows:
                assert not label.startswith(("deepspeed_config", "ranking.")), label
    html = (tiny_run_path(tiny_run) / "report" / "report.html").read_text()
    top = html.split("<h2>Details</h2>")[0]
    assert "deepspeed_config" not in top and "What each stage did" in top
    assert html.count('<section class="card"') == len(CARDS)
    markdown = (tiny_run_path(tiny_run) / "report" / "report.md").read_text()
    for title in ("Parallel strategy search", "Training", "Checkpoints", "Data cache",
                  "Quantization"):
        assert f"### {title}" in markdown


def test_the_run_exports_load_in_standard_tools(tiny_run: RunLayout) -> None:
    import torch
    from safetensors.torch import load_file

    transformers = pytest.importorskip("transformers")
    from forgeline.train.model import DecoderLM, ModelConfig

    stages = tiny_run.load()["stages"]
    export, train = stages["export"], stages["train"]
    assert export["skipped"] == {} and export["checkpoint_step"] == 12
    run = tiny_run_path(tiny_run)
    shape = {**train["architecture"]["shape"], "seq_len": train["architecture"]["seq_len"]}
    model = DecoderLM(ModelConfig(**shape)).eval()
    model.load_state_dict(load_file(run / "train" / "model.safetensors"))
    hf = transformers.GPT2LMHeadModel.from_pretrained(run / "export" / "hf").eval()
    tokens = torch.randint(0, 256, (2, train["architecture"]["seq_len"]))
    with torch.no_grad():
        torch.testing.assert_close(hf(tokens).logits, model(tokens), atol=1e-4, rtol=1e-4)
    assert (run / "export" / "plan" / "ds_config.json").exists()
    assert (run / "export" / "checkpoint" / "dcp" / ".metadata").exists()
    # the quantized model as compressed-tensors: that library's model gives our logits
    from forgeline.quantize import load_quantized
    from forgeline.quantize.runtime.hf_compressed import load_compressed_tensors

    def skeleton() -> DecoderLM:
        return DecoderLM(ModelConfig(**shape))

    theirs = load_compressed_tensors(export["quantized_url"], skeleton)
    ours = load_quantized(stages["quantize"]["model_url"], skeleton, backend="dequant")
    with torch.no_grad():
        torch.testing.assert_close(theirs(tokens), ours(tokens), atol=1e-4, rtol=1e-4)


@pytest.mark.skipif(shutil.which("chromium") is None, reason="needs Debian's chromium")
def test_report_screenshot_in_headless_chromium(tiny_run: RunLayout, tmp_path) -> None:
    html = tiny_run_path(tiny_run) / "report" / "report.html"
    png = tmp_path / "report.png"
    subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu",
                    "--hide-scrollbars", "--window-size=1200,2600", f"--screenshot={png}",
                    html.as_uri()], check=True, capture_output=True, timeout=120)
    data = png.read_bytes()
    assert data.startswith(b"\x89PNG") and len(data) > 50_000  # a page, not a blank


def tiny_run_path(layout: RunLayout):
    from pathlib import Path

    return Path(layout.url.removeprefix("file://"))


def test_the_quantize_card_says_what_the_latency_objective_changed() -> None:
    from forgeline.reports.cards import quantize_card

    quantize = {"scheme_counts": {"w8a8": 2, "fp32": 1}, "size_ratio": 2.0,
                "rel_ppl_increase": 0.001, "latency_met": False,
                "latency_changes": {
                    "a.fc1": "int4_rtn → w8a8: kernel fbgemm_int8_static beat the float op",
                    "a.fc2": "int4_rtn → w8a8: kernel fbgemm_int8_static beat the float op",
                    "tok": "int4_rtn → fp32: its kernel (dequant) was slower"}}
    notes = quantize_card(quantize, None).notes
    assert any(n.startswith("Latency objective: 2 layers int4_rtn → w8a8 (a.fc1, a.fc2)")
               for n in notes)
    assert any("1 layer int4_rtn → fp32 (tok)" in n for n in notes)
    assert any("still slower than float" in n for n in notes)


def test_the_checkpoint_card_counts_the_bytes_on_the_root_when_known() -> None:
    from forgeline.reports.cards import RunFacts, checkpoint_card

    stats = [{"raw_bytes": 8e6, "written_bytes": 8e6, "chunks": 2.0, "chunks_written": 2.0}]
    records = [{"checkpoint_step": 5, "checkpoint_blocked_s": 0.01}]
    train = {"checkpoint_url": "file:///ckpt"}
    for stored, shown in ((2e6, "4.0× less"), (None, "1.0× less")):
        facts = RunFacts(stages={}, records=records, checkpoint_stats=stats, checkpoints_kept=1,
                         checkpoint_stored_bytes=stored)
        rows = dict(checkpoint_card(train, facts).rows)
        assert shown in rows["Bytes stored vs raw"]


def test_the_checkpoint_card_breaks_the_last_time_to_resume_down() -> None:
    from forgeline.reports.cards import RunFacts, checkpoint_card

    resumed = {"detection_s": 0.82, "restart_s": 7.95, "setup_s": 2.71, "restore_s": 0.021,
               "first_step_s": 0.13, "total_s": 11.63}
    stats = {"failures": 2, "failure_records": [
        {"step": 4, "time_to_resume": {**resumed, "total_s": 99.0}},
        {"step": 9, "time_to_resume": resumed}, {"step": 12, "time_to_resume": None}]}
    train = {"checkpoint_url": "file:///ckpt"}
    facts = RunFacts(stages={}, records=[], failure_stats=stats)
    assert dict(checkpoint_card(train, facts).rows)["Time to resume"] == (
        "11.63 s from the last report before the failure to the first step after it: "
        "detection ≤ 820 ms, Ray Train restart 7.95 s, setup 2.71 s, restore 21 ms, "
        "first step 130 ms")
    no_resume = RunFacts(stages={}, records=[], failure_stats={"failures": 0})
    assert "Time to resume" not in dict(checkpoint_card(train, no_resume).rows)
