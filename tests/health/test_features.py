"""The rule features: quiet on a steady worker, loud on each kind of trouble."""

import math

import numpy as np
import pytest

from forgeline.health import FEATURES, Sample, extract

GIB = 2**30


def _steady(n=32, **changes):
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        values = dict(step=i, step_s=0.1 * math.exp(rng.normal(0, 0.05)), loss=3.0,
                      grad_norm=1.0, mem_used_bytes=4 * GIB, mem_limit_bytes=8 * GIB,
                      disk_free_bytes=50 * GIB, disk_total_bytes=100 * GIB, threads=10)
        for key, f in changes.items():
            values[key] = f(i, values[key])
        out.append(Sample(**values))
    return out


def test_steady_worker_scores_near_zero():
    features = extract(_steady(), horizon_steps=20)
    assert set(features) == set(FEATURES)
    assert max(v for k, v in features.items() if k not in ("mem_used", "disk_used")) < 0.2


def test_slowdown_is_a_change_point():
    features = extract(_steady(step_s=lambda i, v: v * (3.0 if i >= 22 else 1.0)), 20)
    assert features["step_drift"] > 1.0 and features["step_cusum"] > 1.0


def test_memory_leak_and_disk_fill_project_exhaustion_within_the_horizon():
    leak = extract(_steady(mem_used_bytes=lambda i, v: v + i * 0.12 * GIB), 20)
    assert leak["mem_exhaustion"] >= 1.0 and leak["mem_used"] > 0.8
    fill = extract(_steady(disk_free_bytes=lambda i, v: v - i * 1.5 * GIB), 20)
    assert fill["disk_exhaustion"] >= 1.0


def test_one_allocation_is_not_a_trend():
    jump = extract(_steady(mem_used_bytes=lambda i, v: v + (GIB if i >= 25 else 0)), 20)
    assert jump["mem_exhaustion"] < 0.1


def test_gradient_spikes_and_non_finite_values():
    spikes = extract(_steady(grad_norm=lambda i, v: v * (300.0 if i >= 30 else 1.0)), 20)
    assert spikes["grad_spike"] > 2.0 and spikes["nonfinite"] == 0
    nan = extract(_steady(grad_norm=lambda i, v: math.nan if i == 31 else v), 20)
    assert nan["nonfinite"] == 1.0
    unmeasured = extract(_steady(loss=lambda i, v: None, grad_norm=lambda i, v: None), 20)
    assert unmeasured["nonfinite"] == 0.0  # None is "not measured", not a divergence


def test_the_fast_median_is_numpys_bit_for_bit():
    from forgeline.health.features import _median

    rng = np.random.default_rng(1)
    for n in (1, 2, 3, 4, 15, 16, 31, 32):
        values = rng.lognormal(0, 2, n) * rng.choice([-1, 1], n)
        assert _median(values) == float(np.median(values))
    assert math.isnan(_median(np.array([1.0, math.nan, 2.0])))
    assert math.isnan(_median(np.array([])))


def test_sparse_host_readings_give_the_per_step_memory_trend():
    """Memory read every 5th step (carried between) grows as fast per step as when read
    every step: the exhaustion feature sees the same trend, not a stair."""
    def leak(i, _):
        return 4 * GIB + i * 0.02 * GIB

    every = _steady(mem_used_bytes=leak)
    sparse = _steady(mem_used_bytes=leak)
    for s in sparse:
        s.host_step = s.step - s.step % 5
        s.mem_used_bytes = 4 * GIB + s.host_step * 0.02 * GIB
    dense, stair = extract(every, 20)["mem_exhaustion"], extract(sparse, 20)["mem_exhaustion"]
    assert dense > 0.1 and abs(stair - dense) / dense < 0.1


def test_the_forecast_is_the_steps_to_the_limit_projected_to_the_newest_step():
    """4 GiB growing 0.1 GiB a step towards 8 GiB: at step 31, 7.1 GiB, 9 steps left. Read
    every 5th step (last at step 30: 7.0 GiB, 10 steps left then), it is projected to 9."""
    from forgeline.health import extract_forecast

    def leak(i, _):
        return 4 * GIB + i * 0.1 * GIB

    features, eta = extract_forecast(_steady(mem_used_bytes=leak), 20)
    assert eta == pytest.approx(9.0) and features["mem_exhaustion"] == pytest.approx(20 / 9)
    sparse = _steady(mem_used_bytes=leak)
    for s in sparse:
        s.host_step = s.step - s.step % 5
        s.mem_used_bytes = leak(s.host_step, None)
    assert extract_forecast(sparse, 20)[1] == pytest.approx(9.0)
    assert extract_forecast(_steady(), 20)[1] == math.inf
    jump = _steady(mem_used_bytes=lambda i, v: v + (GIB if i >= 25 else 0))
    assert extract_forecast(jump, 20)[1] == math.inf
