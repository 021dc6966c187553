"""The quantize pipeline stage on a DecoderLM checkpoint written the way training writes it."""

from pathlib import Path

import pytest
import torch

from forgeline import stages as pipeline_stages
from forgeline import storage
from forgeline.errors import ConfigError
from forgeline.quantize import load_quantized
from forgeline.quantize.stage import QuantizeOptions
from forgeline.runs import RunLayout
from forgeline.train import DecoderLM, ModelConfig, TrainOptions
from forgeline.train.loop import save_model


@pytest.fixture
def run_with_model(tiny_dataset, tmp_path):
    layout = RunLayout(str(tmp_path), "q")
    layout.record("prepare", tiny_dataset.model_dump(mode="json"))
    torch.manual_seed(0)
    arch = ModelConfig.preset("tiny", seq_len=64)
    config = TrainOptions(model_size="tiny").to_config(tiny_dataset.manifest_url)
    config.model = arch
    model_url = save_model(DecoderLM(arch).state_dict(), config, layout.stage_url("train"))
    layout.record("train", {"model_url": model_url})
    return layout


def test_stage_writes_a_loadable_artifact_and_honours_the_budget(run_with_model):
    # the latency objective is off: on this tiny model every quantized kernel loses to the
    # float op, so it would keep every layer float (tests/quantize/test_quantize_latency.py)
    options = QuantizeOptions(scheme="int8_wo", max_rel_ppl_increase=0.01, eval_samples=64,
                              calibration_samples=32, latency_objective="off")
    result = pipeline_stages.quantize(run_with_model, options)
    assert result.budget_met is True
    assert result.rel_ppl_increase <= 0.01 + 1e-9
    assert sum(result.scheme_counts.values()) == len(result.assignment) > 0
    assert result.size_ratio > 1 and result.stored_bytes < result.float_bytes
    assert set(result.latency_ms) == {"float_b1", "quantized_b1", "float_b32", "quantized_b32"}
    assert storage.exists(result.report_url) and storage.exists(result.sensitivity_plot_url)
    stages = run_with_model.load()["stages"]
    assert stages["quantize"]["map_url"] == result.map_url

    html = (Path(pipeline_stages.report(run_with_model).html_url[len("file://"):])).read_text()
    assert "Per-layer precision" in html and html.count("data:image/png;base64,") >= 1
    assert f"{result.size_ratio:.3g}" in html or f"{result.size_ratio:.4g}" in html

    arch = ModelConfig.preset("tiny", seq_len=64)
    reloaded = load_quantized(result.model_url, lambda: DecoderLM(arch))
    tokens = torch.randint(0, 256, (2, 64))
    again = load_quantized(result.model_url, lambda: DecoderLM(arch))
    with torch.no_grad():
        assert torch.equal(reloaded(tokens), again(tokens))


def test_fixed_scheme_without_mixed_precision(run_with_model):
    options = QuantizeOptions(scheme="int8_wo", mixed_precision=False, sensitivity=False,
                              eval_samples=32, calibration_samples=16, latency_objective="off")
    result = pipeline_stages.quantize(run_with_model, options)
    assert result.budget_met is None and result.sensitivity_plot_url is None
    assert set(result.scheme_counts) == {"int8_wo"}


def test_bad_inputs_name_the_field(run_with_model, tmp_path):
    with pytest.raises(ConfigError, match="model_url=.*no trained model"):
        pipeline_stages.quantize(run_with_model, QuantizeOptions(model_url=f"file://{tmp_path}/x"))
    with pytest.raises(ConfigError, match="scheme"):
        pipeline_stages.quantize(run_with_model, QuantizeOptions(scheme="int3"))
    with pytest.raises(ConfigError, match="model_url=None"):
        pipeline_stages.quantize(RunLayout(str(tmp_path), "empty"), QuantizeOptions())
