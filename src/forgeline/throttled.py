"""A throttled fsspec filesystem: wraps another filesystem and imitates remote object storage.

Every request pays ``latency_s`` (requests in flight overlap, as with a real object store), and
all bytes moved share one ``bandwidth_bytes_per_s`` budget — a token bucket kept in a small
file under a ``fcntl`` lock, so threads *and* processes (Ray workers) on one machine share it.
Requests and bytes are counted in the same shared file.

Two URL forms of the ``throttled`` protocol, which the ``fsspec.specs`` entry point registers in
every process (Ray workers too) without importing this module first:

- self-describing (works in any process, e.g. Ray workers)::

      throttled://latency_s=0.005,bandwidth_bytes_per_s=5e7,bucket=b1@file/tmp/data/manifest.json

- chained, settings from keyword arguments or fsspec config::

      throttled::file:///tmp/data/manifest.json
"""

from __future__ import annotations

import fcntl
import os
import struct
import tempfile
import threading
import time
from typing import Any

import fsspec
from fsspec.implementations.chained import ChainedFileSystem
from fsspec.spec import AbstractBufferedFile

from forgeline.errors import ConfigError

PROTOCOL = "throttled"
_STATE = struct.Struct("<ddd")  # next free time (unix s), requests, bytes
_LOCKS: dict[str, threading.Lock] = {}
_LOCKS_GUARD = threading.Lock()


def throttled_url(
    url: str, latency_s: float = 0.005, bandwidth_bytes_per_s: float = 50e6,
    bucket: str = "default",
) -> str:
    """The self-describing throttled URL of ``url`` (``file://…``, ``memory://…``, …)."""
    if "://" not in url:
        raise ConfigError("url", url, "needs a protocol, e.g. file:///data or memory://data")
    protocol, path = url.split("://", 1)
    if not path.startswith("/"):
        path = "/" + path
    opts = f"latency_s={latency_s!r},bandwidth_bytes_per_s={bandwidth_bytes_per_s!r},"
    return f"{PROTOCOL}://{opts}bucket={bucket}@{protocol}{path}"


def _parse(url: str) -> tuple[dict[str, Any], str, str]:
    """``throttled://opts@proto/path`` → (options, inner protocol, inner path)."""
    rest = url[len(PROTOCOL) + 3 :]
    opts: dict[str, Any] = {}
    if "@" in rest.split("/", 1)[0]:
        head, rest = rest.split("@", 1)
        for item in filter(None, head.split(",")):
            key, _, value = item.partition("=")
            opts[key] = value if key == "bucket" else float(value)
    protocol, _, path = rest.partition("/")
    return opts, protocol or "file", "/" + path


class _Bucket:
    """Token bucket + counters shared by every thread and process using one bucket name."""

    def __init__(self, name: str, bandwidth_bytes_per_s: float) -> None:
        self.name, self.bandwidth = name, bandwidth_bytes_per_s
        self.path = os.path.join(tempfile.gettempdir(), f"forgeline-throttle-{name}.state")
        with _LOCKS_GUARD:
            self._lock = _LOCKS.setdefault(self.path, threading.Lock())

    def _update(self, nbytes: int, requests: int) -> float:
        """Account one transfer; return the unix time at which it finishes."""
        with self._lock:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                raw = os.pread(fd, _STATE.size, 0)
                free, reqs, moved = _STATE.unpack(raw) if len(raw) == _STATE.size else (0, 0, 0)
                now = time.time()
                finish = max(free, now) + (nbytes / self.bandwidth if self.bandwidth > 0 else 0)
                os.pwrite(fd, _STATE.pack(finish, reqs + requests, moved + nbytes), 0)
                return finish
            finally:
                os.close(fd)  # closing releases the flock

    def transfer(self, nbytes: int) -> None:
        wait = self._update(nbytes, 1) - time.time()
        if wait > 0:
            time.sleep(wait)

    def counters(self) -> dict[str, float]:
        with self._lock:
            try:
                with open(self.path, "rb") as f:
                    fcntl.flock(f.fileno(), fcntl.LOCK_SH)
                    raw = f.read(_STATE.size)
            except FileNotFoundError:
                raw = b""
        _, reqs, moved = _STATE.unpack(raw) if len(raw) == _STATE.size else (0, 0, 0)
        return {"requests": int(reqs), "bytes": int(moved)}

    def reset(self) -> None:
        with self._lock, open(self.path, "wb") as f:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
            f.write(_STATE.pack(0, 0, 0))


class ThrottledFileSystem(ChainedFileSystem):
    """Wraps ``target_protocol``'s filesystem; each request waits ``latency_s`` plus its share
    of the bucket's bandwidth. Paths are the wrapped filesystem's paths."""

    protocol = PROTOCOL
    root_marker = "/"

    def __init__(
        self, target_protocol: str = "file", target_options: dict[str, Any] | None = None,
        latency_s: float = 0.005, bandwidth_bytes_per_s: float = 50e6, bucket: str = "default",
        fo: str | None = None, **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        latency_s, bandwidth_bytes_per_s = float(latency_s), float(bandwidth_bytes_per_s)
        if latency_s < 0:
            raise ConfigError("latency_s", latency_s, "must be ≥ 0")
        if bandwidth_bytes_per_s <= 0:
            raise ConfigError("bandwidth_bytes_per_s", bandwidth_bytes_per_s, "must be > 0")
        self.target_protocol = target_protocol
        self.fs = fsspec.filesystem(target_protocol, **(target_options or {}))
        self.latency_s, self.bandwidth_bytes_per_s = latency_s, bandwidth_bytes_per_s
        self.bucket_name = str(bucket)
        self._bucket = _Bucket(self.bucket_name, bandwidth_bytes_per_s)

    # --- URL handling -------------------------------------------------------------------
    @classmethod
    def _strip_protocol(cls, path: Any) -> str:
        path = fsspec.utils.stringify_path(path)
        if isinstance(path, list):
            return [cls._strip_protocol(p) for p in path]  # type: ignore[return-value]
        if path.startswith(PROTOCOL + "://"):
            if not path[len(PROTOCOL) + 3 :]:
                return ""  # chained form: the path comes from the wrapped URL
            path = _parse(path)[2]
        return path.rstrip("/") or "/"

    @staticmethod
    def _get_kwargs_from_urls(path: str) -> dict[str, Any]:
        if not path.startswith(PROTOCOL + "://") or not path[len(PROTOCOL) + 3 :]:
            return {}  # the chained form names its target itself
        opts, protocol, _ = _parse(path)
        return {**opts, "target_protocol": protocol}

    def unstrip_protocol(self, name: str) -> str:
        return throttled_url(
            f"{self.target_protocol}://{name}", self.latency_s, self.bandwidth_bytes_per_s,
            self.bucket_name,
        )

    # --- throttling ---------------------------------------------------------------------
    def _request(self, nbytes: int = 0) -> None:
        if self.latency_s:
            time.sleep(self.latency_s)
        self._bucket.transfer(nbytes)

    def stats(self) -> dict[str, float]:
        """Requests and bytes through this bucket, from every thread and process."""
        return self._bucket.counters()

    def reset_stats(self) -> None:
        self._bucket.reset()

    # --- primitives ---------------------------------------------------------------------
    def ls(self, path: str, detail: bool = True, **kwargs: Any) -> list[Any]:
        self._request()
        return self.fs.ls(path, detail=detail, **kwargs)

    def info(self, path: str, **kwargs: Any) -> dict[str, Any]:
        self._request()
        return self.fs.info(path, **kwargs)

    def cat_file(self, path: str, start: int | None = None, end: int | None = None,
                 **kwargs: Any) -> bytes:
        data = self.fs.cat_file(self._strip_protocol(path), start=start, end=end, **kwargs)
        self._request(len(data))
        return data

    def pipe_file(self, path: str, value: bytes, **kwargs: Any) -> None:
        self._request(len(value))
        self.fs.pipe_file(self._strip_protocol(path), value, **kwargs)

    def _open(self, path: str, mode: str = "rb", block_size: int | None = None,
              autocommit: bool = True, cache_options: dict[str, Any] | None = None,
              **kwargs: Any) -> Any:
        if "r" not in mode:
            self._request()
            return self.fs.open(path, mode, **kwargs)
        return _ThrottledFile(
            self, path, mode, block_size=block_size or 2**16,
            cache_type=kwargs.pop("cache_type", "none"), cache_options=cache_options,
            size=self.info(path)["size"],
        )

    def makedirs(self, path: str, exist_ok: bool = False) -> None:
        self._request()
        self.fs.makedirs(path, exist_ok=exist_ok)

    def mkdir(self, path: str, create_parents: bool = True, **kwargs: Any) -> None:
        self._request()
        self.fs.mkdir(path, create_parents=create_parents, **kwargs)

    def rm_file(self, path: str) -> None:
        self._request()
        self.fs.rm_file(path)

    def rmdir(self, path: str) -> None:
        self._request()
        self.fs.rmdir(path)

    def cp_file(self, path1: str, path2: str, **kwargs: Any) -> None:
        self._request()
        self.fs.cp_file(path1, path2, **kwargs)

    def mv(self, path1: str, path2: str, **kwargs: Any) -> None:
        self._request()
        self.fs.mv(path1, path2, **kwargs)

    def created(self, path: str) -> Any:
        return self.fs.created(path)

    def modified(self, path: str) -> Any:
        return self.fs.modified(path)


class _ThrottledFile(AbstractBufferedFile):
    """Read-only file whose every range fetch is one throttled request."""

    def _fetch_range(self, start: int, end: int) -> bytes:
        return self.fs.cat_file(self.path, start=start, end=end)


__all__ = ["PROTOCOL", "ThrottledFileSystem", "throttled_url"]
