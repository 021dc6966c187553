"""``make demo``: run the end-to-end DAG through Airflow (``dag.test()``) on the embedded
defaults, with one progress bar per stage, and say where the model, the report and the logs
are.

    python -m forgeline.demo ['{"train_steps": 20, "train_model_size": "tiny"}'] [--verbose]

By default the terminal shows only forgeline's lines: everything Airflow, Ray and DeepSpeed
print goes to ``{run}/logs/demo.log`` (Ray's worker logs to ``train/ray-logs/``), both named
at the end. ``--verbose`` shows it all. Expects ``AIRFLOW_HOME`` with a migrated metastore
and ``AIRFLOW__CORE__DAGS_FOLDER`` pointing at ``dags/`` (the Makefile sets both up).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO

from forgeline.logs import VERBOSE_ENV, MetricsProgress

DAG_ID = "forgeline_end_to_end"
STAGES = ("prepare", "search", "train", "quantize", "report")
LOG_NAME = "demo.log"


@contextmanager
def quiet_terminal(log_path: Path, verbose: bool) -> Iterator[TextIO]:
    """Send this process's stdout/stderr (and its children's: Ray, DeepSpeed builds) to
    ``log_path`` at the file-descriptor level; yield a stream to the real terminal."""
    if verbose:
        yield sys.stdout
        return
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    console = os.fdopen(os.dup(1), "w", buffering=1)
    with open(log_path, "ab", buffering=0) as sink:
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        try:
            yield console
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)
            console.close()


class RunProgress:
    """Watch the run folder the DAG run writes: a line (or bar) per stage as it starts and
    ends, and the train stage's steps from ``metrics.jsonl``."""

    def __init__(self, runs_dir: Path, started: float, train_steps: int,
                 console: TextIO) -> None:
        self.runs_dir, self.started, self.train_steps = runs_dir, started, train_steps
        self.console = console
        self.run_dir: Path | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="forgeline-demo", daemon=True)

    def __enter__(self) -> RunProgress:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _find_run(self) -> Path | None:
        if not self.runs_dir.is_dir():
            return None
        new = [p for p in self.runs_dir.glob(f"{DAG_ID}__*")
               if p.is_dir() and p.stat().st_mtime >= self.started - 1]
        return max(new, key=lambda p: p.stat().st_mtime) if new else None

    def _wait_for(self, path: Path) -> None:
        while not path.exists() and not self._stop.wait(0.5):
            pass

    def _say(self, text: str) -> None:
        print(text, file=self.console, flush=True)

    def _run(self) -> None:
        while self.run_dir is None and not self._stop.wait(0.5):
            self.run_dir = self._find_run()
        if self.run_dir is None:
            return
        for stage in STAGES:
            begun = time.perf_counter()
            done = self.run_dir / stage / "result.json"
            if stage == "train":
                metrics = f"file://{self.run_dir / 'metrics.jsonl'}"
                with MetricsProgress(metrics, self.train_steps, "  train", self.console,
                                     poll_s=0.5):
                    self._wait_for(done)
            else:
                self._wait_for(done)
            if not done.exists():
                return
            self._say(f"  {stage:<8} done in {time.perf_counter() - begun:5.1f} s")


def _local(url: str) -> str:
    return url.removeprefix("file://")


def _latency_line(ratio: dict[str, float]) -> list[str]:
    """``latency vs float: 1.30× at batch 1, 0.77× at batch 32`` (below 1: faster)."""
    ratios = [f"{ratio[f'b{b}']:.2f}× at batch {b}" for b in (1, 32) if f"b{b}" in ratio]
    return [f"             latency vs float: {', '.join(ratios)}"] if ratios else []


def summary_lines(stages: dict[str, Any], run_dir: str, took_s: float,
                  run_id: str) -> list[str]:
    """The closing summary: what the run did and where everything is."""
    train, q, report = stages["train"], stages["quantize"], stages["report"]
    mix = ", ".join(f"{n} × {s}" for s, n in q["scheme_counts"].items())
    lines = [
        "",
        f"forgeline demo finished in {took_s:.0f} s (DAG {DAG_ID}, run {run_id})",
        f"  validation perplexity: {train['val_ppl_before']:.1f} untrained → "
        f"{train['val_ppl_after']:.2f} trained ({train['workers']} Ray Train workers, "
        f"DeepSpeed ZeRO-{train['zero_stage']}, {train['tokens_per_s']:,.0f} tokens/s)",
        f"  quantized: {mix} layers, {q['size_ratio']:.2f}× smaller, perplexity "
        f"{q['val_ppl_float']:.2f} → {q['val_ppl_quantized']:.2f} "
        f"({100 * q['rel_ppl_increase']:+.2f} %)",
        *_latency_line(q.get("latency_ratio") or {}),
        f"  trained model:   {_local(train['model_url'])}",
        f"  quantized model: {_local(q['model_url'])}",
        f"  report:          {_local(report['html_url'])}",
        f"                   {_local(report['markdown_url'])}",
        f"  run record:      {run_dir}/run.json",
    ]
    return lines


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m forgeline.demo",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("conf", nargs="?", default="{}", help="DAG run conf (JSON, flat "
                        "Param names, e.g. '{\"train_steps\": 20}')")
    parser.add_argument("--verbose", action="store_true",
                        help="show Airflow, Ray and DeepSpeed output on the terminal")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    run_conf = json.loads(args.conf)
    verbose = args.verbose or os.environ.get(VERBOSE_ENV) == "1"
    if verbose:
        os.environ[VERBOSE_ENV] = "1"
    started = time.time()
    log_path = Path(tempfile.mkstemp(prefix="forgeline-demo-", suffix=".log")[1])
    print(f"forgeline demo: DAG {DAG_ID} through Airflow (dag.test), Ray Train + DeepSpeed "
          f"on this machine{'' if verbose else '; library output → ' + str(log_path)}",
          flush=True)
    with quiet_terminal(log_path, verbose) as console:
        from airflow.dag_processing.dagbag import DagBag

        from forgeline.operators import run_name
        from forgeline.runs import RunLayout

        bag = DagBag()
        if bag.import_errors:
            print(f"DAG import errors: {bag.import_errors}", file=console)
            return 1
        dag = bag.get_dag(DAG_ID)
        root = run_conf.get("artifact_root") or dag.params["artifact_root"]
        steps = int(run_conf.get("train_steps") or dag.params["train_steps"])
        runs_dir = Path(_local(RunLayout(root, "x").url)).parent
        with RunProgress(runs_dir, started, steps, console):
            dag_run = dag.test(run_conf=run_conf or None)
    layout = RunLayout(root, run_name(DAG_ID, dag_run.run_id))
    run_dir = _local(layout.url)
    kept_log = Path(run_dir) / "logs" / LOG_NAME
    if not verbose and Path(run_dir).is_dir():
        kept_log.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(log_path, kept_log)
        log_path = kept_log
    if str(dag_run.state) != "success":
        print(f"DAG run {dag_run.run_id} ended {dag_run.state}; see {log_path}",
              file=sys.stderr)
        return 1
    stages = layout.load()["stages"]
    for line in summary_lines(stages, run_dir, time.time() - started, dag_run.run_id):
        print(line)
    if not verbose:
        print(f"  logs:            {log_path} (Airflow, Ray, DeepSpeed)")
        ray_logs = Path(run_dir) / "train" / "ray-logs"
        if ray_logs.is_dir():
            print(f"                   {ray_logs}/ (Ray workers)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
