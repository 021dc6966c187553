"""Publish a file so that readers see nothing or all of it, and never over an existing one.

Per backend:

- local disk (``file://``): write a temporary name, then ``os.link`` it to the final name —
  atomic, and it fails if the name exists, so two writers cannot both win;
- object stores (``s3``, ``gs``, ``az``, …, and ``memory://``, which behaves like one): one
  whole-object PUT with ``mode="xb"`` (create-only where the backend has conditional PUTs);
  an object appears complete or not at all;
- anything else (e.g. ``throttled://`` over a folder, sftp): folders created, a temporary
  name written, then renamed; "already there" is checked on storage just before the rename
  and read back after it.
"""

from __future__ import annotations

import datetime as dt
import os
import posixpath
import uuid
from typing import Any

from forgeline import storage
from forgeline.errors import StorageError

OBJECT_STORES = frozenset({"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "adl", "oss",
                           "memory"})


class Parts:
    """A file's bytes in pieces (e.g. a chunk header and a view of the raw staging buffer),
    written one after the other: no joined copy of a large buffer is made."""

    def __init__(self, *parts: bytes | memoryview) -> None:
        self.parts = [memoryview(p).cast("B") for p in parts]

    def __len__(self) -> int:
        return sum(p.nbytes for p in self.parts)

    def tobytes(self) -> bytes:
        return b"".join(self.parts)


def _write_all(f: Any, data: bytes | Parts) -> None:
    for part in data.parts if isinstance(data, Parts) else (data,):
        f.write(part)


def _protocols(fs: Any) -> set[str]:
    return {fs.protocol} if isinstance(fs.protocol, str) else set(fs.protocol)


def is_object_store(fs: Any) -> bool:
    """Whether ``fs`` stores whole objects (no folders, no rename, atomic PUT)."""
    return bool(_protocols(fs) & OBJECT_STORES)


def temp_name(path: str) -> str:
    """A unique hidden sibling of ``path`` (GC deletes leftovers after its grace period)."""
    return posixpath.join(posixpath.dirname(path),
                          f".{posixpath.basename(path)}.{uuid.uuid4().hex}.tmp")


def _write_temp(fs: Any, path: str, data: bytes | Parts) -> str:
    fs.makedirs(posixpath.dirname(path), exist_ok=True)
    tmp = temp_name(path)
    if isinstance(data, Parts):
        with fs.open(tmp, "wb") as f:
            _write_all(f, data)
    else:
        fs.pipe_file(tmp, data)
    if fs.size(tmp) != len(data):
        size = fs.size(tmp)
        fs.rm_file(tmp)
        raise StorageError("path", path, f"short write: {size} of {len(data)} bytes")
    return tmp


def publish(fs: Any, path: str, data: bytes | Parts, exclusive: bool = False) -> bool:
    """Write ``data`` at ``path`` atomically unless a file is there; True if this call wrote it.

    ``exclusive``: a file already at ``path`` raises ``FileExistsError`` instead of being
    left alone (content-addressed chunks are left alone; manifests must not be taken twice).
    """
    if fs.exists(path):
        if exclusive:
            raise FileExistsError(path)
        return False
    if is_object_store(fs):
        try:
            with fs.open(path, "xb") as f:
                _write_all(f, data)
        except FileExistsError:
            if exclusive:
                raise
            return False
        return True
    tmp = _write_temp(fs, path, data)
    try:
        if storage.is_local(fs):
            os.link(tmp, path)  # atomic and create-only: FileExistsError if taken
            return True
        if fs.exists(path):
            raise FileExistsError(path)
        fs.mv(tmp, path)
        tmp = ""
    except FileExistsError:
        if exclusive:
            raise
        return False
    finally:
        if tmp:
            fs.rm_file(tmp)
    if exclusive and fs.cat_file(path) != (  # a rename raced ours and won
            data.tobytes() if isinstance(data, Parts) else data):
        raise FileExistsError(path)
    return True


def mtime_unix_s(info: dict[str, Any]) -> float:
    """A file's last change as unix seconds from an fsspec ``info`` dict (0 when unknown)."""
    for key in ("mtime", "created", "LastModified", "last_modified", "updated"):
        value = info.get(key)
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, dt.datetime):
            return value.timestamp() if value.tzinfo else value.replace(
                tzinfo=dt.UTC).timestamp()
        if isinstance(value, str):
            try:
                return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
            except ValueError:
                continue
    return 0.0  # unknown age: treat as old only when grace is 0
