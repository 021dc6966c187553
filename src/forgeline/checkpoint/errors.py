"""The checkpoint store's errors: a missing step, a failed background save, a damaged file."""

from __future__ import annotations

from forgeline.errors import ForgelineError, IntegrityError


class CheckpointNotFoundError(ForgelineError, LookupError):
    """The requested step has no committed checkpoint."""


class CheckpointWriteError(ForgelineError):
    """A save failed (in the background, or because another writer owns the step)."""


class CheckpointCorruptError(IntegrityError):
    """A manifest cannot be trusted: unreadable, checksum mismatch, or not its path's step."""

    def __init__(self, step: int | None, rank: int | None, path: str, reason: str) -> None:
        self.step, self.rank, self.path, self.reason = step, rank, path, reason
        super().__init__(f"checkpoint step {step} rank {rank} ({path}) is damaged: {reason}")

    def __reduce__(self) -> tuple:  # picklable, so Ray re-raises the real message
        return (type(self), (self.step, self.rank, self.path, self.reason))
