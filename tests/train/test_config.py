import pytest
from pydantic import ValidationError

from forgeline.train import TrainConfig, TrainOptions, default_deepspeed_config


def test_options_build_a_deepspeed_config():
    config = TrainOptions(zero_stage=1, micro_batch_size=4, grad_accum_steps=2, steps=50,
                          model_preset="tiny").to_config("file:///m.json")
    assert config.zero_stage == 1 and config.micro_batch_size == 4 and config.grad_accum_steps == 2
    assert config.deepspeed_config["scheduler"]["params"]["total_num_steps"] == 50
    assert config.model.kind == "preset" and config.model.preset == "tiny"
    # the former spelling still means the preset
    assert TrainOptions(model_size="base").model.preset == "base"


def test_a_given_deepspeed_config_is_used_as_is():
    ds = default_deepspeed_config(zero_stage=3, micro_batch_size=2)
    config = TrainOptions(deepspeed_config=ds, zero_stage=1).to_config("file:///m.json")
    assert config.deepspeed_config == ds and config.zero_stage == 3


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"train_micro_batch_size_per_gpu": 0}, "train_micro_batch_size_per_gpu=0"),
        ({"gradient_accumulation_steps": "x"}, "gradient_accumulation_steps='x'"),
        ({"zero_optimization": {"stage": 5}}, "zero_optimization.stage=5"),
    ],
)
def test_bad_deepspeed_config_names_the_field(change, message):
    with pytest.raises(ValidationError, match=message):
        TrainConfig(manifest_url="file:///m.json", deepspeed_config={**default_deepspeed_config(),
                                                                     **change})


def test_bad_options_name_the_field():
    with pytest.raises(ValidationError, match="workers"):
        TrainOptions(workers=0)
    with pytest.raises(ValidationError, match="model.preset"):
        TrainOptions(model_size="huge")
    with pytest.raises(ValidationError, match="model.kind"):
        TrainOptions(model_kind="keras")


def test_zero3_turns_the_default_checkpoint_interval_off_but_refuses_an_explicit_one():
    config = TrainOptions(zero_stage=3).to_config("file:///m.json")
    assert config.zero_stage == 3 and config.checkpoint.every_steps is None
    assert TrainOptions(zero_stage=2).to_config("file:///m.json").checkpoint.every_steps == 100
    with pytest.raises(ValidationError, match="checkpoint.every_steps=50.*ZeRO-3"):
        TrainOptions(zero_stage=3, checkpoint_every_steps=50).to_config("file:///m.json")


def test_a_run_of_a_few_steps_still_has_a_warmup_deepspeed_accepts():
    from forgeline.train.config import TrainOptions, warmup_steps_for

    assert [warmup_steps_for(n) for n in (1, 9, 10, 150, 10_000)] == [1, 1, 1, 15, 20]
    params = TrainOptions(steps=2).deepspeed()["scheduler"]["params"]
    assert params["warmup_num_steps"] == 1 and params["total_num_steps"] >= 2
