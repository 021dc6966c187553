"""Health signal sources of one worker, read through psutil (and NVML when present).

Each source reads a few numbers cheaply (tens of microseconds); a source that does not exist
on this machine (no swap, no cgroup limit, no GPU, no nvidia-ml-py) is skipped: its numbers
are absent (NaN), never invented. :class:`Sample` is one step's record: the loop's own
timings and loss/gradient norm plus the latest host readings.
"""

from __future__ import annotations

import contextlib
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import psutil

NAN = math.nan


@dataclass
class Sample:
    """One step of one worker. Host readings are NaN where their source is missing."""

    step: int
    step_s: float
    data_wait_s: float = 0.0
    loss: float | None = None  # None: not measured; NaN/Inf: the training diverged
    grad_norm: float | None = None
    mem_used_bytes: float = NAN
    mem_limit_bytes: float = NAN
    swap_used_bytes: float = NAN
    disk_free_bytes: float = NAN
    disk_total_bytes: float = NAN
    threads: float = NAN
    gpu: dict[str, float] = field(default_factory=dict)
    host_step: int | None = None  # the step the host readings were taken at; None: this one

    @property
    def fresh(self) -> bool:
        """The host readings were taken at this step (not carried from an earlier one)."""
        return self.host_step is None or self.host_step == self.step


class Source(Protocol):
    """A host signal source: its readings as ``{Sample field: value}``."""

    name: str

    def read(self) -> dict[str, float]: ...


def cgroup_memory() -> tuple[float, float] | None:
    """``(used, limit)`` bytes of this container's cgroup (v2, then v1); None without a limit."""
    for used_file, limit_file in (
        ("/sys/fs/cgroup/memory.current", "/sys/fs/cgroup/memory.max"),
        ("/sys/fs/cgroup/memory/memory.usage_in_bytes",
         "/sys/fs/cgroup/memory/memory.limit_in_bytes"),
    ):
        try:
            limit_text = Path(limit_file).read_text().strip()
            used = float(Path(used_file).read_text().strip())
        except (OSError, ValueError):
            continue
        if limit_text == "max" or float(limit_text) >= 2**60:
            return None
        return used, float(limit_text)
    return None


class _Children:
    """This process's child processes, re-listed every ``every`` reads (listing them scans
    all of /proc: about a millisecond)."""

    def __init__(self, process: psutil.Process, every: int = 32) -> None:
        self.process, self.every, self.reads = process, every, 0
        self.children: list[psutil.Process] = []

    def get(self) -> list[psutil.Process]:
        if self.reads % self.every == 0:
            try:
                self.children = self.process.children(recursive=True)
            except psutil.Error:
                self.children = []
        self.reads += 1
        return self.children


class MemorySource:
    """Memory pressure. With ``limit_bytes``: this process tree's RSS against that limit;
    otherwise the container's cgroup usage and limit, or the host's used and total memory."""

    name = "memory"

    def __init__(self, limit_bytes: int | None = None, pid: int | None = None) -> None:
        self.limit_bytes = limit_bytes
        self.process = psutil.Process(pid)
        self.children = _Children(self.process)
        self.cgroup = limit_bytes is None and cgroup_memory() is not None

    def read(self) -> dict[str, float]:
        if self.limit_bytes is not None:
            rss = self.process.memory_info().rss
            for child in self.children.get():
                with contextlib.suppress(psutil.Error):
                    rss += child.memory_info().rss
            return {"mem_used_bytes": float(rss), "mem_limit_bytes": float(self.limit_bytes)}
        if self.cgroup and (cg := cgroup_memory()) is not None:
            return {"mem_used_bytes": cg[0], "mem_limit_bytes": cg[1]}
        vm = psutil.virtual_memory()
        return {"mem_used_bytes": float(vm.total - vm.available),
                "mem_limit_bytes": float(vm.total)}


class SwapSource:
    """Swap in use (skipped on a host without swap)."""

    name = "swap"

    @staticmethod
    def exists() -> bool:
        return psutil.swap_memory().total > 0

    def read(self) -> dict[str, float]:
        return {"swap_used_bytes": float(psutil.swap_memory().used)}


def folder_bytes(path: str) -> int:
    """Bytes of the regular files under ``path`` (recursive)."""
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, name)).st_size
    return total


class DiskSource:
    """Free space of the file system holding ``path``; with ``quota_bytes``, free space
    is ``min(disk free, quota − size of path)`` (a quota'd scratch or checkpoint folder)."""

    name = "disk"

    def __init__(self, path: str, quota_bytes: int | None = None) -> None:
        self.path, self.quota_bytes = path, quota_bytes

    def read(self) -> dict[str, float]:
        usage = psutil.disk_usage(self.path)
        free, total = float(usage.free), float(usage.total)
        if self.quota_bytes is not None:
            free = min(free, float(self.quota_bytes - folder_bytes(self.path)))
            total = float(self.quota_bytes)
        return {"disk_free_bytes": free, "disk_total_bytes": total}


class ThreadSource:
    """Threads of this process plus its child processes (a leak of either shows)."""

    name = "threads"

    def __init__(self, pid: int | None = None) -> None:
        self.process = psutil.Process(pid)
        self.children = _Children(self.process)

    def read(self) -> dict[str, float]:
        return {"threads": float(self.process.num_threads() + len(self.children.get()))}


class NvmlSource:
    """GPU health through NVML (nvidia-ml-py): temperature, power, throttle reasons and
    volatile ECC error counts of this worker's GPU. Built only by :func:`nvml_source`."""

    name = "nvml"

    def __init__(self, pynvml: object, index: int) -> None:
        self.nvml = pynvml
        self.handle = pynvml.nvmlDeviceGetHandleByIndex(index)  # type: ignore[attr-defined]

    def read(self) -> dict[str, float]:
        nv, h = self.nvml, self.handle
        out: dict[str, float] = {}
        readers = {
            "temperature_c": lambda: nv.nvmlDeviceGetTemperature(h, nv.NVML_TEMPERATURE_GPU),
            "power_w": lambda: nv.nvmlDeviceGetPowerUsage(h) / 1000.0,
            "throttle_reasons": lambda: nv.nvmlDeviceGetCurrentClocksThrottleReasons(h),
            "ecc_errors": lambda: nv.nvmlDeviceGetTotalEccErrors(
                h, nv.NVML_MEMORY_ERROR_TYPE_UNCORRECTED, nv.NVML_VOLATILE_ECC),
        }
        for key, read in readers.items():
            with contextlib.suppress(Exception):  # a reading this GPU lacks is skipped
                out[key] = float(read())
        return {"gpu": out}  # type: ignore[dict-item]


def nvml_source(index: int | None = None) -> NvmlSource | None:
    """The NVML source of GPU ``index`` (default: the first visible one), or None when
    nvidia-ml-py does not import or no GPU answers."""
    try:
        import pynvml

        pynvml.nvmlInit()
        if pynvml.nvmlDeviceGetCount() == 0:
            return None
        if index is None:
            visible = os.environ.get("CUDA_VISIBLE_DEVICES", "0").split(",")[0]
            index = int(visible) if visible.strip().isdigit() else 0
        return NvmlSource(pynvml, index)
    except Exception:  # noqa: BLE001 - ImportError, NVMLError (no driver, no GPU)
        return None


def default_sources(memory_limit_bytes: int | None = None, disk_path: str | None = None,
                    disk_quota_bytes: int | None = None, nvml: bool = True) -> list[Source]:
    """The sources that exist on this machine."""
    sources: list[Source] = [MemorySource(memory_limit_bytes), ThreadSource()]
    if SwapSource.exists():
        sources.append(SwapSource())
    path = disk_path or "/tmp"
    if os.path.isdir(path):
        sources.append(DiskSource(path, disk_quota_bytes))
    if nvml and (gpu := nvml_source()) is not None:
        sources.append(gpu)
    return sources
