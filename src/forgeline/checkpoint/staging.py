"""Bounded host staging memory for async saves: a byte budget with reusable chunk buffers.

``take`` blocks while the budget is spent (back-pressure: the trainer waits for the
background writer instead of growing memory without bound), ``give`` returns a buffer.
"""

from __future__ import annotations

import threading

import numpy as np


class StagingPool:
    def __init__(self, limit_bytes: int, chunk_bytes: int) -> None:
        self.limit, self.chunk_bytes = limit_bytes, chunk_bytes
        self.used = 0
        self.peak = 0
        self._free: list[np.ndarray] = []
        self._cond = threading.Condition()

    def take(self, nbytes: int) -> np.ndarray:
        """A buffer of ``nbytes``; blocks until the budget has room."""
        need = min(nbytes, self.limit)
        with self._cond:
            while self.used + need > self.limit:
                self._cond.wait()
            self.used += need
            self.peak = max(self.peak, self.used)
            if nbytes == self.chunk_bytes and self._free:
                return self._free.pop()
        return np.empty(nbytes, dtype=np.uint8)

    def try_take(self, nbytes: int) -> np.ndarray | None:
        """Like ``take`` but returns None instead of blocking."""
        with self._cond:
            if self.used + min(nbytes, self.limit) > self.limit:
                return None
        return self.take(nbytes)

    def give(self, buf: np.ndarray, reuse: bool = True) -> None:
        with self._cond:
            self.used -= min(buf.size, self.limit)
            if reuse and buf.size == self.chunk_bytes and (
                (len(self._free) + 1) * self.chunk_bytes <= self.limit
            ):
                self._free.append(buf)
            self._cond.notify_all()

    def clear(self) -> None:
        with self._cond:
            self._free.clear()
