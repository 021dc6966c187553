"""How the pipeline decides the workers' data access (throttling, cache) and validates early."""

import pytest
from pydantic import ValidationError

from forgeline.cache import CacheConfig
from forgeline.pipeline import PipelineParams, TrainStageOptions

MANIFEST = "file:///data/run/prepare/manifest.json"


def test_local_data_reads_directly_by_default():
    url, cache = TrainStageOptions().data_access(MANIFEST, "file:///root")
    assert url == MANIFEST and cache is None


def test_remote_like_data_is_throttled_and_cached_under_the_root():
    options = TrainStageOptions(remote_like_data=True, throttle_latency_s=0.02,
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
    assert (TrainStageOptions(cache_mode=mode).data_access(url, "file:///r")[1] is not None) \
        == cached


def test_an_explicit_cache_config_wins():
    explicit = CacheConfig(capacity_bytes=99, policy="lru")
    assert TrainStageOptions(cache=explicit).data_access(MANIFEST, "file:///r")[1] == explicit


def test_bad_values_are_rejected_before_any_work():
    with pytest.raises(ValidationError, match="cache_substitution_ratio"):
        PipelineParams(cache_substitution_ratio=1.5)
    with pytest.raises(ValidationError, match="cache_mode"):
        PipelineParams(cache_mode="sometimes")
