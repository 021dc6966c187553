"""Stress of one shared cache server: many concurrent clients, evictions and large values.

The test suite and the benchmark use it to show that a threaded server
(``server_concurrency > 1``) neither crashes nor corrupts data: every value read back is
compared with the one written, the store's byte accounting is checked afterwards, and the
server process's own log (run under ``PYTHONMALLOC=debug`` with ``faulthandler`` on) is
searched for heap corruption and fatal signals. ``kill_rounds`` also kills the server while
calls are in flight (the benchmark's teardown), then starts a new one.
"""

from __future__ import annotations

import glob
import os
import random
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any

NAMESPACE = "stress:train"
WEIGHTS = {"put": 35, "get": 30, "lookup": 15, "substitutes": 10, "feedback": 8, "stats": 2}
CRASH_MARKERS = ("double free", "corruption", "Fatal Python error", "Segmentation fault",
                 "free(): invalid", "malloc(): ", "Aborted", "SIGSEGV", "SIGABRT",
                 "Debug memory block")


@dataclass(frozen=True)
class StressSpec:
    """How hard to push: clients (Ray tasks) x threads each, for ``seconds``."""

    clients: int = 6
    threads_per_client: int = 4
    seconds: float = 8.0
    keys: int = 1500
    max_value_bytes: int = 2**20
    capacity_bytes: int = 24 * 2**20
    concurrency: int = 16
    kill_rounds: int = 1
    ops: tuple[str, ...] = ("put", "get", "lookup", "substitutes", "feedback", "stats")
    min_calls_per_thread: int = 10  # a loaded machine still gets this many per thread


@dataclass
class StressResult:
    """What the stress saw; ``crashes`` counts server processes that died or logged heap
    corruption / a fatal signal outside a deliberate kill."""

    calls: int = 0
    wrong_values: int = 0
    client_errors: list[str] = field(default_factory=list)
    crashes: int = 0
    log_findings: list[str] = field(default_factory=list)
    accounting_ok: bool = True
    servers: int = 0
    wall_s: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def value_of(key: int) -> bytes:
    """The one payload of ``key`` (its size varies with the key, up to ~1 MiB)."""
    size = 512 + (key * 7919) % (2**20 - 512)
    return (key.to_bytes(8, "little") * (size // 8 + 1))[:size]


def _client_loop(handle: Any, spec: StressSpec, seed: int, deadline: float) -> dict[str, Any]:
    """``threads_per_client`` threads calling every server method at random until
    ``deadline``; returns call counts, wrong values and errors."""
    import ray

    out = {"calls": 0, "wrong": 0, "errors": []}
    lock = threading.Lock()

    def work(tid: int) -> None:
        rng = random.Random(seed * 1000 + tid)
        calls = wrong = 0
        try:
            ops = list(spec.ops)
            weights = [WEIGHTS[o] for o in ops]
            while time.time() < deadline or calls < spec.min_calls_per_thread:
                op = rng.choices(ops, weights)[0]
                keys = [rng.randrange(spec.keys) for _ in range(rng.randint(1, 12))]
                if op == "put":
                    items = [(k, value_of(k)) for k in keys[:4]]
                    ray.get(handle.put_many.remote(NAMESPACE, items))
                elif op == "get":
                    got = ray.get(handle.get_many.remote(NAMESPACE, keys))
                    wrong += sum(v != value_of(k) for k, v in got.items())
                elif op == "lookup":
                    ray.get(handle.lookup.remote(NAMESPACE, keys))
                elif op == "substitutes":
                    subs = ray.get(handle.substitutes.remote(NAMESPACE, 4, keys))
                    wrong += sum(k in keys for k in subs)
                elif op == "feedback":
                    handle.feedback.remote(NAMESPACE, keys, [rng.random() for _ in keys])
                else:
                    ray.get(handle.stats.remote())
                calls += 1
        except Exception as exc:  # noqa: BLE001 - reported, the driver decides
            with lock:
                out["errors"].append(f"{type(exc).__name__}: {str(exc)[:300]}")
        with lock:
            out["calls"] += calls
            out["wrong"] += wrong

    threads = [threading.Thread(target=work, args=(t,)) for t in range(spec.threads_per_client)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


def _server_log_findings(pid: int) -> list[str]:
    """Crash markers in the log files Ray keeps of the worker process ``pid``."""
    import ray

    logs = ray._private.worker._global_node.get_logs_dir_path()
    found = []
    for path in glob.glob(os.path.join(logs, f"*{pid}*")):
        with open(path, errors="replace") as f:
            for line in f:
                if any(m in line for m in CRASH_MARKERS):
                    found.append(f"{os.path.basename(path)}: {line.strip()[:300]}")
    return found


def _start_server(spec: StressSpec, name: str) -> tuple[Any, int]:
    import ray

    from forgeline.cache.server import CacheServer

    env = {"PYTHONMALLOC": "debug", "PYTHONFAULTHANDLER": "1"}
    handle = ray.remote(CacheServer).options(
        name=name, num_cpus=0, max_concurrency=spec.concurrency,
        runtime_env={"env_vars": env},
    ).remote(spec.capacity_bytes, "importance", 0.9)
    ray.get(handle.register.remote(NAMESPACE, spec.keys))
    return handle, int(ray.get(handle.ping.remote())["pid"])


def stress_server(spec: StressSpec) -> StressResult:
    """Run the stress on the connected Ray cluster; see the module docstring."""
    import ray

    client = ray.remote(num_cpus=0)(_client_loop)
    result = StressResult()
    started = time.perf_counter()
    for round_ in range(spec.kill_rounds + 1):
        name = f"forgeline-stress-{os.getpid()}-{round_}-{random.getrandbits(32):08x}"
        handle, pid = _start_server(spec, name)
        result.servers += 1
        deadline = time.time() + spec.seconds
        refs = [client.remote(handle, spec, round_ * 100 + c, deadline)
                for c in range(spec.clients)]
        killing = round_ < spec.kill_rounds
        if killing:  # kill while every client thread has a call in flight
            time.sleep(spec.seconds / 2)
            ray.kill(handle)
        outs = ray.get(refs)
        result.calls += sum(o["calls"] for o in outs)
        result.wrong_values += sum(o["wrong"] for o in outs)
        errors = [e for o in outs for e in o["errors"]]
        died = False
        if not killing:
            result.client_errors += errors
            try:
                result.accounting_ok &= bool(ray.get(handle.check_accounting.remote()))
            except ray.exceptions.RayActorError as exc:
                died = True
                result.client_errors.append(f"{type(exc).__name__}: {str(exc)[:300]}")
            ray.kill(handle)
        time.sleep(0.5)  # the process's last lines reach its log file
        findings = _server_log_findings(pid)
        result.log_findings += findings
        result.crashes += int(bool(findings) or died)
    result.wall_s = time.perf_counter() - started
    return result


__all__ = ["StressResult", "StressSpec", "stress_server", "value_of"]
