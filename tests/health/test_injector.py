"""Every fault kind, injected for real: its precursor over the lead time, then the failure."""

import errno
import multiprocessing
import os
import time

import psutil
import pytest
import torch

from forgeline.health import FaultInjector, FaultSpec, InjectedFault


def test_memory_leak_grows_rss_then_fails():
    injector = FaultInjector(FaultSpec(kind="memory_leak", at_step=10, lead_steps=5,
                                       leak_bytes=80 * 2**20))
    rss = psutil.Process().memory_info().rss
    for step in range(1, 10):
        injector.before_step(step)
        injector.after_step(step)
    assert psutil.Process().memory_info().rss - rss > 50 * 2**20
    injector.before_step(10)
    with pytest.raises(MemoryError):
        injector.after_step(10)
    injector.cleanup()


def test_slowdown_ramps_then_crashes():
    injector = FaultInjector(FaultSpec(kind="slowdown", at_step=6, lead_steps=4,
                                       slowdown_factor=4.0))
    took = []
    for step in range(1, 6):
        started = time.perf_counter()
        injector.before_step(step, 0.01)
        took.append(time.perf_counter() - started)
        injector.after_step(step)
    assert took[0] < 0.005 and took[-1] >= 0.02
    with pytest.raises(InjectedFault, match="slowdown"):
        injector.after_step(6)


def test_nan_gradients_spike_first():
    param = torch.nn.Parameter(torch.ones(3))
    injector = FaultInjector(FaultSpec(kind="nan_grad", at_step=5, lead_steps=3,
                                       grad_decades=2.0))
    norms = []
    for step in range(1, 6):
        param.grad = torch.ones(3)
        injector.after_backward(step, [param])
        norms.append(float(param.grad.norm()))
    assert norms[0] == norms[1] == pytest.approx(3 ** 0.5)
    assert norms[2] < norms[3] and norms[3] > 10 and norms[4] != norms[4]  # NaN at at_step
    with pytest.raises(InjectedFault):
        injector.after_step(5)


def test_disk_fill_writes_then_runs_out_of_space(tmp_path):
    folder = tmp_path / "fill"
    injector = FaultInjector(FaultSpec(kind="disk_fill", at_step=5, lead_steps=4,
                                       disk_path=str(folder), disk_bytes=4_000_000))
    for step in range(1, 5):
        injector.before_step(step)
        written = sum(p.stat().st_size for p in folder.iterdir()) if folder.exists() else 0
        assert written == round(injector.progress(step) * 4_000_000)  # exactly, every step
    assert written == 3_000_000
    with pytest.raises(OSError) as caught:
        injector.after_step(5)
    assert caught.value.errno == errno.ENOSPC
    injector.cleanup()
    assert not folder.exists()


def _killed() -> None:
    injector = FaultInjector(FaultSpec(kind="sigkill", at_step=3))
    for step in range(1, 5):
        injector.before_step(step)
    os._exit(0)  # never reached


def test_sigkill_has_no_warning():
    assert FaultInjector(FaultSpec(kind="sigkill", at_step=3)).progress(2) == 0.0
    proc = multiprocessing.get_context("fork").Process(target=_killed)
    proc.start()
    proc.join(30)
    assert proc.exitcode == -9
