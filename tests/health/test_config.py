"""Bad input is refused before any work, naming the field and the value."""

import pytest
from pydantic import ValidationError

from forgeline.health import FaultSpec, HealthOptions
from forgeline.options import flat_fields
from forgeline.train import TrainOptions


def test_off_by_default_and_flat_names_reach_every_edge():
    assert TrainOptions().health.enabled is False
    names = {f.name for f in flat_fields(TrainOptions)}
    assert {"health_enabled", "health_threshold", "health_horizon_steps",
            "health_sample_interval_s"} <= names
    assert TrainOptions(health_enabled=True, health_threshold=0.3).health.threshold == 0.3
    assert TrainOptions().health.sample_interval_s == 0.05
    assert TrainOptions(health_sample_interval_s=0).health.sample_interval_s == 0
    config = TrainOptions(health={"enabled": True}).to_config("file:///x/manifest.json")
    assert config.health.enabled


@pytest.mark.parametrize(("values", "field", "shown"), [
    ({"threshold": 1.5}, "threshold", "1.5"),
    ({"threshold": 0.9, "drain_threshold": 0.5}, "health.drain_threshold", "0.5"),
    ({"horizon_steps": 200, "window_steps": 16}, "health.horizon_steps", "200"),
    ({"model": "no_colon"}, "health.model", "no_colon"),
    ({"window_steps": 2}, "window_steps", "2"),
    ({"sample_interval_s": -1}, "sample_interval_s", "-1"),
    ({"max_interval_steps": 4, "min_interval_steps": 10}, "health.max_interval_steps", "4"),
    ({"max_interval_steps": 0}, "max_interval_steps", "0"),
    ({"imminent_steps": -1}, "imminent_steps", "-1"),
])
def test_bad_health_options_name_field_and_value(values, field, shown):
    with pytest.raises(ValidationError) as caught:
        HealthOptions(**values)
    assert field in str(caught.value) and shown in str(caught.value)


def test_bad_flat_option_through_train_options():
    with pytest.raises(ValidationError, match=r"health\.cooldown_steps"):
        TrainOptions(health_cooldown_steps=0)


@pytest.mark.parametrize(("values", "field"), [
    ({"kind": "memory_leak", "at_step": 10, "lead_steps": 10}, "lead_steps=10"),
    ({"kind": "sigkill", "at_step": 10, "lead_steps": 3}, "lead_steps=3"),
    ({"kind": "disk_fill", "at_step": 10}, "disk_path=None"),
    ({"kind": "meteor", "at_step": 10}, "meteor"),
])
def test_bad_fault_specs(values, field):
    with pytest.raises(ValidationError, match=field):
        FaultSpec(**values)
