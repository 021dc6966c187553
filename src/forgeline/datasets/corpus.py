"""Reading a corpus: the built-in standard-library text, or files on any fsspec URL."""

from __future__ import annotations

import hashlib
import platform
import sys
import sysconfig
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from forgeline import storage
from forgeline.datasets.config import BUILTIN_CORPUS, SourceInfo
from forgeline.errors import ConfigError

_GLOB_CHARS = set("*?[")
_SEPARATOR = b"\n"


def _stdlib_files() -> list[Path]:
    root = Path(sysconfig.get_paths()["stdlib"])
    skip = {"site-packages", "dist-packages"}
    return sorted(
        p for p in root.rglob("*.py") if not skip.intersection(p.relative_to(root).parts)
    )


def _iter_builtin() -> Iterator[bytes]:
    for path in _stdlib_files():
        yield path.read_bytes()


def _expand(source: str) -> list[str]:
    fs, path = storage.filesystem(source, "source")
    if _GLOB_CHARS & set(path):
        paths = [p for p in fs.glob(path) if fs.isfile(p)]
    elif fs.isdir(path):
        paths = fs.find(path)
    elif fs.isfile(path):
        paths = [path]
    else:
        raise ConfigError("source", source, "no such file or folder")
    if not paths:
        raise ConfigError("source", source, "matches no files")
    return [fs.unstrip_protocol(p) for p in sorted(paths)]


def _iter_urls(urls: list[str]) -> Iterator[bytes]:
    for url in urls:
        fs, path = storage.filesystem(url, "source")
        yield fs.cat_file(path)


def read_corpus(source: str, max_bytes: int | None = None) -> tuple[np.ndarray, SourceInfo]:
    """The corpus as one uint8 token array (documents joined by a newline) and its summary."""
    if source == BUILTIN_CORPUS:
        documents, files = _iter_builtin(), len(_stdlib_files())
        python = f"{platform.python_implementation()} {sys.version.split()[0]}"
    elif source.startswith("builtin:"):
        raise ConfigError("source", source, f"unknown built-in corpus; use '{BUILTIN_CORPUS}'")
    else:
        urls = _expand(source)
        documents, files, python = _iter_urls(urls), len(urls), None
    parts, total, used = [], 0, 0
    for doc in documents:
        if max_bytes is not None and total >= max_bytes:
            break
        if not doc:
            used += 1
            continue
        piece = doc + _SEPARATOR
        if max_bytes is not None:
            piece = piece[: max_bytes - total]
        parts.append(piece)
        total += len(piece)
        used += 1
    data = b"".join(parts)
    if not data.strip():
        raise ConfigError("source", source, "the corpus holds no text (0 non-blank bytes)")
    info = SourceInfo(
        source=source,
        files=used if max_bytes is not None else files,
        bytes=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        python=python,
    )
    return np.frombuffer(data, dtype=np.uint8), info
