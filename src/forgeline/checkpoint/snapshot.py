"""The host snapshot of one save: copy each chunk of the live state into a staging buffer.

Any thread may help (``run``): the store's snapshot thread copies in the background while the
trainer runs its next forward/backward, and the optimizer-step guard joins in if the copy is
not finished when the step comes. Copies release the GIL (numpy), so helpers run in parallel.
A chunk goes to the persist pool once copied — all at the end (so background encoding does
not compete with the copy), or earlier when the staging budget runs out (back-pressure).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field

import numpy as np

from forgeline.checkpoint.staging import StagingPool


@dataclass(eq=False)
class ChunkJob:
    """One chunk of one tensor: its live source bytes until copied, then its staging buffer."""

    name: str
    index: int
    src: np.ndarray | None
    item: int
    kind: str
    parent: Future | None = None  # the previous save's job for the same chunk (delta / lossy)
    future: Future = field(default_factory=Future)
    buf: np.ndarray | None = None
    submitted: bool = False


class Snapshot:
    def __init__(self, jobs: list[ChunkJob], pool: StagingPool,
                 submit: Callable[[ChunkJob], None]) -> None:
        self.jobs, self._pool, self._submit = jobs, pool, submit
        self._next = self._copied = 0
        self._lock = threading.Lock()
        self.done = threading.Event()
        self.error: BaseException | None = None
        if not jobs:
            self.done.set()

    def run(self, until: int | None = None) -> None:
        """Copy chunks (those before index ``until`` only, if given) until none is left."""
        limit = len(self.jobs) if until is None else until
        try:
            while not self.done.is_set():
                with self._lock:
                    if self._next >= limit:
                        return
                    job = self.jobs[self._next]
                    self._next += 1
                buf = self._pool.try_take(job.src.size)
                if buf is None:  # budget spent: let the persist pool free some, then wait
                    self._submit_copied()
                    buf = self._pool.take(job.src.size)
                np.copyto(buf, job.src)
                job.buf, job.src = buf, None
                with self._lock:
                    self._copied += 1
                    last = self._copied == len(self.jobs)
                if last:
                    self._submit_copied()
                    self.done.set()
        except BaseException as exc:
            self._fail(exc)
            raise

    def _submit_copied(self) -> None:
        with self._lock:
            ready = [j for j in self.jobs if j.buf is not None and not j.submitted]
            for job in ready:
                job.submitted = True
        for job in ready:
            self._submit(job)

    def _fail(self, exc: BaseException) -> None:
        with self._lock:
            if self.error is None:
                self.error = exc
            for job in self.jobs:
                if not job.submitted:
                    job.submitted = True
                    if not job.future.done():
                        job.future.set_exception(exc)
                    if job.buf is not None:
                        self._pool.give(job.buf)
                        job.buf = None
        self.done.set()
