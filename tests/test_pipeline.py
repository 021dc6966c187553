"""How the pipeline derives each stage's options and decides the workers' data access."""

import pytest
from pydantic import ValidationError

from forgeline.pipeline import PipelineParams
from forgeline.train import TrainOptions

MANIFEST = "file:///data/run/prepare/manifest.json"


def test_local_data_reads_directly_by_default():
    url, cache = TrainOptions().data_access(MANIFEST, "file:///root")
    assert url == MANIFEST and cache is None


def test_remote_like_data_is_throttled_and_cached_under_the_root():
    options = TrainOptions(throttle_enabled=True, throttle_latency_s=0.02,
                           cache_capacity_bytes=1234, cache_substitution_ratio=0.1)
    url, cache = options.data_access(MANIFEST, "file:///root")
    assert url.startswith("throttled://") and "latency_s=0.02" in url
    assert cache.capacity_bytes == 1234 and cache.substitution_ratio == 0.1
    assert cache.importance_url == "file:///root/cache/importance"  # shared across runs


@pytest.mark.parametrize(("mode", "url", "cached"), [
    ("on", MANIFEST, True), ("off", "s3://bucket/m.json", False),
    ("auto", "s3://bucket/m.json", True), ("auto", MANIFEST, False),
])
def test_cache_mode(mode, url, cached):
    assert (TrainOptions(cache_mode=mode).data_access(url, "file:///r")[1] is not None) \
        == cached


def test_an_explicit_cache_section_is_used():
    options = TrainOptions(cache={"mode": "on", "capacity_bytes": 99, "policy": "lru",
                                  "importance_url": "memory://imp"})
    cache = options.data_access(MANIFEST, "file:///r")[1]
    assert (cache.capacity_bytes, cache.policy, cache.importance_url) == (99, "lru",
                                                                          "memory://imp")


def test_flat_and_nested_spellings_are_the_same_options():
    assert TrainOptions(checkpoint_every_steps=5, cache_mode="on") == TrainOptions(
        checkpoint={"every_steps": 5}, cache={"mode": "on"})


def test_bad_values_are_rejected_before_any_work_all_at_once():
    with pytest.raises(ValidationError) as caught:
        PipelineParams(train_cache_substitution_ratio=1.5, train_cache_mode="sometimes",
                       train_steps=0, quantize_batch_size=0)
    text = str(caught.value)
    for name in ("substitution_ratio", "cache.mode", "train.steps", "quantize.batch_size"):
        assert name in text, name
    with pytest.raises(ValidationError, match="stepz"):
        PipelineParams(train_stepz=3)


def test_stage_options_are_derived_once():
    params = PipelineParams(train_workers=3, train_micro_batch_size=4, train_grad_accum_steps=2,
                            train_zero_stage=1, data_window_tokens=64)
    search = params.stage_options("search")
    assert (search.workers, search.global_batch_size, search.zero_stages, search.seq_len) == (
        3, 24, [1], 64)
    assert params.stage_options("train") is params.train
    assert PipelineParams(strategy_search=False).stage_options("search") is None
    assert PipelineParams(train_deepspeed_config={"x": 1}).stage_options("search") is None
