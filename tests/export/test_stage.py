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
    assert result.skipped == {"plan": "the run has no search result"}
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
