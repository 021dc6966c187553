"""Each signal source that exists on this machine, read for real (psutil; NVML if present)."""

import importlib.util
import threading

import psutil

from forgeline.health import (
    DiskSource,
    HealthMonitor,
    MemorySource,
    SwapSource,
    ThreadSource,
    default_sources,
    nvml_source,
)
from forgeline.health.injector import touched_pages


def test_memory_source_with_a_limit_sees_this_process_grow():
    source = MemorySource(limit_bytes=64 * 2**30)
    before = source.read()
    ballast = touched_pages(64 * 2**20)  # fresh pages: freed heap could be reused unseen
    after = source.read()
    assert after["mem_limit_bytes"] == 64 * 2**30
    assert after["mem_used_bytes"] - before["mem_used_bytes"] > 48 * 2**20
    ballast.close()


def test_memory_source_without_a_limit_reads_the_container_or_host():
    reading = MemorySource().read()
    assert 0 < reading["mem_used_bytes"] <= reading["mem_limit_bytes"]
    assert reading["mem_limit_bytes"] <= psutil.virtual_memory().total * 1.01


def test_disk_source_quota_counts_the_folder(tmp_path):
    source = DiskSource(str(tmp_path), quota_bytes=10 * 2**20)
    empty = source.read()
    (tmp_path / "blob").write_bytes(b"x" * 2**20)
    full = source.read()
    assert empty["disk_total_bytes"] == 10 * 2**20
    assert empty["disk_free_bytes"] - full["disk_free_bytes"] == 2**20
    assert DiskSource(str(tmp_path)).read()["disk_total_bytes"] == psutil.disk_usage(
        str(tmp_path)).total


def test_thread_source_counts_a_new_thread():
    source = ThreadSource()
    stop = threading.Event()
    before = source.read()["threads"]
    thread = threading.Thread(target=stop.wait)
    thread.start()
    try:
        assert source.read()["threads"] == before + 1
    finally:
        stop.set()
        thread.join()


def test_missing_sources_are_skipped_not_faked(tmp_path):
    names = [s.name for s in default_sources(disk_path=str(tmp_path))]
    assert names[:2] == ["memory", "threads"] and "disk" in names
    assert ("swap" in names) == SwapSource.exists() == (psutil.swap_memory().total > 0)
    gpu = nvml_source()
    if importlib.util.find_spec("pynvml") is None:
        assert gpu is None and "nvml" not in names
    elif gpu is not None:  # a GPU answers: its readings are real numbers
        assert all(isinstance(v, float) for v in gpu.read()["gpu"].values())
    assert "nvml" not in [s.name for s in default_sources(nvml=False)]


def test_monitor_reads_host_sources_every_n_steps_and_keeps_a_window(tmp_path):
    monitor = HealthMonitor([DiskSource(str(tmp_path), 2**20)], window=8, sample_every=4)
    for step in range(1, 13):
        if step == 5:
            (tmp_path / "f").write_bytes(b"x" * 1000)
        monitor.record(step, 0.01, loss=1.0, grad_norm=1.0)
    free = [s.disk_free_bytes for s in monitor.samples]
    assert len(free) == 8 and [s.step for s in monitor.samples] == list(range(5, 13))
    assert free[0] == free[1] == free[2] == 2**20  # steps 5–7 carry step 4's reading
    assert free[3] == 2**20 - 1000  # read again at step 8
    assert monitor.read_s > 0
