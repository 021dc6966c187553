"""fsspec helpers: URL joining, atomic writes, JSON files, writability probes.

Every forgeline artifact goes through these so that local disks, object stores
and ``memory://`` behave the same, and nothing half-written is ever published.
"""

from __future__ import annotations

import json
import posixpath
import uuid
from pathlib import Path
from typing import Any

import fsspec
from fsspec.core import url_to_fs

from forgeline.errors import StorageError


def filesystem(url: str, field: str = "url") -> tuple[fsspec.AbstractFileSystem, str]:
    """Resolve ``url`` to ``(filesystem, path)``; a clear error if its protocol is unknown."""
    try:
        return url_to_fs(url)
    except (ImportError, ValueError) as exc:
        raise StorageError(field, url, f"no usable filesystem for this URL ({exc})") from exc


def is_local(fs: fsspec.AbstractFileSystem) -> bool:
    """Whether ``fs`` is this machine's own disk (``file://``), where renames are atomic."""
    protocols = (fs.protocol,) if isinstance(fs.protocol, str) else fs.protocol
    return bool({"file", "local"} & set(protocols))


def join(url: str, *parts: str) -> str:
    """Join path parts onto a URL with forward slashes, keeping the protocol."""
    return posixpath.join(url.rstrip("/"), *parts)


def normalize_root(root: str) -> str:
    """Turn a plain local path into an absolute ``file://`` URL; leave URLs alone."""
    if "://" in root:
        return root.rstrip("/")
    return "file://" + str(Path(root).expanduser().resolve())


def write_bytes_atomic(url: str, data: bytes) -> None:
    """Write ``data`` to ``url`` so that readers see the old file or the whole new one."""
    fs, path = filesystem(url)
    parent = posixpath.dirname(path)
    fs.makedirs(parent, exist_ok=True)
    tmp = posixpath.join(parent, f".{posixpath.basename(path)}.{uuid.uuid4().hex}.tmp")
    fs.pipe_file(tmp, data)
    if fs.size(tmp) != len(data):
        fs.rm_file(tmp)
        raise StorageError("url", url, f"short write: {fs.size(tmp)} of {len(data)} bytes")
    fs.mv(tmp, path)


def write_json_atomic(url: str, obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    write_bytes_atomic(url, json.dumps(obj, indent=2, sort_keys=True).encode())


def read_json(url: str) -> Any:
    """Read a JSON document from ``url``."""
    fs, path = filesystem(url)
    with fs.open(path, "rb") as f:
        return json.load(f)


def exists(url: str) -> bool:
    fs, path = filesystem(url)
    return fs.exists(path)


def ensure_writable(url: str, field: str) -> None:
    """Create ``url`` as a directory and prove it takes a write, before any real work starts."""
    fs, path = filesystem(url, field)
    probe = posixpath.join(path, f".write-probe-{uuid.uuid4().hex}")
    try:
        fs.makedirs(path, exist_ok=True)
        fs.pipe_file(probe, b"ok")
        fs.rm_file(probe)
    except (OSError, PermissionError) as exc:
        raise StorageError(field, url, f"cannot write here ({type(exc).__name__}: {exc})") from exc
