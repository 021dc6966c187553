"""Reading a corpus as documents: the built-in standard-library text, text files, JSONL or
Parquet rows (a named text column), or a saved Hugging Face dataset, on any fsspec URL.

Every format yields documents as UTF-8 bytes; ``max_source_bytes`` counts each document plus
one separator byte, cutting the last one short, so a budget means the same in every format.
"""

from __future__ import annotations

import hashlib
import json
import platform
import sys
import sysconfig
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from forgeline import storage
from forgeline.datasets.config import BUILTIN_CORPUS, DatasetConfig, SourceInfo
from forgeline.errors import ConfigError

_GLOB_CHARS = set("*?[")
_SEPARATOR = b"\n"
_SUFFIXES = {"jsonl": (".jsonl", ".json", ".jsonl.gz", ".jsonl.zst"), "parquet": (".parquet",)}


@dataclass(frozen=True)
class Corpus:
    """The documents read (the last possibly cut by the byte budget) and their summary."""

    documents: list[bytes]
    info: SourceInfo

    def joined(self) -> bytes:
        """Documents each followed by a newline, as the byte-level tokenizer sees them."""
        return b"".join(doc + _SEPARATOR for doc in self.documents)[: self.info.bytes]


def _stdlib_files() -> list[Path]:
    root = Path(sysconfig.get_paths()["stdlib"])
    skip = {"site-packages", "dist-packages"}
    return sorted(
        p for p in root.rglob("*.py") if not skip.intersection(p.relative_to(root).parts)
    )


def _expand(source: str, fmt: str = "text") -> list[str]:
    fs, path = storage.filesystem(source, "source")
    if _GLOB_CHARS & set(path):
        paths = [p for p in fs.glob(path) if fs.isfile(p)]
    elif fs.isdir(path):
        paths = [p for p in fs.find(path) if fmt not in _SUFFIXES or p.endswith(_SUFFIXES[fmt])]
    elif fs.isfile(path):
        paths = [path]
    else:
        raise ConfigError("source", source, "no such file or folder")
    if not paths:
        raise ConfigError("source", source, "matches no files")
    return [fs.unstrip_protocol(p) for p in sorted(paths)]


def _no_column(column: str, where: str, columns: list[str]) -> ConfigError:
    return ConfigError("text_column", column, f"not a column of {where} (it has {columns})")


def _text_files(urls: list[str]) -> Iterator[bytes]:
    for url in urls:
        fs, path = storage.filesystem(url, "source")
        yield fs.cat_file(path)


def _jsonl_rows(urls: list[str], column: str) -> Iterator[bytes]:
    for url in urls:
        fs, path = storage.filesystem(url, "source")
        with fs.open(path, "rt", encoding="utf-8", compression="infer") as lines:
            for number, line in enumerate(lines, 1):
                if not line.strip():
                    continue
                row = json.loads(line)
                if not isinstance(row, dict) or column not in row:
                    keys = sorted(row) if isinstance(row, dict) else []
                    raise _no_column(column, f"line {number} of {url}", keys)
                yield str(row[column]).encode()


def _check_parquet_columns(urls: list[str], column: str) -> None:
    import pyarrow.parquet as pq

    for url in urls:
        fs, path = storage.filesystem(url, "source")
        with fs.open(path, "rb") as f:
            names = pq.read_schema(f).names
        if column not in names:
            raise _no_column(column, url, names)


def _parquet_rows(urls: list[str], column: str) -> Iterator[bytes]:
    import pyarrow.parquet as pq

    for url in urls:
        fs, path = storage.filesystem(url, "source")
        with fs.open(path, "rb") as f:
            for batch in pq.ParquetFile(f).iter_batches(columns=[column], batch_size=1024):
                for text in batch.column(0).to_pylist():
                    if text is not None:
                        yield str(text).encode()


def _hf_dataset(source: str, column: str) -> tuple[Iterator[bytes], int]:
    """Rows of a ``datasets.save_to_disk`` folder (every split of a DatasetDict, by name)."""
    try:
        import datasets
    except ImportError as exc:  # an optional extra
        raise ConfigError("format", "hf_dataset", "needs the `datasets` package") from exc
    if not storage.exists(storage.join(source, "dataset_info.json")) and not storage.exists(
            storage.join(source, "dataset_dict.json")):
        raise ConfigError("source", source, "not a saved Hugging Face dataset "
                          "(no dataset_info.json or dataset_dict.json)")
    loaded = datasets.load_from_disk(source)
    parts = [loaded[k] for k in sorted(loaded)] if isinstance(loaded, datasets.DatasetDict) \
        else [loaded]
    for part in parts:
        if column not in part.column_names:
            raise _no_column(column, source, part.column_names)

    def rows() -> Iterator[bytes]:
        for part in parts:
            for batch in part.iter(batch_size=1024):
                yield from (str(t).encode() for t in batch[column] if t is not None)

    return rows(), len(parts)


def _documents(config: DatasetConfig) -> tuple[Iterator[bytes], int, str | None]:
    source, column = config.source, config.text_column
    if source == BUILTIN_CORPUS:
        if config.format != "text":
            raise ConfigError("format", config.format, f"'{BUILTIN_CORPUS}' is text")
        files = _stdlib_files()
        python = f"{platform.python_implementation()} {sys.version.split()[0]}"
        return (p.read_bytes() for p in files), len(files), python
    if source.startswith("builtin:"):
        raise ConfigError("source", source, f"unknown built-in corpus; use '{BUILTIN_CORPUS}'")
    if config.format == "hf_dataset":
        rows, parts = _hf_dataset(source, column)
        return rows, parts, None
    urls = _expand(source, config.format)
    if config.format == "jsonl":
        rows = _jsonl_rows(urls, column)
        first = next(rows, None)  # the column is checked before any work
        return _chain(first, rows), len(urls), None
    if config.format == "parquet":
        _check_parquet_columns(urls, column)
        return _parquet_rows(urls, column), len(urls), None
    return _text_files(urls), len(urls), None


def _chain(first: bytes | None, rest: Iterator[bytes]) -> Iterator[bytes]:
    if first is not None:
        yield first
        yield from rest


def read_documents(config: DatasetConfig) -> Corpus:
    """The corpus of ``config`` as documents, within ``max_source_bytes``."""
    documents, files, python = _documents(config)
    max_bytes = config.max_source_bytes
    kept, total, seen = [], 0, 0
    for doc in documents:
        if max_bytes is not None and total >= max_bytes:
            break
        seen += 1
        if not doc:
            continue
        size = len(doc) + len(_SEPARATOR)
        if max_bytes is not None and total + size > max_bytes:
            doc, size = doc[: max_bytes - total], max_bytes - total
        kept.append(doc)
        total += size
    corpus = Corpus(kept, SourceInfo(source=config.source, files=files, bytes=total, sha256="",
                                     python=python, format=config.format,
                                     documents=len(kept)))
    data = corpus.joined()
    if not data.strip():
        raise ConfigError("source", config.source,
                          "the corpus holds no text (0 non-blank bytes)")
    used = seen if max_bytes is not None and config.format == "text" else files
    info = corpus.info.model_copy(update={"sha256": hashlib.sha256(data).hexdigest(),
                                          "files": used})
    return Corpus(kept, info)


def read_corpus(source: str, max_bytes: int | None = None) -> tuple[np.ndarray, SourceInfo]:
    """Text files as one uint8 byte-token array (documents joined by a newline)."""
    corpus = read_documents(DatasetConfig(source=source, max_source_bytes=max_bytes))
    return np.frombuffer(corpus.joined(), dtype=np.uint8), corpus.info
