"""Bad inputs: a ConfigError naming the field and the value, before any work starts."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from forgeline.errors import ConfigError
from forgeline.quantize import QuantizeConfig, quantize_model


class CountingMLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(64, 96), nn.Linear(96, 10)
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.fc2(torch.relu(self.fc1(x)))


def _raises(field: str, value, fn) -> ConfigError:
    with pytest.raises(ConfigError) as exc:
        fn()
    assert exc.value.field == field and exc.value.value == value, exc.value
    assert field.split("[")[0] in str(exc.value) and repr(value) in str(exc.value)
    return exc.value


def test_unknown_scheme():
    _raises("scheme", "int3", lambda: QuantizeConfig(scheme="int3"))
    _raises("overrides['fc1']", "int2", lambda: QuantizeConfig(overrides={"fc1": "int2"}))
    _raises("mixed_precision.ladder[1]", "int5",
            lambda: QuantizeConfig(mixed_precision={"ladder": ["int4_rtn", "int5", "fp32"]}))
    # from a dict (e.g. a DAG's form) pydantic reports it, naming field and value
    with pytest.raises(ValueError, match=r"scheme='int3': unknown scheme"):
        QuantizeConfig.model_validate({"scheme": "int3"})
    # a config built without validation is checked again before any work
    cfg = QuantizeConfig.model_construct(scheme="int3")
    model = CountingMLP()
    _raises("scheme", "int3", lambda: quantize_model(model, cfg, [torch.randn(2, 64)]))
    assert model.calls == 0


def test_group_size_not_dividing_input_dimension():
    model = CountingMLP()
    cfg = QuantizeConfig(scheme="int4_gptq", group_size=128)
    err = _raises("group_size", 128, lambda: quantize_model(model, cfg, [torch.randn(4, 64)]))
    assert "fc1" in err.reason and "64" in err.reason
    assert model.calls == 0
    _raises("group_size", 33, lambda: QuantizeConfig(scheme="int4_rtn", group_size=33))


@pytest.mark.parametrize("batches", [[], iter([]), [torch.empty(0, 64)], None])
def test_empty_calibration_set(batches):
    model = CountingMLP()
    err = _raises("calibration_batches", "<empty>" if batches is not None else None,
                  lambda: quantize_model(model, QuantizeConfig(scheme="w8a8"), batches))
    assert "calibration" in str(err)
    assert model.calls == 0


def test_checkpoint_not_matching_model():
    model = CountingMLP()
    good = CountingMLP().state_dict()
    bad_shape = dict(good, **{"fc1.weight": torch.zeros(96, 32)})
    err = _raises("checkpoint", "<state dict of 4 tensors>", lambda: quantize_model(
        model, QuantizeConfig(), state_dict=bad_shape))
    assert "fc1.weight" in err.reason and "(96, 32)" in err.reason
    missing = {k: v for k, v in good.items() if k != "fc2.bias"}
    err = _raises("checkpoint", "<state dict of 3 tensors>", lambda: quantize_model(
        model, QuantizeConfig(), state_dict=missing))
    assert "fc2.bias" in err.reason
    # a matching checkpoint is loaded before quantizing
    qmodel, _ = quantize_model(model, QuantizeConfig(), state_dict=good)
    assert torch.equal(model.fc1.weight, good["fc1.weight"])


def test_other_bad_inputs():
    model = CountingMLP()
    _raises("eval_fn", None, lambda: quantize_model(
        model, QuantizeConfig(mixed_precision={"enabled": True}), [torch.randn(2, 64)]))
    _raises("backend", "tpu", lambda: QuantizeConfig(backend="tpu"))
    _raises("model", "ReLU", lambda: quantize_model(nn.ReLU(), QuantizeConfig()))
    with pytest.raises(ValueError, match="percentile_pct"):
        QuantizeConfig(activation={"percentile_pct": 120})
    assert model.calls == 0


def test_group_size_one_is_a_config_error():
    _raises("group_size", 1, lambda: QuantizeConfig(scheme="int4_rtn", group_size=1))
    _raises("smoothquant_alpha", 1.5, lambda: QuantizeConfig(smoothquant_alpha=1.5))
    _raises("latency.fallback", ["w8a8"], lambda: QuantizeConfig(latency={"fallback": ["w8a8"]}))
    _raises("latency.max_repeats", 4,
            lambda: QuantizeConfig(latency={"repeats": 8, "max_repeats": 4}))


def test_evaluator_must_return_a_number():
    model = CountingMLP()
    cfg = QuantizeConfig(sensitivity={"enabled": True}, group_size=32,
                         latency={"objective": "off"})
    batches = [torch.randn(4, 64)]
    _raises("eval_fn", None, lambda: quantize_model(model, cfg, batches, lambda m: None))
    err = _raises("eval_fn", "0.9", lambda: quantize_model(model, cfg, batches, lambda m: "0.9"))
    assert "real number" in err.reason
    nan = float("nan")
    with pytest.raises(ConfigError, match="eval_fn=nan: returned a non-finite"):
        quantize_model(model, cfg, batches, lambda m: nan)
    # a one-element tensor is a number
    _, report = quantize_model(model, cfg, batches, lambda m: torch.tensor(1.0))
    assert report.metric_float == 1.0


def test_divergence_must_return_a_number():
    model = CountingMLP()
    cfg = QuantizeConfig(sensitivity={"enabled": True}, group_size=32,
                         latency={"objective": "off"})
    _raises("divergence_fn", "far", lambda: quantize_model(
        model, cfg, [torch.randn(4, 64)], lambda m: 1.0, divergence_fn=lambda a, b: "far"))


def test_batches_without_a_tensor_are_a_config_error():
    model = CountingMLP()
    with pytest.raises(ConfigError, match="calibration_batches=.*first dimension counts samples"):
        quantize_model(model, QuantizeConfig(scheme="w8a8"), [["a", "b"]])
    assert model.calls == 0
