"""Preflight: check a whole pipeline configuration before any stage runs.

``check_pipeline`` takes the values a user gave at an edge (DAG Params, a trigger's conf,
flat or nested; null means "the default"), and reports every problem at once: unknown
options, values the options models reject, a data source that is unreachable or empty, an
artifact root that cannot be written, unknown quantization schemes. So a bad trigger fails
in seconds, naming each bad field, instead of minutes later in the stage that trips on it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from forgeline import storage
from forgeline.datasets.config import BUILTIN_CORPUS
from forgeline.errors import ConfigError, ForgelineError
from forgeline.options import flat_fields, unflatten
from forgeline.pipeline import PIPELINE_ORDER, PipelineParams
from forgeline.runs import default_artifact_root

_GLOB_CHARS = set("*?[")


class PreflightError(ForgelineError, ValueError):
    """The pipeline configuration has problems; ``problems`` lists each, field first."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        listed = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"{len(problems)} problem(s) in the run configuration:\n{listed}")

    def __reduce__(self) -> tuple:
        return (type(self), (self.problems,))


def edge_values(values: Mapping[str, Any]) -> dict[str, Any]:
    """Flat/nested edge values as ``PipelineParams`` input: a null non-optional field means
    its default and is dropped; unknown keys stay (validation reports them)."""
    optional = {f.name for f in flat_fields(PipelineParams) if f.optional}
    given = {k: v for k, v in values.items() if v is not None or k in optional}
    return unflatten(PipelineParams, given)


def _flat_name(loc: tuple[Any, ...]) -> str:
    return "_".join(str(part) for part in loc if not isinstance(part, int)) or "params"


def _validation_problems(exc: ValidationError) -> list[str]:
    problems = []
    for error in exc.errors():
        name = _flat_name(tuple(error["loc"]))
        cause = (error.get("ctx") or {}).get("error")
        if isinstance(cause, ConfigError):  # raised inside a section: name its own field
            field = cause.field.replace(".", "_")
            full = name if name.endswith(field) else (
                field if name == "params" else f"{name}_{field}")
            problems.append(f"{full}={cause.value!r}: {cause.reason}")
        elif error["type"] == "extra_forbidden":
            problems.append(f"{name}: unknown option (misspelt? see the DAG's Params)")
        else:
            message = error["msg"].removeprefix("Value error, ")
            problems.append(f"{name}={error.get('input')!r}: {message}")
    return problems


def _source_problem(source: str) -> str | None:
    """Why ``source`` cannot feed the prepare stage, or None when it can."""
    if source == BUILTIN_CORPUS:
        return None
    try:
        fs, path = storage.filesystem(source, "data_source")
        if _GLOB_CHARS & set(path):
            paths = [p for p in fs.glob(path) if fs.isfile(p)]
        elif fs.isdir(path):
            paths = fs.find(path)
        elif fs.isfile(path):
            paths = [path]
        else:
            return f"data_source={source!r}: no such file or folder"
    except (OSError, ValueError, ForgelineError) as exc:
        return f"data_source={source!r}: unreachable ({exc})"
    if not paths:
        return f"data_source={source!r}: matches no files"
    if not any(fs.size(p) for p in paths):
        return f"data_source={source!r}: every matching file is empty"
    return None


def _root_problems(root: str) -> list[str]:
    if root.startswith("memory://"):
        return [f"artifact_root={root!r}: Ray workers are separate processes; use a shared "
                "filesystem (file://, s3://, …)"]
    try:
        storage.ensure_writable(root, "artifact_root")
    except (ForgelineError, ValueError) as exc:
        return [str(exc)]
    return []


def _scheme_problems(scheme: Any) -> list[str]:
    from forgeline.quantize.config import SCHEMES

    if scheme is None or scheme in SCHEMES:
        return []
    return [f"quantize_scheme={scheme!r}: unknown scheme; choose one of {sorted(SCHEMES)}"]


def _stage_problems(params: PipelineParams) -> list[str]:
    """What each stage's own option checks say (the engine configs they build)."""
    problems = []
    try:
        for stage in PIPELINE_ORDER:
            params.stage_options(stage)
        params.train.to_config("file:///preflight/manifest.json")
    except (ValidationError, ForgelineError, ValueError) as exc:
        problems.append(f"train: {exc}")
    return problems


def check_pipeline(values: Mapping[str, Any]) -> PipelineParams:
    """The validated ``PipelineParams`` of ``values``; raise :class:`PreflightError` listing
    every problem found (options, data source, artifact root, schemes)."""
    nested = edge_values(values)
    problems: list[str] = []
    params = None
    try:
        params = PipelineParams.model_validate(nested)
    except ValidationError as exc:
        problems += _validation_problems(exc)
    bad = " ".join(problems)
    data = nested.get("data") if isinstance(nested.get("data"), Mapping) else {}
    source = data.get("source") or BUILTIN_CORPUS
    if isinstance(source, str) and "data_source=" not in bad:
        problems += [p for p in [_source_problem(source)] if p]
    root = nested.get("artifact_root") or default_artifact_root()
    if isinstance(root, str) and "artifact_root=" not in bad:
        problems += _root_problems(root)
    quantize = nested.get("quantize") if isinstance(nested.get("quantize"), Mapping) else {}
    if "quantize_scheme=" not in bad:
        problems += _scheme_problems(quantize.get("scheme"))
    if params is not None and not problems:
        problems += _stage_problems(params)
    if problems:
        raise PreflightError(problems)
    assert params is not None
    return params
