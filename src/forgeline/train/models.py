"""The model kinds of the training stage, behind one contract: int64 tokens ``[batch, seq]``
→ logits ``[batch, seq, ≥ vocab]``.

``resolve_model`` (driver, before any work) fits the model section to the dataset and checks
it; ``build_model`` (each worker) builds the module; ``save_trained_model`` writes the final
weights plus ``model.json`` (enough to rebuild the module with ``build_saved_model``, no
URL of the original needed) and, for Hugging Face kinds, a loadable Hugging Face folder.
"""

from __future__ import annotations

import importlib
import posixpath
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from forgeline import storage
from forgeline.datasets.config import DatasetManifest
from forgeline.errors import ConfigError
from forgeline.train.config import ModelConfig, ModelOptions, TrainConfig

MODEL_FILE = "model.safetensors"
MODEL_CONFIG_FILE = "model.json"
HF_FOLDER = "hf"
HF_CONFIG_FILE = "config.json"
HF_INDEX_FILE = "model.safetensors.index.json"
SAVED_FORMAT = "forgeline.model/1"

__all__ = ["HFCausalLM", "build_model", "build_saved_model", "describe_model",
           "hf_config_of", "load_safetensors_folder", "resolve_model", "save_hf_folder",
           "save_trained_model"]


class HFCausalLM(nn.Module):
    """A ``transformers`` causal LM under forgeline's contract (logits, no KV cache)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=tokens, use_cache=False).logits


def _hf_field(options: ModelOptions) -> str:
    return "model.pretrained_url" if options.kind == "pretrained" else "model.hf_config_url"


def hf_config_of(options: ModelOptions) -> Any:
    """The ``transformers`` config of an hf_config/pretrained model section (no downloads)."""
    from transformers import AutoConfig

    fields: dict[str, Any] = {}
    url = options.hf_config_url
    if options.kind == "pretrained":
        url = storage.join(str(options.pretrained_url), HF_CONFIG_FILE)
    if url:
        if not storage.exists(url):
            raise ConfigError(_hf_field(options), url, f"no {HF_CONFIG_FILE} here")
        fields = dict(storage.read_json(url))
    fields.update(options.hf_config or {})
    model_type = fields.pop("model_type", None)
    for key in ("architectures", "transformers_version", "_name_or_path", "torch_dtype",
                "dtype"):
        fields.pop(key, None)
    try:
        return AutoConfig.for_model(str(model_type), **fields)
    except (ValueError, KeyError) as exc:
        raise ConfigError("model.hf_config", model_type,
                          f"not a transformers model_type ({exc})") from exc


def _positions(hf_config: Any) -> int | None:
    for name in ("n_positions", "max_position_embeddings", "n_ctx", "max_seq_len"):
        value = getattr(hf_config, name, None)
        if isinstance(value, int):
            return value
    return None


def _factory(options: ModelOptions) -> Callable[..., nn.Module]:
    module_name, _, attr = str(options.factory).partition(":")
    try:
        function = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError("model.factory", options.factory, f"cannot import it ({exc})") from exc
    if not callable(function):
        raise ConfigError("model.factory", options.factory, "not callable")
    return function


def _check_hf(config: TrainConfig) -> None:
    options = config.model
    hf = hf_config_of(options)
    vocab = getattr(hf, "vocab_size", None)
    field = "model.hf_config.vocab_size" if options.kind == "hf_config" else \
        "model.pretrained_url"
    if isinstance(vocab, int) and vocab < config.vocab_size:
        raise ConfigError(field, vocab, f"the model's embedding has {vocab} rows, the "
                          f"dataset's tokenizer {config.vocab_size} tokens")
    positions = _positions(hf)
    if positions is not None and positions < config.seq_len:
        raise ConfigError("model.hf_config.n_positions", positions,
                          f"shorter than the dataset's window ({config.seq_len} tokens)")
    if options.kind == "pretrained":
        _weight_files(str(options.pretrained_url))


def _normalized(config: TrainConfig) -> TrainConfig:
    """``config`` with a DecoderLM shape assigned to ``model`` after validation (older
    callers) turned into the preset kind with that shape."""
    if isinstance(config.model, ModelConfig):
        return TrainConfig.model_validate({**config.model_dump(exclude={"model"}),
                                           "model": config.model.model_dump()})
    return config


def resolve_model(config: TrainConfig, manifest: DatasetManifest) -> TrainConfig:
    """Fit ``config``'s model to the dataset (window, vocabulary) and check it, before any
    work: a missing config.json or weights, an unknown model type or factory, or a model
    whose embedding is smaller than the tokenizer's vocabulary each fail naming the field."""
    config = _normalized(config)
    update: dict[str, Any] = {"seq_len": manifest.window_tokens,
                              "vocab_size": manifest.vocab_size}
    options = config.model
    if options.kind == "preset":
        given = config.shape
        shape = given or ModelConfig.preset(options.preset, vocab_size=manifest.vocab_size)
        if shape.vocab_size < manifest.vocab_size:
            raise ConfigError("model.vocab_size", shape.vocab_size,
                              f"smaller than the dataset's vocabulary ({manifest.vocab_size})")
        update["shape"] = shape.model_copy(update={
            "seq_len": manifest.window_tokens,
            "activation_checkpointing": config.activation_checkpointing})
    config = config.model_copy(update=update)
    if options.kind in ("hf_config", "pretrained"):
        _check_hf(config)
    elif options.kind == "factory":
        _factory(options)
    return config


def _weight_files(folder: str) -> list[str]:
    index = storage.join(folder, HF_INDEX_FILE)
    if storage.exists(index):
        names = sorted(set(storage.read_json(index)["weight_map"].values()))
        return [storage.join(folder, name) for name in names]
    single = storage.join(folder, MODEL_FILE)
    if not storage.exists(single):
        raise ConfigError("model.pretrained_url", folder,
                          f"no {MODEL_FILE} (or {HF_INDEX_FILE}) here")
    return [single]


def load_safetensors_folder(folder: str) -> dict[str, torch.Tensor]:
    """Every tensor of a Hugging Face folder's safetensors weights (one file or shards)."""
    from safetensors.torch import load

    state: dict[str, torch.Tensor] = {}
    for url in _weight_files(folder):
        fs, path = storage.filesystem(url, "model.pretrained_url")
        state.update(load(fs.cat_file(path)))
    return state


def _load_hf_weights(model: nn.Module, state: Mapping[str, torch.Tensor], where: str) -> None:
    """Load ``state`` strictly, except keys tied to a loaded one (e.g. ``lm_head.weight``)."""
    missing, unexpected = model.load_state_dict(dict(state), strict=False)
    if hasattr(model, "tie_weights"):
        model.tie_weights()
    params = dict(model.named_parameters(remove_duplicate=False))
    loaded = {params[k].data_ptr() for k in state if k in params}
    untied = [k for k in missing if k not in params or params[k].data_ptr() not in loaded]
    if untied or unexpected:
        raise ConfigError("model.pretrained_url", where, f"weights do not fit the config: "
                          f"missing {untied[:5]}, unexpected {list(unexpected)[:5]}")


def _hf_module(hf_config: Any, activation_checkpointing: bool) -> HFCausalLM:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_config(hf_config)
    if activation_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return HFCausalLM(model)


def _factory_module(config: TrainConfig) -> nn.Module:
    module = _factory(config.model)(
        vocab_size=config.vocab_size, seq_len=config.seq_len,
        activation_checkpointing=config.activation_checkpointing,
        **config.model.factory_kwargs,
    )
    if not isinstance(module, nn.Module):
        raise ConfigError("model.factory", config.model.factory,
                          f"returned a {type(module).__name__}, not an nn.Module")
    return module


def build_model(config: TrainConfig) -> nn.Module:
    """The module to train (a resolved ``config``); pretrained weights loaded."""
    from forgeline.train.model import DecoderLM

    kind = config.model.kind
    if kind == "preset":
        return DecoderLM(config.shape or ModelConfig.preset(config.model.preset))
    if kind == "factory":
        return _factory_module(config)
    module = _hf_module(hf_config_of(config.model), config.activation_checkpointing)
    if kind == "pretrained":
        url = str(config.model.pretrained_url)
        _load_hf_weights(module.model, load_safetensors_folder(url), url)
    return module


def describe_model(config: TrainConfig, output_url: str | None = None) -> dict[str, Any]:
    """What the report shows and ``model.json`` keeps: kind, name and the model's config."""
    config = _normalized(config)
    kind = config.model.kind
    out: dict[str, Any] = {"kind": kind, "name": config.model.name,
                           "seq_len": config.seq_len, "vocab_size": config.vocab_size}
    if kind == "preset":
        out["shape"] = (config.shape or ModelConfig.preset(config.model.preset)).model_dump()
    elif kind == "factory":
        out["factory"], out["factory_kwargs"] = config.model.factory, config.model.factory_kwargs
    else:
        out["hf_config"] = hf_config_of(config.model).to_dict()
        if config.model.pretrained_url:
            out["pretrained_url"] = config.model.pretrained_url
        if output_url is not None:
            out["hf_folder_url"] = storage.join(output_url, HF_FOLDER)
    return out


def _unshared(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Contiguous tensors, a copy for each that shares memory with an earlier one (tied
    weights): safetensors stores every name separately."""
    seen: set[int] = set()
    out = {}
    for key, value in state.items():
        value = value.detach().contiguous()
        if value.data_ptr() in seen:
            value = value.clone()
        seen.add(value.data_ptr())
        out[key] = value
    return out


def save_hf_folder(state: Mapping[str, torch.Tensor], hf_config: dict[str, Any], url: str,
                   tokenizer_json: bytes | None = None) -> str:
    """A Hugging Face model folder (config.json, model.safetensors, tokenizer.json) that
    ``AutoModelForCausalLM.from_pretrained`` and the ``pretrained`` kind load. ``state`` holds
    the transformers model's weights (no ``HFCausalLM`` prefix)."""
    from safetensors.torch import save

    storage.write_bytes_atomic(storage.join(url, MODEL_FILE),
                               save(_unshared(state), {"format": "pt"}))
    if tokenizer_json is not None:
        storage.write_bytes_atomic(storage.join(url, "tokenizer.json"), tokenizer_json)
    storage.write_json_atomic(storage.join(url, HF_CONFIG_FILE), hf_config)  # last: complete
    return url


def _dataset_tokenizer_json(manifest_url: str) -> bytes | None:
    from forgeline.datasets.reader import load_manifest

    info = load_manifest(manifest_url).tokenizer
    if info.path is None:
        return None
    fs, path = storage.filesystem(storage.join(posixpath.dirname(manifest_url), info.path))
    return fs.cat_file(path)


def save_trained_model(state: Mapping[str, torch.Tensor], config: TrainConfig,
                       output_url: str) -> str:
    """The final weights (``model.safetensors``) and ``model.json``; a Hugging Face folder
    beside them for hf_config/pretrained models. Returns the weights' URL."""
    from safetensors.torch import save

    url = storage.join(output_url, MODEL_FILE)
    storage.write_bytes_atomic(url, save(_unshared(state)))
    config = _normalized(config)
    described = describe_model(config, output_url)
    if "hf_config" in described:
        prefix = "model."
        hf_state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        save_hf_folder(hf_state, described["hf_config"], described["hf_folder_url"],
                       _dataset_tokenizer_json(config.manifest_url))
    storage.write_json_atomic(storage.join(output_url, MODEL_CONFIG_FILE),
                              {"format": SAVED_FORMAT, **described})
    return url


def build_saved_model(model_json_url: str) -> nn.Module:
    """The (untrained) module a saved ``model.json`` describes, ready for its weights.
    A factory model imports its factory again."""
    from forgeline.train.model import DecoderLM

    saved = storage.read_json(model_json_url)
    if saved.get("format") != SAVED_FORMAT:  # an older model.json: a DecoderLM shape
        return DecoderLM(ModelConfig.model_validate(saved))
    kind = saved["kind"]
    if kind == "preset":
        return DecoderLM(ModelConfig.model_validate(saved["shape"]))
    if kind == "factory":
        config = TrainConfig(manifest_url="", seq_len=saved["seq_len"],
                             vocab_size=saved["vocab_size"],
                             model=ModelOptions(kind="factory", factory=saved["factory"],
                                                factory_kwargs=saved["factory_kwargs"]))
        return _factory_module(config)
    return _hf_module(hf_config_of(ModelOptions(kind="hf_config",
                                                hf_config=saved["hf_config"])), False)


def trained_model_spec(model: ModelOptions | Mapping[str, Any], seq_len: int,
                       precision: str, vocab_size: int | None = None) -> Any:
    """The search stage's ``ModelSpec`` of a model section, read off the module built on the
    meta device (shapes only: no memory, no weights read); ``vocab_size``: the dataset's
    (what a factory model is built for)."""
    from forgeline.search.specs import ModelSpec

    options = model if isinstance(model, ModelOptions) else ModelOptions.model_validate(model)
    name = options.name
    if options.kind == "pretrained":  # the shapes of its config.json; no weights read
        options = ModelOptions(kind="hf_config", hf_config=hf_config_of(options).to_dict())
    vocab = {"vocab_size": vocab_size} if vocab_size else {}
    config = TrainConfig(manifest_url="", model=options, seq_len=seq_len, **vocab)
    if options.kind == "preset":
        config = config.model_copy(update={"shape": ModelConfig.preset(
            options.preset, seq_len=seq_len, **vocab)})
    with torch.device("meta"):
        module = build_model(config)
    dtype = "fp32" if precision == "fp32" else "bf16"
    spec = ModelSpec.from_module(module, seq_len=seq_len, name=name)
    return spec.model_copy(update={"param_dtype": dtype, "grad_dtype": dtype})


def copy_hf_folder(source_url: str, out_url: str) -> str:
    """Write the Hugging Face folder at ``source_url`` (config, weights, tokenizer) again under
    ``out_url``, each file atomically and the config last; return ``out_url``."""
    tokenizer_url = storage.join(source_url, "tokenizer.json")
    tokenizer = None
    if storage.exists(tokenizer_url):
        fs, path = storage.filesystem(tokenizer_url)
        tokenizer = fs.cat_file(path)
    config = storage.read_json(storage.join(source_url, HF_CONFIG_FILE))
    return save_hf_folder(load_safetensors_folder(source_url), config, out_url, tokenizer)
