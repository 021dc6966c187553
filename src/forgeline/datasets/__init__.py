"""Token datasets: build Parquet shards + manifest from a corpus; read samples anywhere."""

from __future__ import annotations

from forgeline._lazy import lazy_exports

_EXPORTS = {
    "MANIFEST_NAME": "build", "build_dataset": "build", "split_documents": "build",
    "split_indices": "build", "window_starts": "build",
    "BUILTIN_CORPUS": "config", "EOD_TOKEN": "config", "VOCAB_SIZE": "config",
    "DatasetConfig": "config", "DatasetManifest": "config", "DatasetResult": "config",
    "TokenizerInfo": "config", "TokenizerOptions": "config",
    "Corpus": "corpus", "read_corpus": "corpus", "read_documents": "corpus",
    "TOKENIZER_FILE": "tokenizer", "TextTokenizer": "tokenizer",
    "load_dataset_tokenizer": "tokenizer", "load_tokenizer_json": "tokenizer",
    "make_tokenizer": "tokenizer", "token_dtype": "tokenizer",
    "TokenDataset": "reader", "load_manifest": "reader",
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)

