"""The guard end to end with a growing source: proactive save, metrics, a drain report."""

import json

from forgeline.health import HealthGuard, HealthOptions, Sample  # noqa: F401
from forgeline.health.signals import MemorySource


class Leaking:
    """A memory reading that leaks from step 30 on (our own Source protocol)."""

    name = "leak"

    def __init__(self):
        self.reads = 0

    def read(self):
        self.reads += 1
        grown = max(0, self.reads - 30) * 0.04
        return {"mem_used_bytes": (0.4 + grown) * 2**30, "mem_limit_bytes": 2**30}


def test_guard_saves_ahead_of_a_leak_and_reports_the_node(tmp_path):
    options = HealthOptions(enabled=True, drain_after_samples=2, sample_interval_s=0)
    guard = HealthGuard(options, base_every_steps=1000, sources=[Leaking()],
                        report_url=f"file://{tmp_path}/health")
    decisions = [guard.step(s, 0.1, 0.0, 3.0, 1.0) for s in range(1, 46)]
    proactive = [d for d in decisions if d.proactive]
    # one save, just before the forecast exhaustion (the limit is reached at step 45)
    assert [d.reason for d in proactive] == ["imminent"]
    assert 45 - options.imminent_steps - options.sample_every_steps <= proactive[0].step < 45
    assert guard.eta_steps == 0.0  # the limit is reached
    report = json.loads((tmp_path / "health" / "drain-rank0.json").read_text())
    assert report["rank"] == 0 and "mem_exhaustion" in report["reasons"]
    metrics = guard.metrics()
    assert metrics["health_proactive_saves"] == len(proactive)
    assert metrics["health_hazard"] > 0.5 and metrics["health_drained"] == 1
    assert metrics["health_sources"] == "leak"
    assert metrics["health_forecast_steps"] == 0.0  # at the limit


def test_every_rank_decides_on_the_gathered_numbers():
    # the other rank: hazard 0.7, slower steps, its disk forecast to run out in 4 steps
    peer = [0.7, 0.5, 1.0, 4.0, 0.7, 0.0]

    def gather(mine):
        return [mine, peer]

    guard = HealthGuard(HealthOptions(enabled=True), 1000, rank=0, world_size=2,
                        gather=gather, sources=[MemorySource(2**40)])
    decision = guard.step(1, 0.1, 0.0, 3.0, 1.0)
    assert decision.job_hazard >= 0.7 and decision.save and decision.reason == "imminent"
    guard.saved(1, 0.5)
    assert guard.policy.save_cost_s == 0.0  # planned at the next evaluation's exchange
    peer[5] = 2.0  # the peer's save of step 1 blocked 2 s
    guard.step(2, 0.1, 0.0, 3.0, 1.0)
    assert guard.policy.save_cost_s == 2.0  # the slowest rank's save cost


def test_between_evaluations_only_the_interval_applies():
    class Steady:
        name = "steady"

        def __init__(self):
            self.reads = 0

        def read(self):
            self.reads += 1
            return {"mem_used_bytes": 0.3 * 2**30, "mem_limit_bytes": 2**30}

    source = Steady()
    options = HealthOptions(enabled=True, sample_every_steps=4, sample_interval_s=0)
    guard = HealthGuard(options, 10, sources=[source])
    saves = [s for s in range(1, 31) if guard.step(s, 0.1, 0.0, 3.0, 1.0).save]
    assert saves == [10, 20, 30]  # on the interval, evaluation step or not
    assert source.reads == 8  # host read at step 1, then every 4th step


def test_host_reads_are_rate_limited_and_a_sparse_leak_is_still_seen():
    """Host sources at most every ``sample_interval_s`` (the clock: 12.5 ms steps); the loop's
    numbers every step. A leak read every 4th step is still a trend (per-step slope)."""
    class Clock:
        now = 0.0

        def __call__(self):
            return self.now

    clock, leak = Clock(), Leaking()
    options = HealthOptions(enabled=True, sample_interval_s=0.04)
    guard = HealthGuard(options, base_every_steps=1000, sources=[leak])
    guard.monitor.clock = clock
    decisions = []
    for step in range(1, 301):
        clock.now = step * 0.0125
        decisions.append(guard.step(step, 0.0125, 0.0, 3.0, 1.0))
    assert leak.reads == guard.monitor.reads == 75  # steps 1, 5, 9 …, not 300
    samples = list(guard.monitor.samples)
    assert [s.step for s in samples][-3:] == [298, 299, 300]  # every step recorded
    assert [s.host_step for s in samples][-3:] == [297, 297, 297]
    assert sum(s.fresh for s in samples) == 8
    proactive = [(d.step, d.reason) for d in decisions if d.proactive]
    # one save before the limit (reached at read 45, step 177); over it, no more
    window = options.imminent_steps + options.sample_every_steps
    assert len(proactive) == 1 and 177 - window <= proactive[0][0] < 177


def test_the_guard_outside_ray_never_imports_it():
    """A guard in a plain training loop stays light: no Ray import (~0.8 s and ~100 MB of
    RSS, which the memory signal would see as a leak) when it plans an interval after a
    save or reports a drain."""
    import subprocess
    import sys

    code = """
import sys
from forgeline.health import HealthGuard, HealthOptions
from forgeline.health.signals import MemorySource
options = HealthOptions(enabled=True, drain_after_samples=1, sample_interval_s=0)
guard = HealthGuard(options, 10, sources=[MemorySource(2**40)])
for step in range(1, 30):
    d = guard.step(step, 0.1, 0.0, 3.0, float("nan") if step > 20 else 1.0)
    if d.save:
        guard.saved(step, 0.05)
assert guard.policy.drained and guard.policy.save_cost_s > 0
assert "ray" not in sys.modules, "ray was imported"
"""
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
