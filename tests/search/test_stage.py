"""The strategy-search pipeline stage (plans the training stage can run as is)."""

import pytest
from pydantic import ValidationError

from forgeline import storage
from forgeline.errors import ConfigError
from forgeline.search.stage import StrategyOptions, plan_strategy


def test_plan_respects_fixed_choices_and_is_written(tmp_path):
    options = StrategyOptions(model_size="tiny", seq_len=64, devices_per_node=2, workers=2,
                              global_batch_size=32, zero_stages=[2], top_k=3)
    result = plan_strategy(options, f"file://{tmp_path}")
    assert result.num_workers == 2 and result.zero_stage == 2
    ds = result.deepspeed_config
    assert ds["train_batch_size"] == 32
    assert ds["train_micro_batch_size_per_gpu"] * ds["gradient_accumulation_steps"] * 2 == 32
    assert ds["optimizer"]["params"]["torch_adam"] is True  # CPU accelerator: torch AdamW
    times = [p["step_time_s"] for p in result.ranking]
    assert times == sorted(times) and len(times) == 3
    assert all(p["config"]["zero_stage"] == 2 for p in result.ranking)
    saved = storage.read_json(result.plan_url)
    assert saved["emitted"]["num_workers"] == 2
    assert saved["search"]["plans"][0]["config"] == result.ranking[0]["config"]


def test_presets_and_unconstrained_zero(tmp_path):
    options = StrategyOptions(cluster="a100-80gb", nodes=2, devices_per_node=8,
                              model_size="base", seq_len=128, global_batch_size=64)
    result = plan_strategy(options, f"file://{tmp_path}")
    assert result.devices == 16 and result.deepspeed_config["train_batch_size"] == 64
    assert "torch_adam" not in result.deepspeed_config["optimizer"]["params"]


def test_a_preset_without_bf16_plans_fp16(tmp_path):
    options = StrategyOptions(cluster="v100-32gb", devices_per_node=16, model_size="tiny",
                              seq_len=64, global_batch_size=32)
    result = plan_strategy(options, f"file://{tmp_path}")
    assert result.deepspeed_config["fp16"]["enabled"] is True
    assert result.deepspeed_config["bf16"]["enabled"] is False


@pytest.mark.parametrize(("field", "value"), [("cluster", "tpu-v9"), ("zero_stages", [4]),
                                             ("micro_batch_sizes", [0]), ("zero_stages", [])])
def test_bad_options_fail_at_construction(field, value):
    with pytest.raises(ValidationError, match=field):
        StrategyOptions(**{field: value})


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"nodes": 2}, "nodes=2: 'this-machine' is one node"),
        ({"seq_len": None}, "seq_len=None: needed"),
        ({"global_batch_size": 3, "workers": 2}, "cluster='this-machine': no plan fits"),
    ],
)
def test_bad_inputs_name_the_field(tmp_path, change, message):
    options = StrategyOptions(**{"model_size": "tiny", "seq_len": 64, **change})
    with pytest.raises(ConfigError, match=message):
        plan_strategy(options, f"file://{tmp_path}")


def test_the_search_plans_for_the_dataset_vocabulary(tmp_path):
    from forgeline import stages
    from forgeline.runs import RunLayout
    from forgeline.search.stage import model_spec
    from forgeline.train.models import trained_model_spec

    assert model_spec("tiny", 64, "fp32").vocab == 256  # byte-level without a dataset
    assert model_spec("tiny", 64, "fp32", 1024).vocab == 1024
    preset = {"kind": "preset", "preset": "tiny"}
    assert trained_model_spec(preset, 64, "fp32", 1024).vocab == 1024
    # a Hugging Face config names its own vocabulary: the module's embedding decides
    hf = {"kind": "hf_config", "hf_config": {"model_type": "gpt2", "n_layer": 1, "n_embd": 32,
                                             "n_head": 2, "n_positions": 64, "vocab_size": 512}}
    assert trained_model_spec(hf, 64, "fp32", 1024).vocab == 512
    # the stage reads the vocabulary off the run's prepared dataset
    layout = RunLayout(f"file://{tmp_path}", "vocab")
    stages.run_stage("prepare", layout, {"max_source_bytes": 60_000, "window_tokens": 32,
                                         "tokenizer_kind": "bpe", "tokenizer_vocab_size": 384})
    stages.run_stage("search", layout, {"model_size": "tiny", "global_batch_size": 8,
                                        "workers": 2, "top_k": 1})
    plan = storage.read_json(layout.load()["stages"]["search"]["plan_url"])
    assert plan["search"]["model"]["vocab"] == 384
