"""DAG Params generated from a forgeline options model, so the trigger form matches the API.

One Param per flat field (``forgeline.options.flat_fields``): its default, JSON type (arrays
for lists, enums as dropdowns), numeric bounds, form section and description. Every Param
also accepts null, which means "the default" — so no field with a default is marked
required, and a field cleared in the form falls back to its default.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from airflow.sdk import Param
from pydantic import BaseModel

from forgeline.options import FlatField, flat_fields
from forgeline.pipeline import PipelineParams

_JSON_TYPES = {"bool": "boolean", "int": "integer", "float": "number", "str": "string",
               "dict": "object"}
_BOUNDS = (("ge", "minimum"), ("le", "maximum"), ("gt", "exclusiveMinimum"),
           ("lt", "exclusiveMaximum"))


def _type_of(annotation: Any) -> str:
    return _JSON_TYPES.get(getattr(annotation, "__name__", ""), "string")


def _value_schema(field: FlatField) -> dict[str, Any]:
    if field.kind == "list":
        items: dict[str, Any] = {"type": _type_of(field.item)}
        if field.choices is not None:
            items = {"enum": list(field.choices)}
        return {"type": "array", "items": items}
    if field.kind == "enum":
        return {"enum": list(field.choices or ())}
    return {"type": _JSON_TYPES[field.kind]}


def field_schema(field: FlatField) -> dict[str, Any]:
    """The JSON schema of one flat field, null (= default) allowed."""
    schema = _value_schema(field)
    for meta in field.info.metadata:
        for key, json_key in _BOUNDS:
            if getattr(meta, key, None) is not None:
                schema[json_key] = getattr(meta, key)
    if "enum" in schema:
        schema["enum"] = [*schema["enum"], None]
    else:
        schema["type"] = [schema["type"], "null"]
    return schema


def edge_fields(model: type[BaseModel]) -> list[FlatField]:
    """The flat fields a user sets at the edges (those the pipeline fills are left out)."""
    hidden = getattr(model, "filled_by_pipeline", frozenset())
    return [f for f in flat_fields(model) if f.name not in hidden]


def _title(field: FlatField) -> str:
    words = " ".join(field.path[1:] if len(field.path) > 2 else field.path[-1:])
    return words.replace("_", " ").capitalize()


def params_from(model: type[BaseModel], **defaults: Any) -> dict[str, Param]:
    """One ``Param`` per flat field of ``model``; ``defaults`` override the model's."""
    unknown = set(defaults) - {f.name for f in edge_fields(model)}
    if unknown:
        raise TypeError(f"params_from({model.__name__}): unknown fields {sorted(unknown)}")
    params = {}
    for field in edge_fields(model):
        extra = {"description": field.description} if field.description else {}
        params[field.name] = Param(
            defaults.get(field.name, field.default), title=_title(field),
            section=field.section, **extra, **field_schema(field),
        )
    return params


def pipeline_params(**defaults: Any) -> dict[str, Param]:
    """The end-to-end DAG's Params: every ``PipelineParams`` knob, in form sections."""
    return params_from(PipelineParams, **defaults)


def pipeline_params_from(values: Mapping[str, Any]) -> PipelineParams:
    """Validate a DAG run's Params as ``PipelineParams``: null means the default; unknown
    keys and every bad value are reported together."""
    from forgeline.preflight import edge_values

    return PipelineParams.model_validate(edge_values(values))
