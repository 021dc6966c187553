"""Display formatting of stage-result values (units from key names, flattening, lists)."""

from __future__ import annotations

import pytest

from forgeline.reports.formatting import flatten, generic_rows, human_bytes, value_text


@pytest.mark.parametrize(
    ("size", "text"),
    [(0, "0 B"), (1023, "1023 B"), (1536, "1.5 KiB"), (5 * 1024**3, "5.0 GiB")],
)
def test_human_bytes(size: int, text: str) -> None:
    assert human_bytes(size) == text


@pytest.mark.parametrize(
    ("key", "value", "text"),
    [
        ("source_bytes", 2048, "2.0 KiB (2,048 bytes)"),
        ("bytes_written", 10, "10 B (10 bytes)"),
        ("wall_s", 3725.0, "3725 s (1 h 2 min)"),
        ("tokens_per_s", 5400.0, "5400"),
        ("num_params", 1_500_000, "1.5 M (1,500,000)"),
        ("loss", 3.14159, "3.142"),
        ("steps", 12345, "12,345"),
        ("ok", True, "yes"),
        ("x", None, "—"),
        ("xs", [], "(empty list)"),
        ("xs", list(range(10)), "10 items: 0, 1, 2, 3, 4, 5, …"),
        ("xs", [{"a": 1}], "1 item"),
        ("d", {}, "(empty)"),
    ],
)
def test_value_text(key: str, value: object, text: str) -> None:
    assert value_text(key, value) == text


def test_flatten_uses_dotted_keys() -> None:
    assert flatten({"a": {"b": {"c": 1}, "d": 2}, "e": 3}) == [("a.b.c", 1), ("a.d", 2), ("e", 3)]


def test_generic_rows_skip_and_nested_units() -> None:
    rows = generic_rows({"skip": 1, "cache": {"hit_bytes": 1024}}, skip={"skip"})
    assert rows == [("cache.hit_bytes", "1.0 KiB (1,024 bytes)")]


def test_long_text_is_cut() -> None:
    assert value_text("url", "x" * 1000).endswith("… (1,000 chars)")
