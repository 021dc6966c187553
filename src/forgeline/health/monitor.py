"""The per-worker monitor: one :class:`Sample` per step in a bounded window.

The loop's own numbers (step time, data wait, loss, gradient norm) are recorded every step;
the host sources are read every ``sample_every`` steps and carried between readings.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Sequence

from forgeline.health.signals import Sample, Source


class HealthMonitor:
    """Collects this worker's samples; ``samples`` is the newest ``window`` of them."""

    def __init__(self, sources: Sequence[Source], window: int = 32,
                 sample_every: int = 1) -> None:
        self.sources = list(sources)
        self.window, self.sample_every = window, sample_every
        self.samples: deque[Sample] = deque(maxlen=window)
        self._host: dict = {}
        self.read_s = 0.0  # time spent reading host sources (the monitor's own cost)

    @property
    def source_names(self) -> list[str]:
        return [s.name for s in self.sources]

    def record(self, step: int, step_s: float, data_wait_s: float = 0.0,
               loss: float | None = None, grad_norm: float | None = None) -> Sample:
        """Record one step; read the host sources when due."""
        if not self._host or step % self.sample_every == 0:
            started = time.perf_counter()
            host: dict = {}
            for source in self.sources:
                host.update(source.read())
            self._host = host
            self.read_s += time.perf_counter() - started
        sample = Sample(step=step, step_s=step_s, data_wait_s=data_wait_s, loss=loss,
                        grad_norm=grad_norm, **self._host)
        self.samples.append(sample)
        return sample
