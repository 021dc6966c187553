"""Real calibration trials: emitted DeepSpeed configs run under Ray Train on CPU."""

from __future__ import annotations

import math
from functools import cache

import pytest

from forgeline.errors import ConfigError
from forgeline.search import (
    ModelSpec,
    Observation,
    ParallelConfig,
    TrainingSpec,
    calibrate,
    estimate,
    run_trials,
    this_machine_cpu,
)
from forgeline.search.trials import (
    decoder_config_for,
    memory_factors,
    model_spec_for,
    predicted_trial_memory_bytes,
    run_trial,
    trial_deepspeed_config,
    with_headroom,
)
from forgeline.train.model import DecoderLM, ModelConfig, count_params

TRAINING = TrainingSpec(global_batch_size=4, precision="fp32", flash_attention=True,
                        learning_rate=3e-3)
TINY = ModelConfig(n_layers=2, d_model=64, n_heads=4, seq_len=32)
LARGER = ModelConfig(n_layers=4, d_model=256, n_heads=4, seq_len=32)


@cache
def _cpu_cluster():
    """This machine as 2 CPU workers (measured once: about a second)."""
    return this_machine_cpu(2)


def test_model_spec_matches_decoder_lm_parameter_count():
    for cfg in (TINY, LARGER):
        assert model_spec_for(cfg).total_params == count_params(DecoderLM(cfg))
        assert ModelConfig(**decoder_config_for(model_spec_for(cfg))) == cfg


def test_cpu_deepspeed_config_uses_torch_adam_in_fp32():
    ds = trial_deepspeed_config(ParallelConfig(micro_batch_size=2, zero_stage=2),
                                model_spec_for(TINY), TRAINING)
    assert ds["optimizer"]["params"]["torch_adam"] is True
    assert not ds["bf16"]["enabled"] and not ds["fp16"]["enabled"]
    assert ds["train_micro_batch_size_per_gpu"] * ds["gradient_accumulation_steps"] == 4


def test_headroom_keeps_predictions_and_memory_factors_are_per_stage():
    cluster, spec = _cpu_cluster(), model_spec_for(LARGER)
    roomy = with_headroom(cluster, 4.0)
    cfg = ParallelConfig(data_parallel=2, micro_batch_size=2, zero_stage=2)
    assert estimate(cfg, spec, roomy, TRAINING).step_time_s == pytest.approx(
        estimate(cfg, spec, cluster, TRAINING).step_time_s)
    obs = []
    for stage, ratio in ((0, 1.1), (0, 1.3), (3, 2.0)):
        c = ParallelConfig(data_parallel=2, micro_batch_size=2, zero_stage=stage)
        probe = Observation(model=spec, config=c, training=TRAINING, step_time_s=1.0)
        mem = ratio * predicted_trial_memory_bytes(probe, cluster)
        obs.append(probe.model_copy(update={"peak_memory_bytes": mem}))
    factors = memory_factors(obs, cluster)
    assert factors[0] == pytest.approx(1.2) and factors[3] == pytest.approx(2.0)
    assert factors[-1] == pytest.approx(1.3)
    with pytest.raises(ConfigError):
        memory_factors([obs[0].model_copy(update={"peak_memory_bytes": None})], cluster)


@pytest.mark.parametrize(("kwargs", "field"), [
    (dict(candidates=[]), "candidates"),
    (dict(steps=0), "steps"),
    (dict(warmup_steps=-1), "warmup_steps"),
    (dict(repetitions=0), "repetitions"),
    (dict(candidates=[ParallelConfig(tensor_parallel=2)]), "candidates[0].tensor_parallel"),
    (dict(candidates=[ParallelConfig(zero_stage=1, offload="optimizer")]),
     "candidates[0].offload"),
    (dict(candidates=[ParallelConfig(recompute="selective")]), "candidates[0].recompute"),
    (dict(candidates=[ParallelConfig(data_parallel=4)]), "candidates[0].data_parallel"),
    (dict(training=TrainingSpec(global_batch_size=4)), "training.precision"),
    (dict(model=ModelSpec(layers=2, hidden=64, heads=4, seq_len=32, vocab=256)),
     "model.param_dtype"),
])
def test_bad_input_is_rejected_before_any_work(kwargs, field):
    args = dict(candidates=[ParallelConfig(micro_batch_size=2)], model=TINY,
                cluster=_cpu_cluster(), training=TRAINING, steps=2)
    args.update(kwargs)
    with pytest.raises(ConfigError) as info:
        run_trials(**args)
    assert info.value.field == field
    assert field.split(".")[0].split("[")[0] in str(info.value)


@pytest.mark.slow
def test_trials_measure_time_and_memory_and_the_config_trains(ray_cluster):
    small = run_trial(ParallelConfig(data_parallel=2, micro_batch_size=2, zero_stage=2),
                      TINY, TRAINING, steps=4, warmup_steps=1)
    large = run_trial(ParallelConfig(data_parallel=1, micro_batch_size=2, zero_stage=0),
                      LARGER, TRAINING, steps=4, warmup_steps=1)
    for trial in (small, large):
        assert trial.step_time_s > 0 and trial.peak_memory_bytes > 0
        assert len(trial.worker_step_times_s[0]) == 4 and len(trial.losses) == 5
        # the emitted DeepSpeed config really trains: the loss falls over the trial
        assert trial.losses[-1] < trial.losses[0] - 0.1, trial.losses
    assert small.num_workers == 2 and len(small.worker_peak_memory_bytes) == 2
    # ~3.2M parameters x 16 bytes of fp32 states vs ~0.13M: clearly more memory
    assert large.peak_memory_bytes > small.peak_memory_bytes + 30 * 2**20
    # observations feed calibration as they are
    obs = [small.observation(), large.observation()]
    fit = calibrate(obs, _cpu_cluster())
    # (whether the fit improves on two noisy timings is for the benchmark, not a unit test)
    assert len(fit.rows) == 2 and all(r.measured_memory_bytes for r in fit.rows)
    assert all(math.isfinite(r.predicted_step_s_after) for r in fit.rows)
