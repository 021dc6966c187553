"""The one field walker: nested sections ↔ flat names."""

from typing import Literal

import pytest
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from forgeline.options import Options, flat_fields, flatten, unflatten


class Inner(BaseModel):
    model_config = ConfigDict(extra="forbid", title="Inner things")

    size: int = Field(3, ge=1)
    mode: Literal["a", "b"] = "a"
    tags: list[str] | None = Field(None, json_schema_extra={"section": "Elsewhere"})


class Outer(Options):
    name: str = "x"
    inner: Inner = Field(default_factory=lambda: Inner(size=5))
    extra: dict | None = None


def test_flat_fields_walk_sections_lists_literals_and_optionals():
    by_name = {f.name: f for f in flat_fields(Outer)}
    assert list(by_name) == ["name", "inner_size", "inner_mode", "inner_tags", "extra"]
    assert by_name["inner_size"].default == 5  # from the section's default, not the class
    assert by_name["inner_size"].path == ("inner", "size")
    assert by_name["inner_mode"].kind == "enum" and by_name["inner_mode"].choices == ("a", "b")
    tags = by_name["inner_tags"]
    assert (tags.kind, tags.item, tags.optional, tags.section) == ("list", str, True, "Elsewhere")
    assert by_name["inner_size"].section == "Inner things"
    assert by_name["extra"].kind == "dict" and by_name["name"].section == "Outer"


def test_flat_and_nested_names_validate_to_the_same_model():
    flat = Outer(inner_size=7, inner_mode="b")
    assert flat == Outer(inner={"size": 7, "mode": "b"})
    assert flatten(flat)["inner_size"] == 7
    assert Outer.model_validate(unflatten(Outer, flatten(flat))) == flat


def test_flat_keys_merge_with_a_nested_section():
    assert Outer(inner={"size": 2}, inner_mode="b").inner == Inner(size=2, mode="b")
    assert Outer(inner_mode="b", inner={"size": 2}).inner == Inner(size=2, mode="b")


def test_errors_name_the_nested_field_and_unknown_keys():
    with pytest.raises(ValidationError) as caught:
        Outer(inner_size=0, inner_mode="c", nonsense=1)
    text = str(caught.value)
    assert "inner.size" in text and "inner.mode" in text and "nonsense" in text


def test_clashing_flat_names_are_refused():
    class Clash(Options):
        inner_size: int = 1
        inner: Inner = Field(default_factory=Inner)

    with pytest.raises(TypeError, match="inner_size"):
        flat_fields(Clash)
