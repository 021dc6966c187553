"""Option sections and the one field walker that flattens them at the edges.

Core configs nest their options in sections (``checkpoint``, ``cache``, ``throttle`` …). The
edges want flat names: CLI flags (``--checkpoint-every-steps``), DAG Params
(``checkpoint_every_steps``) and operator keyword arguments. :func:`flat_fields` walks a
model once — lists, literals, nested models and optionals — and every edge is generated from
its answer; :class:`Options` accepts the flat names as well as the nested form, so a flat
dict from any edge validates straight into the nested model.

A flat name is the field path joined by ``_``. A field may set
``json_schema_extra={"section": "…"}`` to name the form section it belongs in; otherwise a
leaf belongs to its nested model's ``title`` (or the root model's).
"""

from __future__ import annotations

import functools
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any

from pydantic import BaseModel, ConfigDict, model_validator
from pydantic.fields import FieldInfo

_SCALARS = (bool, int, float, str)


def _strip_optional(annotation: Any) -> tuple[Any, bool]:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        optional = len(args) < len(typing.get_args(annotation))
        return (args[0] if len(args) == 1 else annotation), optional
    return annotation, False


def _is_section(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _choices(annotation: Any) -> tuple[Any, ...] | None:
    if typing.get_origin(annotation) is typing.Literal:
        return typing.get_args(annotation)
    if isinstance(annotation, type) and issubclass(annotation, Enum):
        return tuple(member.value for member in annotation)
    return None


@dataclass(frozen=True)
class FlatField:
    """One leaf option as the edges see it."""

    name: str
    path: tuple[str, ...]
    info: FieldInfo
    annotation: Any
    optional: bool
    default: Any
    section: str

    @property
    def choices(self) -> tuple[Any, ...] | None:
        """The closed set of values of a ``Literal``/``Enum`` field (or its list items)."""
        return _choices(self.item if self.kind == "list" else self.annotation)

    @property
    def kind(self) -> str:
        """``bool``, ``int``, ``float``, ``str``, ``enum``, ``list`` or ``dict``."""
        origin = typing.get_origin(self.annotation) or self.annotation
        if origin in (list, tuple, set, frozenset):
            return "list"
        if _choices(self.annotation) is not None:
            return "enum"
        if self.annotation in _SCALARS:
            return self.annotation.__name__
        return "dict"

    @property
    def item(self) -> Any:
        """The element type of a list field."""
        args = typing.get_args(self.annotation)
        return args[0] if args else str

    @property
    def description(self) -> str:
        return self.info.description or ""


def _default(info: FieldInfo) -> Any:
    if info.default_factory is not None:
        return info.default_factory()  # type: ignore[call-arg]
    return info.default


def _walk(model: type[BaseModel], prefix: tuple[str, ...], defaults: Any,
          section: str) -> list[FlatField]:
    found = []
    for name, info in model.model_fields.items():
        annotation, optional = _strip_optional(info.annotation)
        default = getattr(defaults, name) if defaults is not None else _default(info)
        extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        if _is_section(annotation) and not optional:
            title = annotation.model_config.get("title") or section
            found += _walk(annotation, (*prefix, name), default, str(extra.get("section", title)))
            continue
        if isinstance(default, BaseModel):
            default = default.model_dump(mode="json")
        found.append(FlatField(
            name="_".join((*prefix, name)), path=(*prefix, name), info=info,
            annotation=annotation, optional=optional, default=default,
            section=str(extra.get("section", section)),
        ))
    return found


@functools.cache
def flat_fields(model: type[BaseModel]) -> tuple[FlatField, ...]:
    """Every leaf option of ``model``, nested sections walked, in declaration order."""
    fields = _walk(model, (), None, model.model_config.get("title") or model.__name__)
    names = [f.name for f in fields]
    clashes = sorted({n for n in names if names.count(n) > 1})
    if clashes:
        raise TypeError(f"{model.__name__}: flat option names clash: {clashes}")
    return tuple(fields)


def _by_name(model: type[BaseModel]) -> dict[str, FlatField]:
    return {f.name: f for f in flat_fields(model) if len(f.path) > 1}


def unflatten(model: type[BaseModel], values: Mapping[str, Any]) -> dict[str, Any]:
    """Nest the flat names in ``values``; nested and top-level keys pass through, unknown
    keys are left for validation to report."""
    nested: dict[str, Any] = {}
    flat = _by_name(model)
    for key, value in values.items():
        if key not in flat or key in model.model_fields:
            if isinstance(value, Mapping) and isinstance(nested.get(key), dict):
                value = {**nested[key], **value}
            nested[key] = value
            continue
        *parents, leaf = flat[key].path
        target = nested
        for part in parents:
            current = target.get(part)
            if isinstance(current, BaseModel):
                current = current.model_dump()
            target[part] = dict(current or {})
            target = target[part]
        target[leaf] = value
    return nested


def flatten(options: BaseModel) -> dict[str, Any]:
    """The flat name → value view of a validated options object (JSON-compatible values)."""
    dumped = options.model_dump(mode="json")
    out = {}
    for field in flat_fields(type(options)):
        value: Any = dumped
        for part in field.path:
            value = value[part]
        out[field.name] = value
    return out


class Options(BaseModel):
    """Base of a stage's options: nested sections, and their flat names accepted too."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    @model_validator(mode="before")
    @classmethod
    def _accept_flat_names(cls, data: Any) -> Any:
        return unflatten(cls, data) if isinstance(data, Mapping) else data
