"""Turn stage-result values into short display strings.

Keys follow the house naming rule (units in the name), so ``*bytes`` renders as a
size and ``*_s`` as seconds; nested dicts flatten to dotted keys and long lists
are summarized, so any new stage's result renders without special code.
"""

from __future__ import annotations

import math
from typing import Any

MISSING = "—"
_MAX_LIST_ITEMS = 6
_MAX_TEXT_CHARS = 300
_BYTE_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")


def human_bytes(size_bytes: int | float) -> str:
    """``1536`` → ``1.5 KiB`` (binary units)."""
    size = float(size_bytes)
    for unit in _BYTE_UNITS:
        if abs(size) < 1024 or unit == _BYTE_UNITS[-1]:
            return f"{int(size)} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def bytes_with_exact(size_bytes: int | float) -> str:
    """``1.5 KiB (1,536 bytes)``."""
    return f"{human_bytes(size_bytes)} ({int(size_bytes):,} bytes)"


def human_count(count: int | float) -> str:
    """``124_000_000`` → ``124.0 M (124,000,000)``; small counts stay plain."""
    value = float(count)
    for scale, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:.1f} {suffix} ({int(count):,})"
    return f"{int(count):,}"


def seconds(value: float) -> str:
    """``75.2`` → ``75.2 s (1 min 15 s)``."""
    text = f"{number(value)} s"
    if value >= 60:
        minutes, secs = divmod(int(round(value)), 60)
        hours, minutes = divmod(minutes, 60)
        long = f"{hours} h {minutes} min" if hours else f"{minutes} min {secs} s"
        text += f" ({long})"
    return text


def number(value: int | float) -> str:
    """Ints with thousands separators; floats to 4 significant digits (big ones whole)."""
    if isinstance(value, int):
        return f"{value:,}"
    if not math.isfinite(value):
        return str(value)
    if abs(value) >= 10_000:
        return f"{value:,.0f}"
    return f"{value:.4g}"


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _text(value: str) -> str:
    if len(value) <= _MAX_TEXT_CHARS:
        return value
    return f"{value[:_MAX_TEXT_CHARS]}… ({len(value):,} chars)"


def _list(items: list[Any] | tuple[Any, ...]) -> str:
    if not items:
        return "(empty list)"
    if all(_is_number(x) or isinstance(x, str | bool) or x is None for x in items):
        shown = ", ".join(value_text("", x) for x in items[:_MAX_LIST_ITEMS])
        if len(items) > _MAX_LIST_ITEMS:
            return f"{len(items):,} items: {shown}, …"
        return shown
    return f"{len(items):,} item{'s' if len(items) != 1 else ''}"


def _dict(value: dict[str, Any]) -> str:
    """A small dict of scalars inline (``int4_rtn: 11, int8_wo: 8``); a bigger one counted."""
    if not value:
        return "(empty)"
    scalars = all(not isinstance(v, dict | list | tuple) for v in value.values())
    if scalars and len(value) <= _MAX_LIST_ITEMS:
        return ", ".join(f"{k}: {value_text(str(k), v)}" for k, v in value.items())
    return f"{len(value):,} keys"


def value_text(key: str, value: Any) -> str:
    """Display text for ``value``; ``key`` picks units (``*bytes``, ``*_s``, ``num_*``)."""
    if value is None:
        return MISSING
    if isinstance(value, bool):
        return "yes" if value else "no"
    if _is_number(value):
        leaf = key.rsplit(".", 1)[-1]
        if "bytes" in leaf.split("_") and value >= 0:
            return bytes_with_exact(value)
        if leaf.endswith("_s") and value >= 0 and leaf != "tokens_per_s":
            return seconds(float(value))
        if leaf.startswith("num_") and isinstance(value, int):
            return human_count(value)
        return number(value)
    if isinstance(value, str):
        return _text(value)
    if isinstance(value, list | tuple):
        return _list(value)
    if isinstance(value, dict):
        return _dict(value)
    return _text(str(value))


def flatten(result: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """Nested dicts → ``[("a.b", v), …]`` in the dict's own order."""
    rows: list[tuple[str, Any]] = []
    for key, value in result.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            rows.extend(flatten(value, f"{dotted}."))
        else:
            rows.append((dotted, value))
    return rows


def generic_rows(
    result: dict[str, Any], skip: set[str] | frozenset[str] = frozenset()
) -> list[tuple[str, str]]:
    """Key/value display rows for any result dict, leaving out top-level ``skip`` keys."""
    kept = {k: v for k, v in result.items() if k not in skip}
    return [(key, value_text(key, value)) for key, value in flatten(kept)]
