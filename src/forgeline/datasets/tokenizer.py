"""Tokenizers of the prepare stage: byte-level (the default), a BPE/Unigram tokenizer trained
on the corpus, or a pretrained Hugging Face ``tokenizer.json`` from any fsspec URL.

Every tokenizer turns a list of documents into one token stream, each document followed by
the end-of-document token, in the narrowest unsigned dtype that holds the vocabulary.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import numpy as np

from forgeline import storage
from forgeline.datasets.config import (
    BYTE_EOD_TOKEN_ID,
    EOD_TOKEN,
    VOCAB_SIZE,
    TokenizerInfo,
    TokenizerOptions,
)
from forgeline.errors import ConfigError

TOKENIZER_FILE = "tokenizer.json"
_EOD_CANDIDATES = (EOD_TOKEN, "</s>", "<eos>", "[SEP]")


def token_dtype(vocab_size: int) -> str:
    """The narrowest unsigned integer type that holds every token id."""
    for name in ("uint8", "uint16", "uint32"):
        if vocab_size <= np.iinfo(name).max + 1:
            return name
    raise ConfigError("tokenizer.vocab_size", vocab_size, "more than 2**32 tokens")


def numpy_dtype(name: str) -> np.dtype:
    """The stored (little-endian) numpy dtype of a manifest's ``token_dtype``."""
    return np.dtype(name).newbyteorder("<")


@dataclass(frozen=True)
class TextTokenizer:
    """A tokenizer ready to encode documents; ``hf`` is None for byte-level tokens."""

    kind: str
    hf: Any | None = None
    eod_token_id: int = BYTE_EOD_TOKEN_ID

    @property
    def vocab_size(self) -> int:
        if self.hf is None:
            return VOCAB_SIZE
        return int(self.hf.get_vocab_size(with_added_tokens=True))

    @property
    def dtype(self) -> str:
        return token_dtype(self.vocab_size)

    def to_json(self) -> str | None:
        return None if self.hf is None else self.hf.to_str()

    @property
    def fingerprint(self) -> str:
        text = self.to_json()
        return "bytes" if text is None else hashlib.sha256(text.encode()).hexdigest()

    def info(self, path: str | None) -> TokenizerInfo:
        return TokenizerInfo(kind=self.kind, path=path, fingerprint=self.fingerprint,  # type: ignore[arg-type]
                             vocab_size=self.vocab_size, eod_token_id=self.eod_token_id)

    def encode(self, documents: list[bytes]) -> list[np.ndarray]:
        """Each document's tokens, its end-of-document token last."""
        dtype = numpy_dtype(self.dtype)
        if self.hf is None:
            return [np.frombuffer(doc + bytes([self.eod_token_id]), dtype=np.uint8)
                    for doc in documents]
        texts = [doc.decode("utf-8", errors="ignore") for doc in documents]
        return [np.array([*enc.ids, self.eod_token_id], dtype=dtype)
                for enc in self.hf.encode_batch(texts, add_special_tokens=False)]


def _trained(options: TokenizerOptions, documents: list[bytes]) -> TextTokenizer:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    texts = (doc.decode("utf-8", errors="ignore") for doc in documents)
    if options.kind == "bpe":
        hf = Tokenizer(models.BPE())
        hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        hf.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=options.vocab_size, special_tokens=[EOD_TOKEN], show_progress=False,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        )
    else:
        hf = Tokenizer(models.Unigram())
        hf.pre_tokenizer = pre_tokenizers.Metaspace()
        hf.decoder = decoders.Metaspace()
        trainer = trainers.UnigramTrainer(
            vocab_size=options.vocab_size, special_tokens=[EOD_TOKEN, "<unk>"],
            unk_token="<unk>", show_progress=False,
        )
    hf.train_from_iterator(texts, trainer=trainer, length=len(documents))
    return TextTokenizer(options.kind, hf, hf.token_to_id(EOD_TOKEN))


def load_tokenizer_json(url: str, field: str = "tokenizer.url") -> Any:
    """A ``tokenizers.Tokenizer`` from a tokenizer.json URL or a folder holding one."""
    from tokenizers import Tokenizer

    path = url if url.endswith(".json") else storage.join(url, TOKENIZER_FILE)
    if not storage.exists(path):
        raise ConfigError(field, url, f"no {TOKENIZER_FILE} here")
    fs, local = storage.filesystem(path, field)
    try:
        return Tokenizer.from_str(fs.cat_file(local).decode())
    except Exception as exc:  # tokenizers raises plain Exceptions on bad JSON
        raise ConfigError(field, url, f"not a Hugging Face tokenizer.json ({exc})") from exc


def _pretrained(options: TokenizerOptions) -> TextTokenizer:
    hf = load_tokenizer_json(str(options.url))
    names = (options.eod_token,) if options.eod_token else _EOD_CANDIDATES
    for name in names:
        token_id = hf.token_to_id(name)
        if token_id is not None:
            return TextTokenizer("pretrained", hf, int(token_id))
    raise ConfigError("tokenizer.eod_token", options.eod_token,
                      f"the tokenizer at {options.url} has none of {list(names)}")


def make_tokenizer(options: TokenizerOptions, documents: list[bytes]) -> TextTokenizer:
    """The tokenizer ``options`` ask for (trained on ``documents`` for bpe/unigram)."""
    if options.kind == "bytes":
        return TextTokenizer("bytes")
    if options.kind == "pretrained":
        return _pretrained(options)
    return _trained(options, documents)


def load_dataset_tokenizer(manifest_url: str) -> Any | None:
    """The ``tokenizers.Tokenizer`` saved with a dataset (None for byte-level tokens)."""
    import posixpath

    from forgeline.datasets.reader import load_manifest

    info = load_manifest(manifest_url).tokenizer
    if info.path is None:
        return None
    return load_tokenizer_json(storage.join(posixpath.dirname(manifest_url), info.path),
                               "manifest_url")
