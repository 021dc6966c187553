"""A lease file with an expiry: at most one garbage collector works on a store at a time.

``{url}/gc.lease`` holds ``{"owner", "expires_unix_s"}``. It is taken with a create-only
open (``mode="xb"``: ``O_EXCL`` on a disk, a conditional PUT on object stores that have one),
so of two collectors only one gets it; the other skips its run. A lease past its expiry
(its collector died) is broken and taken over; a running collector renews its lease.
"""

from __future__ import annotations

import contextlib
import json
import posixpath
import time
import uuid
from typing import Any

from forgeline.checkpoint.publish import mtime_unix_s

LEASE_FILE = "gc.lease"


class Lease:
    """The GC lease of the store at ``root`` on ``fs``; ``acquire`` returns whether it is ours."""

    def __init__(self, fs: Any, root: str, duration_s: float) -> None:
        self.fs, self.path, self.duration_s = fs, posixpath.join(root, LEASE_FILE), duration_s
        self.owner = uuid.uuid4().hex
        self.holder: dict[str, Any] | None = None  # who held it when acquire failed

    def _write(self, mode: str) -> None:
        body = {"owner": self.owner, "expires_unix_s": time.time() + self.duration_s}
        with self.fs.open(self.path, mode) as f:
            f.write(json.dumps(body).encode())

    def _read(self) -> dict[str, Any] | None:
        try:
            return json.loads(self.fs.cat_file(self.path))
        except FileNotFoundError:
            return None
        except ValueError:  # being written right now, or damaged: treat as held until expiry
            changed = mtime_unix_s(self.fs.info(self.path))
            return {"owner": "?", "expires_unix_s": changed + self.duration_s}

    def acquire(self) -> bool:
        self.fs.makedirs(posixpath.dirname(self.path), exist_ok=True)
        for _ in range(2):
            try:
                self._write("xb")
                return True
            except FileExistsError:
                self.holder = self._read()
                if self.holder is not None and self.holder["expires_unix_s"] > time.time():
                    return False
                with contextlib.suppress(FileNotFoundError):  # expired: break it
                    self.fs.rm_file(self.path)
        return False

    def renew(self) -> bool:
        """Extend our lease; False if it was broken and taken by another collector."""
        current = self._read()
        if current is None or current.get("owner") != self.owner:
            return False
        self._write("wb")
        return True

    def release(self) -> None:
        current = self._read()
        if current is not None and current.get("owner") == self.owner:
            with contextlib.suppress(FileNotFoundError):
                self.fs.rm_file(self.path)
