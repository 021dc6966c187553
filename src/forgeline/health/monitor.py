"""The per-worker monitor: one :class:`Sample` per step in a bounded window.

The loop's own numbers (step time, data wait, loss, gradient norm) are recorded every step;
the host sources are read every ``sample_every`` steps, but at most every
``sample_interval_s`` seconds (psutil reads cost ~0.5 ms: on a fast step they would be a
visible share), and carried between readings (``Sample.host_step`` says from which step).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Sequence

from forgeline.health.signals import Sample, Source


class HealthMonitor:
    """Collects this worker's samples; ``samples`` is the newest ``window`` of them."""

    def __init__(self, sources: Sequence[Source], window: int = 32, sample_every: int = 1,
                 sample_interval_s: float = 0.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.sources = list(sources)
        self.window, self.sample_every = window, sample_every
        self.sample_interval_s, self.clock = sample_interval_s, clock
        self.samples: deque[Sample] = deque(maxlen=window)
        self._host: dict = {}
        self._host_step: int | None = None
        self._read_at = -float("inf")
        self.reads = 0
        self.read_s = 0.0  # time spent reading host sources (the monitor's own cost)

    @property
    def source_names(self) -> list[str]:
        return [s.name for s in self.sources]

    def record(self, step: int, step_s: float, data_wait_s: float = 0.0,
               loss: float | None = None, grad_norm: float | None = None) -> Sample:
        """Record one step; read the host sources when due."""
        due = step % self.sample_every == 0 \
            and self.clock() - self._read_at >= self.sample_interval_s
        if self._host_step is None or due:
            self._read_at = self.clock()
            started = time.perf_counter()
            host: dict = {}
            for source in self.sources:
                host.update(source.read())
            self._host, self._host_step = host, step
            self.reads += 1
            self.read_s += time.perf_counter() - started
        sample = Sample(step=step, step_s=step_s, data_wait_s=data_wait_s, loss=loss,
                        grad_norm=grad_norm, host_step=self._host_step, **self._host)
        self.samples.append(sample)
        return sample
