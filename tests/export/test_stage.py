"""The export stage through the stage table and the CLI: every target the run has is
exported; a named target the run lacks is a clear error naming ``targets``."""

from __future__ import annotations

import json

import pytest
from safetensors.torch import load_file, save_file

from forgeline.checkpoint import CheckpointConfig, CheckpointStore
from forgeline.cli import main
from forgeline.errors import ConfigError
from forgeline.runs import RunLayout
from forgeline.stages import STAGES, run_stage
from forgeline.train.model import DecoderLM, ModelConfig


def _trained_run(tmp_path, with_checkpoint: bool) -> RunLayout:
    layout = RunLayout(f"file://{tmp_path}", "r1")
    cfg = ModelConfig(n_layers=1, d_model=32, n_heads=2, seq_len=16)
    model = DecoderLM(cfg)
    train = tmp_path / "runs" / "r1" / "train"
    train.mkdir(parents=True)
    save_file(model.state_dict(), train / "model.safetensors")
    store_url = f"file://{train}/checkpoints"
    if with_checkpoint:
        with CheckpointStore(store_url, CheckpointConfig()) as store:
            store.save({"step": 5, "model": dict(model.state_dict())}, 5)
    layout.record("train", {"model_url": f"file://{train}/model.safetensors",
                            "architecture": cfg.model_dump(), "checkpoint_url": store_url})
    return layout


def test_stage_exports_what_the_run_has(tmp_path):
    layout = _trained_run(tmp_path, with_checkpoint=True)
    result = run_stage("export", layout, {})
    assert isinstance(result, STAGES["export"].result)
    assert result.checkpoint_step == 5
    assert result.skipped == {
        "plan": "the run has no search result",
        "quantized": "the run has no quantized model (and trained model.json)"}
    hf = tmp_path / "runs" / "r1" / "export" / "hf"
    assert json.loads((hf / "config.json").read_text())["n_layer"] == 1
    assert "lm_head.weight" in load_file(hf / "model.safetensors")
    assert layout.load()["stages"]["export"]["dcp_url"] == result.dcp_url


def test_named_missing_target_is_an_error(tmp_path):
    layout = _trained_run(tmp_path, with_checkpoint=False)
    with pytest.raises(ConfigError, match="targets") as info:
        run_stage("export", layout, {"targets": ["checkpoint", "plan"]})
    assert "no committed training checkpoint" in str(info.value)
    assert "no search result" in str(info.value)


def test_cli_export_subcommand(tmp_path, capsys):
    _trained_run(tmp_path, with_checkpoint=False)
    code = main(["export", "--root", f"file://{tmp_path}", "--run-id", "r1",
                 "--targets", "model"])
    assert code == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["hf_model_url"].endswith("/export/hf")


def test_model_source_by_kind():
    from forgeline.export.stage import model_source

    preset = {"model_url": "file:///m.safetensors", "architecture": {
        "kind": "preset", "name": "DecoderLM-tiny", "seq_len": 64, "vocab_size": 256,
        "shape": {"n_layers": 2, "d_model": 64, "n_heads": 4, "seq_len": 128}}}
    kind, url, shape = model_source(preset)[0]
    assert (kind, url, shape["seq_len"], shape["n_layers"]) == ("decoder", "file:///m.safetensors",
                                                                 64, 2)
    hf = {"model_url": "x", "architecture": {"kind": "pretrained", "hf_folder_url": "file:///hf"}}
    assert model_source(hf)[0] == ("hf", "file:///hf")
    factory = {"model_url": "x", "architecture": {"kind": "factory"}}
    assert model_source(factory) == (None, "a factory model has no standard layout to export")


def test_the_quantized_model_exports_to_compressed_tensors(tmp_path):
    import torch

    from forgeline.quantize import QuantizeConfig, load_quantized, quantize_model, save_quantized
    from forgeline.quantize.runtime.hf_compressed import load_compressed_tensors

    layout = _trained_run(tmp_path, with_checkpoint=False)
    train = tmp_path / "runs" / "r1" / "train"
    cfg = ModelConfig(n_layers=1, d_model=32, n_heads=2, seq_len=16)
    (train / "model.json").write_text(cfg.model_dump_json())  # the trained model's shape
    model = DecoderLM(cfg).eval()
    model.load_state_dict(load_file(train / "model.safetensors"))
    tokens = torch.randint(0, 256, (4, 16))
    qmodel, _ = quantize_model(model, QuantizeConfig(
        scheme="w8a8", overrides={"blocks.0.fc1": "int8_wo"}, latency={"objective": "off"}),
        [tokens])
    artifact = save_quantized(qmodel, f"file://{tmp_path}/runs/r1/quantize/model")
    layout.record("quantize", {"model_url": artifact["url"]})

    result = run_stage("export", layout, {"targets": ["quantized"]})
    assert result.quantized_url.endswith("/export/quantized")
    assert {"blocks.0.qkv", "blocks.0.fc1", "head"} <= set(result.quantized_mapped_layers)
    theirs = load_compressed_tensors(result.quantized_url, lambda: DecoderLM(cfg))
    ours = load_quantized(artifact["url"], lambda: DecoderLM(cfg), backend="dequant")
    with torch.no_grad():
        assert torch.allclose(theirs(tokens), ours(tokens), atol=1e-4)
