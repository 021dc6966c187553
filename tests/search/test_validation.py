"""Published runs as validation data, and the fit / held-out protocols."""

import pytest

from forgeline.errors import ConfigError
from forgeline.search.flops import narayanan_flops_per_iteration
from forgeline.search.published import FAMILIES, PUBLISHED_RUNS
from forgeline.search.validation import published_step_s, validate


def test_published_runs_are_consistent_and_varied():
    assert len(PUBLISHED_RUNS) >= 10 and len(FAMILIES) >= 3
    assert {r.gpu for r in PUBLISHED_RUNS} >= {"a100-80gb", "h100"}  # two GPU generations
    for run in PUBLISHED_RUNS:
        layout = (run.tensor_parallel * run.pipeline_parallel * run.context_parallel
                  * run.data_parallel)
        assert layout == run.gpus, run.name
        assert run.global_batch_size % run.data_parallel == 0, run.name
        assert run.source and run.assumptions, run.name
    assert len({r.name for r in PUBLISHED_RUNS}) == len(PUBLISHED_RUNS)


def test_mt_nlg_iteration_times_match_its_published_tflops():
    # Smith et al. print both: 60.1 / 50.2 / 44.4 s and 126 / 121 / 113 TFLOP/s per GPU
    for run, tflops in zip([r for r in PUBLISHED_RUNS if r.family == "megatron-deepspeed"],
                           (126, 121, 113), strict=True):
        m = run.model
        flops = narayanan_flops_per_iteration(run.global_batch_size, m.seq_len, m.layers,
                                              m.hidden, m.vocab)
        assert flops / (published_step_s(run) * run.gpus) / 1e12 == pytest.approx(tflops,
                                                                                 abs=1.0)


def test_tokens_per_second_converts_to_step_time():
    run = next(r for r in PUBLISHED_RUNS if r.name == "nemo-gpt3-5b")
    # 2048 sequences x 2048 tokens / (23,406 tokens/s/GPU x 64 GPUs)
    assert published_step_s(run) == pytest.approx(2048 * 2048 / (23406 * 64))


def test_protocols_hold_out_what_they_say():
    runs = tuple(r for r in PUBLISHED_RUNS
                 if r.name in ("nemo-gpt3-5b", "nemo-llama2-7b", "titan-70b-256-float8"))
    named, lofo = validate(runs)
    assert [r.name for r in named.runs] == [r.name for r in runs]
    assert named.fit_runs == 8 and set(named.compute_scale) == {"megatron-lm"}
    # each family is predicted by a factor fitted without it: two families, two factors
    assert set(lofo.compute_scale) == {"nemo", "torchtitan"}
    assert lofo.compute_scale["nemo"] != lofo.compute_scale["torchtitan"]
    for report in (named, lofo):
        errors = [abs(r.error_pct) for r in report.runs]
        assert report.mape_pct == pytest.approx(sum(errors) / len(errors))
        assert report.max_error_pct == max(errors)
        for r in report.runs:  # sign: positive means the prediction is faster
            faster = r.predicted > r.published if r.metric != "step_s" else (
                r.predicted < r.published)
            assert (r.error_pct > 0) == faster


def test_validate_needs_runs():
    with pytest.raises(ConfigError, match="runs"):
        validate(())
