import pytest
from pydantic import ValidationError

from forgeline.cache import CacheConfig, available_memory_bytes
from forgeline.train import TrainOptions


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"capacity_bytes": 0}, "capacity_bytes=0: must be > 0"),
        ({"capacity_bytes": -5}, "capacity_bytes=-5"),
        ({"substitution_ratio": 1.5}, r"substitution_ratio=1.5: must be within \[0, 1\]"),
        ({"substitution_ratio": -0.1}, "substitution_ratio=-0.1"),
        ({"policy": "fifo"}, "policy='fifo': unknown policy"),
        ({"importance": "mean"}, "importance='mean'"),
        ({"server": "redis"}, "server='redis'"),
    ],
)
def test_bad_values_name_the_field_and_value(kwargs, match):
    with pytest.raises(ValidationError, match=match):
        CacheConfig(**kwargs)


def test_capacity_above_available_memory_is_refused():
    too_much = available_memory_bytes() * 4
    with pytest.raises(ValidationError, match=f"capacity_bytes={too_much}: above the memory"):
        CacheConfig(capacity_bytes=too_much)


def test_train_options_carry_the_cache_into_the_train_config():
    cache = CacheConfig(capacity_bytes=2**20, substitution_ratio=0.1)
    config = TrainOptions(cache_mode="on", cache_capacity_bytes=2**20,
                          cache_substitution_ratio=0.1).to_config("file:///data/manifest.json")
    assert config.cache == cache
    assert TrainOptions().to_config("file:///m.json").cache is None
    round_trip = type(config).model_validate(config.model_dump(mode="json"))
    assert round_trip.cache == cache


def test_the_options_model_imports_neither_torch_nor_ray():
    import subprocess
    import sys

    code = ("import sys, forgeline.cache.config as c; c.CacheConfig(capacity_bytes=1024); "
            "heavy = sorted({'torch', 'ray'} & set(sys.modules)); "
            "assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True)
