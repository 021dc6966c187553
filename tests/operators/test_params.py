from forgeline.operators import params_from, pipeline_params, pipeline_params_from
from forgeline.pipeline import PipelineParams
from forgeline.search.options import StrategyOptions


def test_params_mirror_the_options_model():
    params = pipeline_params(train_steps=7)
    assert "train_manifest_url" not in params and "quantize_model_url" not in params
    assert params["train_steps"].value == 7
    assert params["train_workers"].value == PipelineParams().train.workers
    assert params["train_model_preset"].schema["enum"] == ["tiny", "small", "base", None]
    assert params["train_zero_stage"].schema == {
        "type": ["integer", "null"], "minimum": 0, "maximum": 3, "title": "Zero stage",
        "section": "Parallelism"}
    assert params["train_zero_stage"].description == "DeepSpeed ZeRO stage (0–3)."
    assert params["data_max_source_bytes"].schema["type"] == ["integer", "null"]
    assert params["train_deepspeed_config"].schema["type"] == ["object", "null"]


def test_literal_fields_are_enums_and_sections_group_the_form():
    params = pipeline_params()
    assert params["train_checkpoint_codec"].schema["enum"] == ["raw", "zstd", "shuffle-zstd", None]
    assert params["train_cache_mode"].schema["enum"] == ["auto", "on", "off", None]
    sections = {p.schema["section"] for p in params.values()}
    assert {"Data", "Model & training", "Parallelism", "Data cache", "Checkpoints",
            "Quantization", "Storage"} <= sections
    assert params["train_checkpoint_every_steps"].schema["section"] == "Checkpoints"


def test_list_fields_are_arrays():
    params = params_from(StrategyOptions)
    assert params["zero_stages"].schema["type"] == ["array", "null"]
    assert params["zero_stages"].schema["items"] == {"type": "integer"}
    assert params["micro_batch_sizes"].schema["items"] == {"type": "integer"}


def test_null_means_the_default_and_every_value_reaches_its_section():
    values = {name: param.value for name, param in pipeline_params().items()}
    values.update(train_steps=None, train_checkpoint_keep_last=5, data_window_tokens=32)
    params = pipeline_params_from(values)
    assert params.train.steps == PipelineParams().train.steps
    assert params.train.checkpoint.keep_last == 5 and params.data.window_tokens == 32
