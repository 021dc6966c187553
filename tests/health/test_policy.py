"""Policies: the adaptive interval, proactive saves, no NaN saves, drain reports."""

import math

from forgeline.checkpoint import young_daly_interval_s
from forgeline.health import HealthOptions, PredictivePolicy

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
    yd = young_daly_interval_s(1.0, 800.0)  # the checkpoint package's function, reused
    assert policy.interval(0.0, step_s=1.0) == round(yd) == 40
    assert _policy(mtbf_s=math.inf).interval(0.0, 1.0) == 100


def test_max_interval_lets_a_calm_run_reach_young_daly_beyond_the_base():
    options = OPTIONS.model_copy(update={"max_interval_steps": 300})
    policy = PredictivePolicy(options, base_every_steps=100, mtbf_s=20_000.0)
    policy.saved(0, 1.0)
    assert policy.interval(0.0, step_s=1.0) == 200  # sqrt(2 · 1 · 20000): above the base
    policy.mtbf_s = 80_000.0
    assert policy.interval(0.0, step_s=1.0) == 300  # sqrt(2 · 80000) = 400, capped
    assert policy.interval(1.0, step_s=1.0) == OPTIONS.min_interval_steps


def test_a_forecast_exhaustion_is_saved_for_once_just_before_it():
    """Hazard 0.9 from step 1, memory forecast to run out at step 30, and without the memory
    features the hazard is 0.1: the forecast explains it. No hazard save at the cooldown,
    one imminent save once the forecast is within imminent_steps (4) after the next
    evaluation (1 step on). At the limit
    (forecast 0) no more; re-armed when the forecast clears or moves later. A hazard the
    forecast does not explain saves as usual."""
    policy = PredictivePolicy(OPTIONS.model_copy(update={"min_interval_steps": 100}), 100)
    decisions = [policy.decide(step, [0.9], 1.0, eta_steps=30.0 - step,
                               residual_hazards=[0.1]) for step in range(1, 30)]
    assert [(d.step, d.reason) for d in decisions if d.save] == [(25, "imminent")]
    assert decisions[24].proactive and policy.proactive_saves == 1
    covered = _policy()  # the interval does not shrink for what the forecast explains
    assert covered.decide(1, [0.9], 1.0, eta_steps=15.0,
                          residual_hazards=[0.03]).interval_steps == 100
    assert covered.decide(2, [0.9], 1.0).interval_steps == OPTIONS.min_interval_steps
    other = PredictivePolicy(OPTIONS.model_copy(update={"min_interval_steps": 100}), 100)
    assert other.decide(1, [0.9], 1.0, eta_steps=15.0,
                        residual_hazards=[0.8]).reason == "hazard"
    idle = PredictivePolicy(OPTIONS, 100)
    assert idle.decide(1, [0.0], 1.0, eta_steps=3.0).reason == "imminent"  # hazard or not
    assert not any(idle.decide(s, [0.0], 1.0, eta_steps=0.0).save for s in range(2, 40))
    assert idle.decide(40, [0.0], 1.0, eta_steps=math.inf).reason == ""  # cleared: re-armed
    assert idle.decide(41, [0.0], 1.0, eta_steps=5.0).reason == "imminent"
    assert idle.decide(52, [0.0], 1.0, eta_steps=5.0).reason == "imminent"  # slowed: 57 > 51


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
    d = policy.decide(1, [0.3, 0.6], 1.0)
    assert d.job_hazard == 0.6 and d.save  # the most suspect worker's hazard
    reports = []
    for step in range(2, 8):
        reports += policy.decide(step, [0.1, 0.95], 1.0, reasons={1: ["mem_exhaustion"]}).drain
    assert [(r.rank, r.step, r.reasons) for r in reports] == [(1, 4, ["mem_exhaustion"])]
