"""DAG Params generated from a forgeline options model, so the UI form matches the API."""

from __future__ import annotations

import types
import typing
from typing import Any

from airflow.sdk import Param
from pydantic import BaseModel

_JSON_TYPES = {str: "string", int: "integer", float: "number", bool: "boolean", dict: "object"}


def _json_type(annotation: Any) -> str | list[str]:
    args = typing.get_args(annotation)
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return "string"
    if origin in (typing.Union, types.UnionType):
        kinds = [_json_type(a) for a in args if a is not type(None)]
        return [*kinds, "null"] if type(None) in args else kinds
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "object"
    return _JSON_TYPES.get(origin or annotation, "string")


def templated(*names: str) -> dict[str, str]:
    """``{name: "{{ params.name }}"}`` for operator kwargs fed by DAG Params."""
    return {name: f"{{{{ params.{name} }}}}" for name in names}


def params_from(
    model: type[BaseModel], exclude: frozenset[str] = frozenset(), **defaults: Any
) -> dict[str, Param]:
    """One ``Param`` per field: its default (overridable), JSON type, enum and description."""
    params = {}
    for name, field in model.model_fields.items():
        if name in exclude:
            continue
        schema: dict[str, Any] = {"type": _json_type(field.annotation)}
        if typing.get_origin(field.annotation) is typing.Literal:
            schema["enum"] = list(typing.get_args(field.annotation))
        for meta in field.metadata:
            for key, json_key in (("ge", "minimum"), ("le", "maximum"),
                                  ("gt", "exclusiveMinimum"), ("lt", "exclusiveMaximum")):
                if getattr(meta, key, None) is not None:
                    schema[json_key] = getattr(meta, key)
        default = defaults.get(name, field.default)
        params[name] = Param(default, description=field.description or name, **schema)
    return params
