"""Exceptions raised by forgeline. Each names the field and the value at fault."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


class ForgelineError(Exception):
    """Base class of every error forgeline raises on purpose."""


class ConfigError(ForgelineError, ValueError):
    """A configuration field holds a value that cannot work."""

    def __init__(self, field: str, value: Any, reason: str) -> None:
        self.field, self.value, self.reason = field, value, reason
        super().__init__(f"{field}={value!r}: {reason}")

    def __reduce__(self) -> tuple:  # picklable, so Ray re-raises the real message
        return (type(self), (self.field, self.value, self.reason))


def check_choice(field: str, value: Any, choices: Iterable[Any]) -> Any:
    """``value`` when it is one of ``choices``, else a ``ConfigError`` that lists them."""
    options = list(choices)
    if value not in options:
        raise ConfigError(field, value,
                          f"unknown {field}; choose one of {', '.join(map(str, options))}")
    return value


class StorageError(ForgelineError, OSError):
    """A storage URL cannot be read or written."""

    def __init__(self, field: str, url: str, reason: str) -> None:
        self.field, self.url, self.reason = field, url, reason
        super().__init__(f"{field}={url!r}: {reason}")

    def __reduce__(self) -> tuple:
        return (type(self), (self.field, self.url, self.reason))


class IntegrityError(ForgelineError):
    """Stored data does not match its recorded checksum or shape."""
