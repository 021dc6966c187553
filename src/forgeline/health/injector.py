"""Fault injection: make a worker fail the way real ones do, each with a lead time.

- ``memory_leak``: allocates (and touches) memory, linearly up to ``leak_bytes``; at
  ``at_step`` a ``MemoryError`` (the OOM-ish threshold).
- ``slowdown``: busy-waits, ramping to ``slowdown_factor`` × the step time; then
  ``InjectedFault`` (the crash).
- ``nan_grad``: scales gradients up to 10^``grad_decades`` × (spikes); at ``at_step`` NaN
  gradients, then ``InjectedFault``.
- ``disk_fill``: writes files into ``disk_path``, linearly up to ``disk_bytes``; then
  ``OSError(ENOSPC)``.
- ``sigkill``: no precursor (lead 0); ``SIGKILL`` of this process at ``at_step``.

Call ``before_step(step, step_s)`` before the forward pass, ``after_backward(step, params)``
between backward and the optimizer step, and ``after_step(step)`` after it.
"""

from __future__ import annotations

import errno
import mmap
import os
import shutil
import signal
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from forgeline.errors import ConfigError

FaultKind = Literal["memory_leak", "slowdown", "nan_grad", "disk_fill", "sigkill"]
FAULT_KINDS: tuple[str, ...] = ("memory_leak", "slowdown", "nan_grad", "disk_fill", "sigkill")


class FaultSpec(BaseModel):
    """One fault: its kind, the step it fails at and how long it announces itself."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: FaultKind
    at_step: int = Field(ge=1, description="The step the worker fails at.")
    lead_steps: int = Field(0, ge=0, description="Steps of precursor before the failure.")
    leak_bytes: int = Field(256 * 2**20, ge=1, description="memory_leak: leaked by at_step.")
    slowdown_factor: float = Field(3.0, gt=1.0, description="slowdown: step-time factor "
                                   "reached at at_step.")
    grad_decades: float = Field(2.0, gt=0.0, description="nan_grad: gradients grow to "
                                "10^grad_decades × before turning NaN.")
    disk_path: str | None = Field(None, description="disk_fill: the folder filled.")
    disk_bytes: int = Field(64 * 2**20, ge=1, description="disk_fill: written by at_step.")

    @model_validator(mode="after")
    def _consistent(self) -> FaultSpec:
        if self.lead_steps >= self.at_step:
            raise ConfigError("lead_steps", self.lead_steps,
                              f"must be < at_step ({self.at_step})")
        if self.kind == "sigkill" and self.lead_steps:
            raise ConfigError("lead_steps", self.lead_steps, "a SIGKILL has no warning: 0")
        if self.kind == "disk_fill" and not self.disk_path:
            raise ConfigError("disk_path", self.disk_path, "needed for kind 'disk_fill'")
        return self


class InjectedFault(RuntimeError):
    """The failure an injected fault ends in (when it is not a MemoryError, OSError or
    SIGKILL)."""

    def __init__(self, kind: str, step: int) -> None:
        self.kind, self.step = kind, step
        super().__init__(f"injected {kind} failure at step {step}")

    def __reduce__(self) -> tuple:
        return (type(self), (self.kind, self.step))


def touched_pages(size: int) -> mmap.mmap:
    """``size`` bytes of fresh anonymous memory, every page written: resident at once, as a
    real leak is (heap memory the process freed earlier could be reused unseen)."""
    block = mmap.mmap(-1, size)
    for offset in range(0, size, mmap.PAGESIZE):
        block[offset] = 1
    return block


class FaultInjector:
    """Applies one :class:`FaultSpec` to the loop that calls its hooks."""

    def __init__(self, spec: FaultSpec) -> None:
        self.spec = spec
        self._leaked: list[mmap.mmap] = []
        self._leaked_bytes = 0
        self._written = 0
        self._files = 0
        self._ref_step_s: float | None = None

    def progress(self, step: int) -> float:
        """0 before the lead time, rising linearly to 1 at ``at_step``."""
        s = self.spec
        if s.lead_steps == 0:
            return 1.0 if step >= s.at_step else 0.0
        return min(1.0, max(0.0, (step - (s.at_step - s.lead_steps)) / s.lead_steps))

    def before_step(self, step: int, step_s: float | None = None) -> None:
        s, p = self.spec, self.progress(step)
        if s.kind == "sigkill" and step >= s.at_step:
            os.kill(os.getpid(), signal.SIGKILL)
        if self._ref_step_s is None or p == 0:
            self._ref_step_s = step_s if step_s else self._ref_step_s
        if p <= 0:
            return
        if s.kind == "memory_leak":
            want = int(p * s.leak_bytes)
            if want > self._leaked_bytes:
                self._leaked.append(touched_pages(want - self._leaked_bytes))
                self._leaked_bytes = want
        elif s.kind == "slowdown" and self._ref_step_s:
            until = time.perf_counter() + self._ref_step_s * (s.slowdown_factor - 1.0) * p
            while time.perf_counter() < until:  # busy: a throttled device still burns
                pass
        elif s.kind == "disk_fill":
            want = int(p * s.disk_bytes)
            if want > self._written:
                folder = Path(str(s.disk_path))
                folder.mkdir(parents=True, exist_ok=True)
                (folder / f"fill-{self._files:05d}.bin").write_bytes(
                    os.urandom(want - self._written))
                self._files += 1
                self._written = want

    def after_backward(self, step: int, params: Iterable[Any]) -> None:
        """``nan_grad``: scale the gradients (spikes), then make them NaN at ``at_step``."""
        if self.spec.kind != "nan_grad":
            return
        p = self.progress(step)
        if p <= 0:
            return
        scale = float("nan") if step >= self.spec.at_step else 10.0 ** (
            p * self.spec.grad_decades)
        for param in params:
            if getattr(param, "grad", None) is not None:
                param.grad.mul_(scale)

    def after_step(self, step: int) -> None:
        """Raise the failure at ``at_step``."""
        s = self.spec
        if step < s.at_step:
            return
        if s.kind == "memory_leak":
            raise MemoryError(f"injected memory leak: {self._leaked_bytes} bytes at step {step}")
        if s.kind == "disk_fill":
            raise OSError(errno.ENOSPC, f"injected disk full: {s.disk_path} at step {step}")
        raise InjectedFault(s.kind, step)

    def cleanup(self) -> None:
        for block in self._leaked:
            block.close()
        self._leaked.clear()
        if self.spec.kind == "disk_fill" and self.spec.disk_path:
            shutil.rmtree(self.spec.disk_path, ignore_errors=True)
