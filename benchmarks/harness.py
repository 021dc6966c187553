"""Shared benchmark scaffolding: the command line, machine facts, load, median/spread, JSON out.

Every ``benchmarks/<area>.py`` imports this (run from the repository root), so the JSON shape
of the benchmark contract is written once: ``area``, ``quick``, ``machine``, ``command``,
``metrics``, ``runs`` and whatever else the area adds.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import shlex
import statistics
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any


def parser(area: str, doc: str | None) -> argparse.ArgumentParser:
    """``--quick`` and ``--out`` (default ``benchmarks/results/<area>.json``); add your own."""
    ap = argparse.ArgumentParser(description=(doc or area).strip().splitlines()[0])
    ap.add_argument("--quick", action="store_true",
                    help="the same comparisons on smaller sizes, at most 5 minutes on 2 cores")
    ap.add_argument("--out", default=f"benchmarks/results/{area}.json", help="JSON result path")
    return ap


def machine_info(*modules: str) -> dict[str, Any]:
    """CPU count, Python, platform and the versions of ``modules`` (those that import)."""
    info: dict[str, Any] = {
        "cpus": os.cpu_count(), "python": platform.python_version(),
        "platform": platform.platform(),
        "shared_machine": "other jobs may run at the same time; see the load averages",
    }
    for name in modules:
        try:
            info[name] = importlib.import_module(name).__version__
        except Exception as exc:  # noqa: BLE001 - a peer that cannot import is reported
            info[name] = f"unavailable: {type(exc).__name__}: {exc}"
    if "torch" in sys.modules:
        info["torch_threads"] = sys.modules["torch"].get_num_threads()
    return info


def loadavg() -> list[float]:
    """The 1, 5 and 15 minute load averages."""
    return list(os.getloadavg())


def median(values: Iterable[float]) -> float:
    return statistics.median(list(values))


def spread(values: Iterable[float]) -> list[float]:
    """``[min, max]`` of the repetitions behind a median."""
    values = list(values)
    return [min(values), max(values)]


class Recorder:
    """Collects one benchmark run and writes the contract's JSON document."""

    def __init__(self, area: str, args: argparse.Namespace, *modules: str) -> None:
        self.area, self.args = area, args
        self.started = time.perf_counter()
        self.doc: dict[str, Any] = {
            "area": area, "quick": bool(getattr(args, "quick", False)),
            "machine": machine_info(*modules),
            "command": "python " + shlex.join(sys.argv),
            "loadavg_1_5_15m_start": loadavg(),
        }

    def write(self, metrics: dict[str, Any], runs: list[Any], **extra: Any) -> dict[str, Any]:
        """Write ``{..., metrics, runs, **extra}`` to ``--out``, print the metrics, return it."""
        self.doc.update(extra, metrics=metrics, runs=runs,
                        loadavg_1_5_15m_end=loadavg(),
                        wall_s=round(time.perf_counter() - self.started, 1))
        out = Path(self.args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(self.doc, indent=2, default=float) + "\n")
        print(json.dumps(metrics, indent=2, default=float))
        print(f"wrote {out}")
        return self.doc
