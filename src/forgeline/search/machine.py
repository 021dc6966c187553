"""This machine's CPUs as a :class:`ClusterSpec`, with its rates measured at run time."""

from __future__ import annotations

import time

from forgeline.errors import ConfigError
from forgeline.search.specs import ClusterSpec


def _matmul_rate(n: int, dtype: object, budget_s: float) -> tuple[float, float]:
    """(FLOPs of one n x n x n matmul, achieved FLOP/s) measured for about ``budget_s``."""
    import torch

    a = torch.randn(n, n).to(dtype)
    b = torch.randn(n, n).to(dtype)
    a @ b  # warm-up, excluded
    reps, start = 0, time.perf_counter()
    while True:
        a @ b
        reps += 1
        elapsed = time.perf_counter() - start
        if elapsed >= budget_s:
            break
    flops = 2.0 * n**3
    return flops, flops * reps / elapsed


def _copy_rate(elements: int = 1 << 24) -> float:
    """Memory bandwidth (bytes/s, read + write) of a large fp32 tensor copy."""
    import torch

    src, dst = torch.empty(elements), torch.empty(elements)
    dst.copy_(src)
    reps, start = 0, time.perf_counter()
    while time.perf_counter() - start < 0.1:
        dst.copy_(src)
        reps += 1
    return 2 * 4 * elements * reps / (time.perf_counter() - start)


def _gloo_rates(elements: int = 1 << 22, reps: int = 3) -> tuple[float, float]:
    """(link bytes/s, rank-local collective bytes/s) of gloo on this machine, in-process.

    Link: a ring all-reduce of ``4 * elements`` bytes between two gloo ranks (two threads
    over TCP loopback, as two local workers talk), ``S / t`` (a 2-rank ring moves the
    buffer once). Rank-local: a one-rank all-gather, the copy ZeRO-3 makes to gather a
    parameter even with a single worker.
    """
    import threading
    from datetime import timedelta

    import torch
    import torch.distributed as dist

    store, timeout = dist.HashStore(), timedelta(seconds=10)
    one = dist.ProcessGroupGloo(dist.PrefixStore("one", store), 0, 1, timeout)
    groups: list = [None, None]

    def connect(rank: int) -> None:
        groups[rank] = dist.ProcessGroupGloo(dist.PrefixStore("two", store), rank, 2, timeout)

    threads = [threading.Thread(target=connect, args=(r,)) for r in range(2)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    if None in groups:
        raise RuntimeError("gloo ranks did not connect")
    bufs = [torch.ones(elements) for _ in range(2)]

    errors: list[BaseException] = []

    def reduce(rank: int) -> None:
        try:
            for _ in range(reps):
                groups[rank].allreduce([bufs[rank]]).wait()
        except Exception as exc:  # re-raised below, in the caller's thread
            errors.append(exc)

    reduce_times = []
    for _ in range(2):  # the first round is warm-up
        threads = [threading.Thread(target=reduce, args=(r,)) for r in range(2)]
        start = time.perf_counter()
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        reduce_times.append((time.perf_counter() - start) / reps)
        if errors:
            raise errors[0]
    out = torch.empty_like(bufs[0])
    one.allgather([[out]], [bufs[0]]).wait()
    start = time.perf_counter()
    for _ in range(reps):
        one.allgather([[out]], [bufs[0]]).wait()
    gather_s = (time.perf_counter() - start) / reps
    nbytes = 4.0 * elements
    return nbytes / reduce_times[-1], nbytes / gather_s


def this_machine_cpu(devices: int | None = None) -> ClusterSpec:
    """This machine as one node of ``devices`` CPU workers (default: physical cores).

    Measured now: fp32 matmul FLOP/s at four sizes (the largest is the peak, the others
    give the efficiency curve), bf16 matmul FLOP/s, copy bandwidth, memory via psutil,
    and gloo (:func:`_gloo_rates`): the 2-rank all-reduce rate is the worker link, the
    one-rank all-gather rate is how fast ZeRO's buffer and gather passes go. Assumed:
    50 us per hop, and no overlap (``overlap_efficiency`` 0): gloo's collectives run on
    the same cores as the workers' compute, so nothing hides behind backward.
    """
    import psutil
    import torch

    cores = psutil.cpu_count(logical=False) or psutil.cpu_count() or 1
    devices = devices or cores
    if devices <= 0:
        raise ConfigError("devices", devices, "must be at least 1")
    points = [_matmul_rate(n, torch.float32, 0.05) for n in (64, 128, 256, 1024)]
    peak_fp32 = max(rate for _, rate in points)
    _, bf16_rate = _matmul_rate(256, torch.bfloat16, 0.05)
    copy_bps = _copy_rate()
    mem = psutil.virtual_memory().total
    try:
        link_bps, local_bps = _gloo_rates()
        link_note = f"gloo 2-rank all-reduce {link_bps:.3g} B/s, 1-rank all-gather {local_bps:.3g}"
    except Exception as exc:  # no gloo in this torch build: fall back to the copy rate
        link_bps, local_bps = copy_bps / 4, copy_bps / 2
        link_note = f"links assumed copy/4 (gloo not measurable: {type(exc).__name__})"
    curve = sorted((flops, max(min(rate / peak_fp32, 1.0), 1e-3)) for flops, rate in points)
    # Efficiency must not fall with size past the peak (a noisy small size can beat a large one).
    monotone, best = [], 0.0
    for flops, eff in curve:
        best = max(best, eff)
        monotone.append((flops, best))
    return ClusterSpec(
        name=f"cpu-{devices}", nodes=1, devices_per_node=devices,
        device_memory_bytes=int(mem // devices), reserved_bytes_per_device=300 * 1024**2,
        peak_flops_per_s={"fp32": peak_fp32 / devices, "tf32": peak_fp32 / devices,
                          "bf16": bf16_rate / devices, "fp16": bf16_rate / devices},
        hbm_bytes_per_s=copy_bps / devices,
        intra_node_bytes_per_s=link_bps, inter_node_bytes_per_s=link_bps,
        intra_node_latency_s=50e-6, inter_node_latency_s=50e-6,
        host_memory_bytes=int(mem), host_memory_bytes_per_s=copy_bps,
        host_link_bytes_per_s=copy_bps / devices,
        matmul_efficiency=monotone, memory_efficiency=[(1e4, 0.5), (1e7, 1.0)],
        intra_node_efficiency=1.0, inter_node_efficiency=1.0, overlap_efficiency=0.0,
        zero_copy_bytes_per_s=local_bps,
        notes=(f"measured {time.strftime('%Y-%m-%d %H:%M:%S')}: matmul fp32 peak "
               f"{peak_fp32:.3g} FLOP/s, bf16 {bf16_rate:.3g}, copy {copy_bps:.3g} B/s, "
               f"memory {mem} B via psutil, {link_note}; assumed 50 us per hop, no "
               f"overlap of communication with compute"),
    )
