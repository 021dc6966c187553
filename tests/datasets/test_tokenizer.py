"""Tokenizers of the prepare stage: trained BPE/Unigram, pretrained tokenizer.json at a URL,
saved beside the manifest, part of the fingerprint, stored in a wide enough dtype."""

import pytest
from tokenizers import Tokenizer

from forgeline.datasets import (
    DatasetConfig,
    TokenDataset,
    build_dataset,
    load_dataset_tokenizer,
    load_manifest,
    token_dtype,
)
from forgeline.errors import ConfigError

STDLIB = {"max_source_bytes": 60_000, "window_tokens": 32}


def test_token_dtype_is_the_narrowest_that_holds_the_vocab():
    assert [token_dtype(v) for v in (256, 257, 65536, 65537)] == [
        "uint8", "uint16", "uint16", "uint32"]


@pytest.fixture(scope="module")
def bpe(tmp_path_factory):
    out = tmp_path_factory.mktemp("bpe")
    config = DatasetConfig(**STDLIB, tokenizer={"kind": "bpe", "vocab_size": 1024})
    return config, build_dataset(config, f"file://{out}")


def test_a_bpe_tokenizer_trained_in_the_stage_is_saved_with_the_manifest(bpe):
    _, result = bpe
    manifest = load_manifest(result.manifest_url)
    assert result.vocab_size == manifest.vocab_size == 1024 and result.tokenizer == "bpe"
    assert manifest.token_dtype == "uint16" and manifest.tokenizer.path == "tokenizer.json"
    tokenizer = load_dataset_tokenizer(result.manifest_url)
    assert tokenizer.get_vocab_size() == 1024
    assert tokenizer.token_to_id("<|endoftext|>") == manifest.tokenizer.eod_token_id
    sample = TokenDataset(result.manifest_url, "train")[3]
    assert sample.dtype.itemsize == 2 and int(sample.max()) < 1024
    assert tokenizer.decode(sample.tolist())  # real subwords of the corpus
    # subwords compress: fewer windows than byte-level tokens of the same bytes
    assert result.train_samples < (60_000 // 32) / 2


def test_the_tokenizer_is_part_of_the_fingerprint(bpe, tmp_path):
    config, result = bpe
    byte_level = build_dataset(DatasetConfig(**STDLIB), f"file://{tmp_path}/bytes")
    smaller = build_dataset(config.model_copy(update={"tokenizer": config.tokenizer.model_copy(
        update={"vocab_size": 512})}), f"file://{tmp_path}/smaller")
    assert len({result.fingerprint, byte_level.fingerprint, smaller.fingerprint}) == 3


def test_a_pretrained_tokenizer_json_at_a_url_is_used_as_is(bpe, tmp_path):
    _, result = bpe
    folder = result.manifest_url.rsplit("/", 1)[0]
    again = build_dataset(DatasetConfig(**STDLIB, tokenizer={"kind": "pretrained",
                                                             "url": folder}),
                          f"file://{tmp_path}/again")
    assert again.vocab_size == 1024 and again.tokenizer == "pretrained"
    manifest, original = load_manifest(again.manifest_url), load_manifest(result.manifest_url)
    assert manifest.tokenizer.fingerprint == original.tokenizer.fingerprint
    assert TokenDataset(again.manifest_url, "train")[0].tolist() != []


def test_a_unigram_tokenizer_trains_too(tmp_path):
    result = build_dataset(DatasetConfig(max_source_bytes=20_000, window_tokens=16,
                                         tokenizer={"kind": "unigram", "vocab_size": 300}),
                           f"file://{tmp_path}")
    assert result.tokenizer == "unigram" and 64 <= result.vocab_size <= 300
    assert isinstance(load_dataset_tokenizer(result.manifest_url), Tokenizer)


def test_bad_tokenizer_values_name_the_field(tmp_path):
    with pytest.raises(ValueError, match="tokenizer.url"):
        DatasetConfig(tokenizer={"kind": "pretrained"})
    with pytest.raises(ConfigError, match="tokenizer.url=.*no tokenizer.json"):
        build_dataset(DatasetConfig(tokenizer={"kind": "pretrained", "url": str(tmp_path)}),
                      f"file://{tmp_path}/out")
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(ConfigError, match="not a Hugging Face tokenizer.json"):
        build_dataset(DatasetConfig(tokenizer={"kind": "pretrained",
                                               "url": str(tmp_path / "bad.json")}),
                      f"file://{tmp_path}/out")
    with pytest.raises(ValueError, match="tokenizer.kind"):
        DatasetConfig(tokenizer_kind="wordpiece")
