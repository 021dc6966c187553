"""forgeline's own output: progress lines from metrics.jsonl, quiet workers, Ray's
environment for a local cluster."""

from __future__ import annotations

import io
import json
import logging
import os

from forgeline.logs import (
    MetricsProgress,
    local_ray_environment,
    progress_text,
    quiet_worker,
)


def _write(path, steps):
    lines = [{"stage": "train", "split": "validation", "step": 0, "val_loss": 5.0}]
    lines += [{"stage": "train", "step": s, "loss": 5.0 - s / 10, "tokens_per_s": 1000.0,
               "time_s": 0.5 * s} for s in steps]
    path.write_text("".join(json.dumps(r) + "\n" for r in lines))


def test_plain_lines_every_n_steps_with_loss_throughput_and_eta(tmp_path):
    metrics = tmp_path / "metrics.jsonl"
    _write(metrics, range(2, 21, 2))
    out = io.StringIO()  # not a terminal: plain lines, as in an Airflow task log
    with MetricsProgress(f"file://{metrics}", 20, "train", out, every_steps=5, poll_s=0.05):
        pass
    lines = out.getvalue().splitlines()
    assert [line.split(" · ")[0] for line in lines] == [
        "train step 6/20", "train step 12/20", "train step 18/20", "train step 20/20"]
    assert lines[0] == "train step 6/20 · loss 4.4000 · 1,000 tokens/s · ETA 7 s"
    assert lines[-1].endswith("ETA 0 s")


def test_progress_text_without_timing():
    assert progress_text({"step": 3, "loss": 1.5}, 10, None) == "loss 1.5000"


def test_quiet_worker_drops_per_report_lines(monkeypatch):
    monkeypatch.delenv("FORGELINE_VERBOSE", raising=False)
    monkeypatch.delenv("TORCH_EXTENSIONS_DIR", raising=False)
    name = "ray.train.v2._internal.execution.context"
    logging.getLogger(name).setLevel(logging.NOTSET)
    quiet_worker()
    assert logging.getLogger(name).getEffectiveLevel() == logging.WARNING
    assert os.environ["TORCH_EXTENSIONS_DIR"]


def test_local_ray_environment_points_the_state_api_at_our_dashboard(monkeypatch):
    monkeypatch.delenv("RAY_API_SERVER_ADDRESS", raising=False)
    with local_ray_environment() as kwargs:
        assert kwargs["address"] == "local"  # never join a cluster `ray start` left behind
        assert kwargs["include_dashboard"] and not kwargs["log_to_driver"]
        port = kwargs["dashboard_port"]
        assert os.environ["RAY_API_SERVER_ADDRESS"] == f"http://127.0.0.1:{port}"
        assert os.environ["RAY_COLOR_PREFIX"] == "0"
    assert "RAY_API_SERVER_ADDRESS" not in os.environ
