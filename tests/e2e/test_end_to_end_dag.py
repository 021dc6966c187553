"""The end-to-end DAG through real Airflow (``dag.test()``), real Ray and DeepSpeed, tiny
(the session's ``tiny_dag_run``)."""

import json

import pytest

pytestmark = pytest.mark.slow


def test_end_to_end_dag_writes_every_artifact(tiny_dag_run):
    run_dir, run, conf = tiny_dag_run.run_dir, tiny_dag_run.run, tiny_dag_run.dag_run.conf
    assert set(run["stages"]) == {"prepare", "search", "train", "quantize", "report", "export"}
    prepare, search, train = (run["stages"][s] for s in ("prepare", "search", "train"))
    assert prepare["source_bytes"] == conf["data_max_source_bytes"]
    assert prepare["window_tokens"] == 64
    assert train["workers"] == 2 and train["zero_stage"] == 2
    assert train["steps"] == conf["train_steps"]
    # the train stage ran the search stage's plan as is
    assert search["num_workers"] == train["workers"] and search["zero_stage"] == 2
    assert (search["micro_batch_size"], search["grad_accum_steps"]) == (
        train["micro_batch_size"], train["grad_accum_steps"])
    assert search["deepspeed_config"]["train_batch_size"] == 2 * 8
    assert train["val_loss_after"] < train["val_loss_before"]
    quantize = run["stages"]["quantize"]
    assert quantize["budget_met"] is True and quantize["rel_ppl_increase"] <= 0.01 + 1e-9
    # smaller, and never slower than float here: a layer whose kernel lost on this machine
    # stays float (or moves to W8A8), and the result says which and why
    assert quantize["size_ratio"] >= 1  # latency is measured, and never gates a test
    if not quantize["latency_changes"]:
        assert quantize["size_ratio"] > 3
    assert set(quantize["latency_changes"]) <= set(quantize["assignment"])
    # the result reports the schemes the saved model really has (after the latency objective)
    saved = json.loads((run_dir / "quantize" / "model" / "quantization.json").read_text())
    assert {name: layer["scheme"] for name, layer in saved["layers"].items()} == {
        name: scheme for name, scheme in quantize["assignment"].items() if scheme != "fp32"}
    assert sum(quantize["scheme_counts"].values()) == len(quantize["assignment"])
    for rel in ("prepare/manifest.json", "search/plan.json", "train/model.safetensors",
                "metrics.jsonl", "report/report.html", "report/report.md", "report/train_loss.png"):
        assert (run_dir / rel).stat().st_size > 0, rel
    html = (run_dir / "report" / "report.html").read_text()
    assert f"{train['val_ppl_after']:.2f}" in html or f"{train['val_ppl_after']:.1f}" in html
    xcom = tiny_dag_run.dag_run.get_task_instance("train").xcom_pull(task_ids="train")
    assert xcom["model_url"].endswith("train/model.safetensors")
