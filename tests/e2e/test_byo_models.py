"""Bring your own model, tokenizer and data, end to end: a Hugging Face GPT-2 built from a
config on a BPE tokenizer trained in the prepare stage (the DAG, 2 workers, ZeRO-2), then
fine-tuned from its saved folder through the CLI on JSONL data, and a custom factory model
(ZeRO-3, activation checkpointing). Real Airflow, Ray Train, DeepSpeed and transformers."""

import json
import math
import os
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

_HERE = str(Path(__file__).resolve().parent)  # byo_factory importable here and in Ray workers
sys.path.insert(0, _HERE)
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [_HERE, os.environ.get("PYTHONPATH")]))

GPT2 = {"model_type": "gpt2", "n_layer": 2, "n_embd": 64, "n_head": 4, "n_positions": 64,
        "vocab_size": 1024, "resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0}
TINY = {"data_max_source_bytes": 200_000, "data_window_tokens": 64,
        "data_tokenizer_kind": "bpe", "data_tokenizer_vocab_size": 1024,
        "data_split_by": "document", "train_model_kind": "hf_config",
        "train_model_hf_config": GPT2, "train_steps": 20, "train_micro_batch_size": 8,
        "train_eval_samples": 64, "train_lr": 3e-3, "train_checkpoint_every_steps": 10,
        "quantize_eval_samples": 32,
        "quantize_calibration_samples": 16, "quantize_sensitivity": False}


def _timed(label, fn):
    started = time.perf_counter()
    out = fn()
    print(f"{label}: {time.perf_counter() - started:.1f} s")
    return out


@pytest.fixture(scope="module")
def gpt2_run(airflow_db, ray_cluster, tmp_path_factory):
    from airflow.dag_processing.dagbag import DagBag

    root = tmp_path_factory.mktemp("byo-dag")
    dag = DagBag().get_dag("forgeline_end_to_end")
    dag_run = _timed("gpt2 DAG", lambda: dag.test(run_conf={**TINY, "artifact_root": str(root)}))
    assert str(dag_run.state) == "success"
    run_dir = next((root / "runs").iterdir())
    return run_dir, json.loads((run_dir / "run.json").read_text())


def test_gpt2_from_a_config_with_a_trained_bpe_tokenizer_through_the_dag(gpt2_run):
    run_dir, run = gpt2_run
    prepare, search, train = (run["stages"][s] for s in ("prepare", "search", "train"))
    assert prepare["tokenizer"] == "bpe" and prepare["vocab_size"] == 1024
    assert json.loads((run_dir / "prepare" / "manifest.json").read_text())["token_dtype"] == \
        "uint16"
    assert train["workers"] == 2 and train["zero_stage"] == 2
    assert train["architecture"]["kind"] == "hf_config"
    assert train["architecture"]["hf_config"]["n_layer"] == 2
    assert search["num_workers"] == 2  # the search planned for the GPT-2 it was given
    assert train["val_ppl_after"] < train["val_ppl_before"]
    print(f"gpt2 val ppl {train['val_ppl_before']:.1f} → {train['val_ppl_after']:.1f}")
    assert run["stages"]["quantize"]["val_ppl_quantized"] > 0
    assert (run_dir / "quantize" / "model" / "quantization.json").exists()
    hf = run_dir / "train" / "hf"
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in
                                                                      hf.iterdir()}
    assert "gpt2" in (run_dir / "report" / "report.html").read_text()
    assert list((run_dir / "train" / "checkpoints").rglob("*"))  # forgeline's store took it


def _write_jsonl(path: Path, documents: int) -> None:
    import sysconfig

    files = sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py"))[40:40 + documents]
    with path.open("w") as out:
        for f in files:
            out.write(json.dumps({"id": f.name, "content": f.read_text()[:6000]}) + "\n")


def _saved_model_loss(train_dir: Path, manifest_url: str, samples: int) -> float:
    from safetensors.torch import load_file

    from forgeline.datasets import TokenDataset
    from forgeline.train import build_saved_model, evaluate

    model = build_saved_model(f"file://{train_dir / 'model.json'}")
    model.load_state_dict(load_file(train_dir / "model.safetensors"))
    return evaluate(model, TokenDataset(manifest_url, "validation"), samples, 32)


def test_fine_tune_the_saved_folder_through_the_cli_on_jsonl(gpt2_run, tmp_path):
    from forgeline.cli import main

    run_dir, _ = gpt2_run
    hf = str(run_dir / "train" / "hf")
    data = tmp_path / "docs.jsonl"
    _write_jsonl(data, 30)
    root = ["--root", str(tmp_path / "art"), "--run-id", "ft"]
    assert main(["prepare", *root, "--source", str(data), "--format", "jsonl",
                 "--text-column", "content", "--tokenizer-kind", "pretrained",
                 "--tokenizer-url", hf, "--window-tokens", "64",
                 "--split-by", "document"]) == 0
    run_json = tmp_path / "art" / "runs" / "ft" / "run.json"
    manifest_url = json.loads(run_json.read_text())["stages"]["prepare"]["manifest_url"]
    started = time.perf_counter()
    assert main(["train", *root, "--model-kind", "pretrained", "--model-pretrained-url", hf,
                 "--steps", "15", "--micro-batch-size", "8", "--eval-samples", "64",
                 "--lr", "1e-3", "--zero-stage", "3"]) == 0
    print(f"fine-tune CLI: {time.perf_counter() - started:.1f} s")
    train = json.loads(run_json.read_text())["stages"]["train"]
    assert train["zero_stage"] == 3 and train["architecture"]["kind"] == "pretrained"
    saved = _saved_model_loss(run_dir / "train", manifest_url, 64)
    assert train["val_loss_before"] == pytest.approx(saved, abs=1e-4)  # started from it
    assert train["val_loss_after"] < train["val_loss_before"]
    print(f"fine-tune val ppl {math.exp(train['val_loss_before']):.1f} → "
          f"{train['val_ppl_after']:.1f}")


def test_a_custom_factory_model_trains_through_the_cache_on_bpe_tokens(ray_cluster, tmp_path):
    import uuid

    from forgeline import stages, storage
    from forgeline.cache import shutdown
    from forgeline.runs import RunLayout
    from forgeline.train import build_saved_model

    layout = RunLayout(str(tmp_path), "factory")
    stages.run_stage("prepare", layout, {"max_source_bytes": 100_000, "window_tokens": 32,
                                         "tokenizer_kind": "bpe",
                                         "tokenizer_vocab_size": 512})
    options = stages.STAGES["train"].options.model_validate({
        "model_kind": "factory", "model_factory": "byo_factory:gru_lm",
        "model_factory_kwargs": {"hidden": 48}, "zero_stage": 1,
        "activation_checkpointing": True, "steps": 20, "micro_batch_size": 8,
        "eval_samples": 64, "lr": 3e-3, "cache_mode": "on",
        "cache_server_name": f"byo-{uuid.uuid4().hex[:8]}", "cache_capacity_bytes": 2**20})
    try:
        result = _timed("factory train", lambda: stages.run_stage("train", layout, options))
    finally:
        shutdown(options.cache.engine_config(layout.root))
    assert result.architecture["factory"] == "byo_factory:gru_lm"
    assert result.val_loss_after < result.val_loss_before
    print(f"factory val ppl {result.val_ppl_before:.1f} → {result.val_ppl_after:.1f}")
    stats = storage.read_json(storage.join(layout.stage_url("train"),
                                           "cache_stats.json"))["latest"]
    assert stats["workers"] == 2 and stats["cache_hits"] + stats["cache_misses"] > 0
    rebuilt = build_saved_model(result.model_config_url)
    assert type(rebuilt).__name__ == "GRULM" and rebuilt.embed.num_embeddings == 512
