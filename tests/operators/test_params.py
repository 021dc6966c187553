from forgeline.operators import params_from, templated
from forgeline.pipeline import PipelineParams


def test_params_mirror_the_options_model():
    params = params_from(PipelineParams, exclude=frozenset({"manifest_url"}), steps=7)
    assert "manifest_url" not in params
    assert params["steps"].value == 7
    assert params["workers"].value == PipelineParams().workers
    assert params["model_size"].schema["enum"] == ["tiny", "small", "base"]
    assert params["zero_stage"].schema == {"type": "integer", "minimum": 0, "maximum": 3}
    assert params["max_source_bytes"].schema["type"] == ["integer", "null"]
    assert params["deepspeed_config"].schema["type"] == ["object", "null"]


def test_templated():
    assert templated("a", "b") == {"a": "{{ params.a }}", "b": "{{ params.b }}"}
