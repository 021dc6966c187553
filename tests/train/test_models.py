"""The model kinds: built from the model section, checked against the dataset before any
work, saved and rebuilt (and saved as a loadable Hugging Face folder)."""

import json

import pytest
import torch
from pydantic import ValidationError
from safetensors.torch import load_file

from forgeline.datasets import DatasetManifest
from forgeline.errors import ConfigError
from forgeline.train import (
    HFCausalLM,
    ModelOptions,
    TrainConfig,
    TrainOptions,
    build_model,
    build_saved_model,
    resolve_model,
    run_training,
    save_trained_model,
)

GPT2 = {"model_type": "gpt2", "n_layer": 1, "n_embd": 32, "n_head": 2, "n_positions": 64,
        "vocab_size": 300}


def _manifest(vocab: int = 256, window: int = 32) -> DatasetManifest:
    return DatasetManifest(fingerprint="f", window_tokens=window, sample_tokens=window + 1,
                           vocab_size=vocab, seed=0, val_fraction=0.1, splits={},
                           source={"source": "s", "files": 1, "bytes": 1, "sha256": "x"},
                           created_unix_s=0.0)


def _config(**model) -> TrainConfig:
    return TrainConfig(manifest_url="file:///m.json", model=ModelOptions(**model))


def test_the_preset_adopts_the_dataset_window_and_vocabulary():
    config = resolve_model(_config(preset="tiny"), _manifest(vocab=1024, window=48))
    assert (config.shape.n_layers, config.shape.vocab_size, config.shape.seq_len) == (
        2, 1024, 48)
    logits = build_model(config)(torch.zeros(2, 48, dtype=torch.long))
    assert logits.shape == (2, 48, 1024)


def test_an_hf_config_builds_a_transformers_model_under_the_contract():
    config = resolve_model(_config(kind="hf_config", hf_config=GPT2), _manifest())
    model = build_model(config)
    assert isinstance(model, HFCausalLM) and type(model.model).__name__ == "GPT2LMHeadModel"
    assert model(torch.zeros(3, 32, dtype=torch.long)).shape == (3, 32, 300)
    recompute = build_model(config.model_copy(update={"activation_checkpointing": True}))
    assert recompute.model.is_gradient_checkpointing and not model.model.is_gradient_checkpointing
    recompute.train()(torch.zeros(2, 32, dtype=torch.long)).sum().backward()
    assert recompute.model.transformer.wte.weight.grad is not None


def test_hf_config_url_and_field_overrides(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(GPT2))
    config = resolve_model(_config(kind="hf_config", hf_config_url=str(tmp_path / "config.json"),
                                   hf_config={"n_layer": 2}), _manifest())
    assert len(build_model(config).model.transformer.h) == 2


def test_a_saved_hf_model_is_a_pretrained_folder_that_loads_its_weights(tmp_path):
    manifest_url = f"file://{tmp_path}/data/manifest.json"
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "manifest.json").write_text(_manifest().model_dump_json())
    config = resolve_model(_config(kind="hf_config", hf_config=GPT2), _manifest())
    config = config.model_copy(update={"manifest_url": manifest_url})
    torch.manual_seed(1)
    model = build_model(config)
    save_trained_model(model.state_dict(), config, f"file://{tmp_path}/train")
    folder = tmp_path / "train" / "hf"
    assert set(load_file(folder / "model.safetensors")) == set(model.model.state_dict())
    from transformers import AutoModelForCausalLM

    reference = AutoModelForCausalLM.from_pretrained(str(folder))  # a real HF folder
    tuned = resolve_model(_config(kind="pretrained", pretrained_url=str(folder)), _manifest())
    loaded = build_model(tuned)
    tokens = torch.randint(0, 256, (2, 32))
    model.eval(), loaded.eval(), reference.eval()
    torch.testing.assert_close(loaded(tokens), model(tokens))
    torch.testing.assert_close(reference(tokens).logits, model(tokens))
    rebuilt = build_saved_model(f"file://{tmp_path}/train/model.json")
    rebuilt.load_state_dict(load_file(tmp_path / "train" / "model.safetensors"))
    torch.testing.assert_close(rebuilt.eval()(tokens), model(tokens))
    # the export stage hands the trained folder on as is
    from forgeline.export.stage import ExportOptions, export_run
    from forgeline.train.models import describe_model

    train = {"model_url": f"file://{tmp_path}/train/model.safetensors",
             "architecture": describe_model(config, f"file://{tmp_path}/train")}
    exported = export_run({"train": train}, ExportOptions(targets=["model"]),
                          f"file://{tmp_path}/export")
    again = AutoModelForCausalLM.from_pretrained(exported.hf_model_url[len("file://"):]).eval()
    torch.testing.assert_close(again(tokens).logits, model(tokens))


def test_a_pretrained_folder_without_the_tied_head_loads(tmp_path):
    from transformers import AutoConfig, AutoModelForCausalLM

    fields = dict(GPT2)
    hf = AutoModelForCausalLM.from_config(AutoConfig.for_model(fields.pop("model_type"),
                                                               **fields))
    hf.save_pretrained(str(tmp_path))  # transformers' own layout (head tied, not stored)
    model = build_model(resolve_model(_config(kind="pretrained", pretrained_url=str(tmp_path)),
                                      _manifest()))
    torch.testing.assert_close(model.model.lm_head.weight, hf.lm_head.weight)


@pytest.mark.parametrize(("model", "field", "message"), [
    ({"kind": "pretrained", "pretrained_url": "/nowhere"}, "model.pretrained_url",
     "no config.json here"),
    ({"kind": "hf_config", "hf_config_url": "memory://no/config.json"}, "model.hf_config_url",
     "no config.json here"),
    ({"kind": "hf_config", "hf_config": {"model_type": "not-a-model"}}, "model.hf_config",
     "not a transformers model_type"),
    ({"kind": "hf_config", "hf_config": {**GPT2, "vocab_size": 100}},
     "model.hf_config.vocab_size", "embedding has 100 rows, the dataset's tokenizer 256"),
    ({"kind": "hf_config", "hf_config": {**GPT2, "n_positions": 16}},
     "model.hf_config.n_positions", "shorter than the dataset's window"),
    ({"kind": "factory", "factory": "no_such_module:fn"}, "model.factory", "cannot import"),
    ({"kind": "preset", "preset": "tiny"}, "model.vocab_size", None),
])
def test_bad_models_fail_before_any_work_naming_the_field(model, field, message, tmp_path):
    config = _config(**model)
    if field == "model.vocab_size":  # a given DecoderLM shape smaller than the vocabulary
        from forgeline.train import ModelConfig

        config = config.model_copy(update={"shape": ModelConfig.preset("tiny")})
        message = "smaller than the dataset's vocabulary"
    with pytest.raises(ConfigError, match=f"^{field}=.*{message}"):
        resolve_model(config, _manifest(vocab=1024 if field == "model.vocab_size" else 256))


def test_a_missing_weights_file_is_named(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(GPT2))
    with pytest.raises(ConfigError, match="model.pretrained_url=.*no model.safetensors"):
        resolve_model(_config(kind="pretrained", pretrained_url=str(tmp_path)), _manifest())


def test_the_model_section_names_missing_fields_and_kinds():
    with pytest.raises(ValidationError, match="model.kind"):
        TrainOptions(model={"kind": "keras"})
    for kind, field in (("hf_config", "model.hf_config"), ("pretrained", "model.pretrained_url"),
                        ("factory", "model.factory")):
        with pytest.raises(ValidationError, match=field):
            TrainOptions(model_kind=kind)
    with pytest.raises(ValidationError, match="model.factory='pkg.mod'"):
        TrainOptions(model_kind="factory", model_factory="pkg.mod")
    with pytest.raises(ValidationError, match="needs a model_type"):
        TrainOptions(model_kind="hf_config", model_hf_config={"n_layer": 2})


def test_run_training_refuses_a_bad_model_before_starting_ray(tiny_dataset, tmp_path):
    import ray

    options = TrainOptions(model_kind="hf_config", model_hf_config={**GPT2, "vocab_size": 64})
    config = options.to_config(tiny_dataset.manifest_url)
    ray_was_up = ray.is_initialized()  # the session's cluster may already run
    with pytest.raises(ConfigError, match="model.hf_config.vocab_size=64"):
        run_training(config, f"file://{tmp_path}/out")
    assert not (tmp_path / "out").exists() and ray.is_initialized() == ray_was_up


def test_the_search_reads_the_shape_of_each_kind_without_weights(tmp_path):
    from forgeline.train.models import trained_model_spec

    spec = trained_model_spec({"kind": "hf_config", "hf_config": {**GPT2, "n_layer": 3}}, 64,
                              "bf16")
    assert (spec.layers, spec.hidden, spec.heads, spec.vocab) == (3, 32, 2, 300)
    assert spec.param_dtype == "bf16" and spec.name == "hf:gpt2"
    (tmp_path / "config.json").write_text(json.dumps(GPT2))  # no weights: not needed
    spec = trained_model_spec({"kind": "pretrained", "pretrained_url": str(tmp_path)}, 64,
                              "fp32")
    assert spec.layers == 1 and spec.name.startswith("pretrained:")
    assert trained_model_spec({"kind": "preset", "preset": "base"}, 64, "fp32").layers == 6
