"""forgeline's own output in one place, and where the noise of Ray and DeepSpeed goes.

* The driver starts a local Ray with ``log_to_driver=False`` (unless verbose): worker and
  controller output stays in Ray's log files, which :func:`collect_ray_logs` copies under
  the run folder; nothing of it reaches the terminal or an Airflow task log as stderr
  (which Airflow files as ERROR, with ANSI colours).
* Progress comes from the driver itself: :class:`MetricsProgress` follows the run's
  ``metrics.jsonl`` and shows a tqdm bar on a terminal, or a plain log line every N steps
  otherwise (Airflow task logs), with loss, throughput and ETA.
* A local cluster is always a new one (``address="local"``), never one that ``ray start``
  left on the machine; it runs its dashboard on a free loopback port and every Ray process is told
  where it is (``RAY_API_SERVER_ADDRESS``): Ray Train's ``PlacementGroupCleaner`` polls the
  controller's state through the State API every second, which without a dashboard fails on
  every poll ("Failed to query Ray Train Controller actor state") — and on a machine with
  several Ray clusters it would otherwise query whichever cluster started last.
* Workers drop Ray Train's per-report "Reporting training result N" INFO lines and build
  DeepSpeed's JIT ops into one persistent cache per environment (``TORCH_EXTENSIONS_DIR``).

``FORGELINE_VERBOSE=1`` (or ``--verbose``) keeps everything on the terminal as before.
"""

from __future__ import annotations

import json
import logging
import math
import os
import socket
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO

from forgeline import storage

log = logging.getLogger("forgeline.progress")

VERBOSE_ENV = "FORGELINE_VERBOSE"
RAY_LOGS_DIR = "ray-logs"
_RAY_NOISE_LOGGERS = ("ray.train.v2._internal.execution.context",)
"""Worker-side loggers whose INFO lines repeat for every report of every rank."""


def verbose() -> bool:
    """Whether the user asked for every library's output (``FORGELINE_VERBOSE``)."""
    return os.environ.get(VERBOSE_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def torch_extensions_dir() -> str:
    """One build cache of DeepSpeed's JIT ops per environment (inside the virtualenv)."""
    return os.environ.get("TORCH_EXTENSIONS_DIR") or str(
        Path(sys.prefix) / "var" / "forgeline" / "torch_extensions")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def local_ray_environment() -> Iterator[dict[str, Any]]:
    """Environment and ``ray.init`` arguments for a local cluster this process starts.

    Yields the keyword arguments; the environment variables (inherited by every Ray process)
    are restored afterwards.
    """
    port = _free_port()
    env = {"RAY_API_SERVER_ADDRESS": f"http://127.0.0.1:{port}",
           "TORCH_EXTENSIONS_DIR": torch_extensions_dir(),
           "RAY_COLOR_PREFIX": "1" if verbose() and sys.stderr.isatty() else "0"}
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    try:
        # "local": always a new cluster; ray.init() would join the latest one any
        # `ray start` left on this machine (another user's, or a dead one)
        yield {"address": "local", "include_dashboard": True, "dashboard_host": "127.0.0.1",
               "dashboard_port": port,
               "log_to_driver": verbose(),
               "logging_level": logging.INFO if verbose() else logging.WARNING}
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def quiet_worker() -> None:
    """In a Ray Train worker: drop the per-report INFO lines; one DeepSpeed op cache."""
    os.environ.setdefault("TORCH_EXTENSIONS_DIR", torch_extensions_dir())
    if not verbose():
        for name in _RAY_NOISE_LOGGERS:
            logging.getLogger(name).setLevel(logging.WARNING)


def collect_ray_logs(out_url: str) -> str | None:
    """Copy this driver's local Ray session logs (``*.out``/``*.err``/``*.log`` of workers,
    controller and raylet) under ``out_url``; return where, or None without a local node."""
    try:
        import ray._private.worker as ray_worker

        node = ray_worker._global_node
        logs_dir = Path(node.get_logs_dir_path()) if node is not None else None
    except (ImportError, AttributeError):
        return None
    if logs_dir is None or not logs_dir.is_dir():
        return None
    for path in sorted(logs_dir.iterdir()):
        if path.is_file() and path.suffix in (".out", ".err", ".log") and path.stat().st_size:
            storage.write_bytes_atomic(storage.join(out_url, path.name), path.read_bytes())
    return out_url


def progress_text(record: dict[str, Any], total: int, step_s: float | None) -> str:
    """``loss 4.1800 · 26,000 tokens/s · ETA 12 s`` for one metrics record."""
    parts = [f"loss {record['loss']:.4f}"]
    if isinstance(record.get("tokens_per_s"), int | float):
        parts.append(f"{record['tokens_per_s']:,.0f} tokens/s")
    if step_s is not None and math.isfinite(step_s):
        parts.append(f"ETA {max(0.0, (total - record['step']) * step_s):.0f} s")
    return " · ".join(parts)


class MetricsProgress:
    """Follow ``metrics.jsonl`` from a background thread while a stage runs: a tqdm bar when
    ``stream`` (default stderr) is a terminal, else a line every ``every_steps`` steps —
    printed to ``stream`` when one is given, logged otherwise (as in Airflow task logs)."""

    def __init__(self, metrics_url: str, total_steps: int, desc: str = "train",
                 stream: TextIO | None = None, every_steps: int | None = None,
                 poll_s: float = 1.0) -> None:
        self.metrics_url, self.total, self.desc = metrics_url, total_steps, desc
        self.stream = stream if stream is not None else sys.stderr
        self._print = stream is not None
        self.every = every_steps or max(1, total_steps // 10)
        self.poll_s = poll_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="forgeline-progress",
                                        daemon=True)
        self._seen = 0
        self._last_logged = 0
        self._bar: Any = None
        self._started = 0.0

    def __enter__(self) -> MetricsProgress:
        self._started = time.perf_counter()
        if self.stream.isatty():
            from tqdm import tqdm

            self._bar = tqdm(total=self.total, desc=self.desc, unit="step", file=self.stream,
                             dynamic_ncols=True, leave=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.poll()
        if self._bar is not None:
            self._bar.close()

    def _run(self) -> None:
        while not self._stop.wait(self.poll_s):
            self.poll()

    def _records(self) -> list[dict[str, Any]]:
        try:
            fs, path = storage.filesystem(self.metrics_url)
            if not fs.exists(path):
                return []
            text = fs.cat_file(path).decode("utf-8", errors="replace")
        except (OSError, ValueError):
            return []
        records = []
        for line in text.splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line being rewritten
            if isinstance(record, dict) and isinstance(record.get("loss"), int | float):
                records.append(record)
        return records

    def poll(self) -> None:
        """Show every training record not shown yet."""
        records = self._records()
        for record in records[self._seen:]:
            step = int(record.get("step", 0))
            elapsed = record.get("time_s")  # since the worker's first step
            if not isinstance(elapsed, int | float):
                elapsed = time.perf_counter() - self._started
            step_s = elapsed / step if step else None
            text = progress_text(record, self.total, step_s)
            if self._bar is not None:
                self._bar.n = min(step, self.total)
                self._bar.set_postfix_str(text, refresh=True)
            elif step - self._last_logged >= self.every or step >= self.total:
                line = f"{self.desc} step {step}/{self.total} · {text}"
                if self._print:
                    print(line, file=self.stream, flush=True)
                else:
                    log.info("%s", line)
                self._last_logged = step
        self._seen = len(records)
