"""Policies: the adaptive interval, proactive saves, no NaN saves, drain reports."""

import math

from forgeline.health import HealthOptions, PredictivePolicy
from forgeline.ray.checkpointer import young_daly_interval_s

OPTIONS = HealthOptions(enabled=True, threshold=0.5, cooldown_steps=10, min_interval_steps=5,
                        drain_threshold=0.8, drain_after_samples=3, horizon_steps=20)


def _policy(mtbf_s=None, baseline=0.03):
    policy = PredictivePolicy(OPTIONS, base_every_steps=100, mtbf_s=mtbf_s,
                              baseline_hazard=baseline)
    policy.saved(0, 1.0)  # a save costs 1 s
    return policy


def test_interval_is_the_base_when_healthy_and_shrinks_with_the_hazard():
    policy = _policy()
    assert policy.interval(0.03, step_s=1.0) == 100  # the baseline hazard: the base
    assert policy.interval(0.3, step_s=1.0) < 100
    assert policy.interval(0.9, step_s=1.0) < policy.interval(0.3, step_s=1.0)
    assert policy.interval(1.0, step_s=1.0) == OPTIONS.min_interval_steps


def test_interval_never_exceeds_young_daly_on_the_observed_mtbf():
    policy = _policy(mtbf_s=800.0)
    yd = young_daly_interval_s(1.0, 800.0)  # forgeline.ray's function, reused
    assert policy.interval(0.0, step_s=1.0) == round(yd) == 40
    assert _policy(mtbf_s=math.inf).interval(0.0, 1.0) == 100


def test_proactive_save_at_threshold_with_cooldown_and_never_of_a_nan_state():
    policy = PredictivePolicy(OPTIONS.model_copy(update={"min_interval_steps": 100}), 100)
    decisions = [policy.decide(step, [0.9], 1.0) for step in range(1, 25)]
    proactive = [d.step for d in decisions if d.reason == "hazard"]
    gaps = [b - a for a, b in zip(proactive, proactive[1:], strict=False)]
    assert proactive[0] == 1 and gaps and min(gaps) >= 10
    assert policy.proactive_saves == len(proactive)
    calm = _policy()
    assert not any(calm.decide(s, [0.03], 1.0).save for s in range(1, 100))
    assert calm.decide(100, [0.03], 1.0).reason == "interval"
    nan = calm.decide(101, [1.0], 1.0, finite=False)
    assert not nan.save and nan.reason == "skip-nonfinite"


def test_job_hazard_combines_workers_and_a_suspect_is_drained_once():
    policy = _policy()
    d = policy.decide(1, [0.3, 0.3], 1.0)
    assert abs(d.job_hazard - 0.51) < 1e-9 and d.save  # 1 − 0.7² crosses 0.5
    reports = []
    for step in range(2, 8):
        reports += policy.decide(step, [0.1, 0.95], 1.0, reasons={1: ["mem_exhaustion"]}).drain
    assert [(r.rank, r.step, r.reasons) for r in reports] == [(1, 4, ["mem_exhaustion"])]
