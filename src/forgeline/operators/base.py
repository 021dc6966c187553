"""The shared operator pattern: templated options → validated options → stage → result.

A subclass names its ``stage``; the stage table (``forgeline.stages``) gives its options
model and core function. Every top-level field of the options model is a templated keyword
argument, and the flat names of nested sections (``checkpoint_every_steps``) are accepted
too. Rendered values are validated at the start of ``execute`` (a bad value fails the task
at once, without retries, naming every bad field), the stage runs through the core library
and its small JSON result is returned (XCom). With ``from_params=True`` the options come
from the DAG's Params instead, read as ``forgeline.pipeline.PipelineParams`` (the
end-to-end DAG does this). Artifacts go to ``{artifact_root}/runs/{run}/{stage}/``. A stage
whose templated ``enabled`` renders false skips itself; downstream stages then fall back to
their own options.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException
from pydantic import BaseModel, ValidationError

from forgeline.errors import ConfigError, StorageError
from forgeline.options import flat_fields, unflatten
from forgeline.runs import RunLayout, default_artifact_root
from forgeline.stages import STAGES, Stage

_UNSET_TEXT = {"", "None", "none", "null"}
_BASE_FIELDS = ("artifact_root", "forgeline_run_id", "enabled")


def run_name(dag_id: str, run_id: str) -> str:
    """The forgeline run folder of an Airflow DAG run."""
    return f"{dag_id}__{run_id}"


def _unset(value: Any) -> bool:
    return value is None or (isinstance(value, str) and value.strip() in _UNSET_TEXT)


class StageOperator(BaseOperator):
    """Base of forgeline's operators; see the module docstring."""

    stage: ClassVar[str]
    template_fields: Sequence[str] = _BASE_FIELDS
    ui_color = "#e8f0fe"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.template_fields = (*_BASE_FIELDS, *cls.spec().options.model_fields)

    @classmethod
    def spec(cls) -> Stage:
        return STAGES[cls.stage]

    def __init__(
        self,
        *,
        artifact_root: str | None = None,
        forgeline_run_id: str | None = None,
        enabled: bool | str = True,
        from_params: bool = False,
        **kwargs: Any,
    ) -> None:
        model = self.spec().options
        accepted = set(model.model_fields) | {f.name for f in flat_fields(model)}
        given = {k: kwargs.pop(k) for k in list(kwargs) if k in accepted}
        super().__init__(**kwargs)
        self.artifact_root, self.forgeline_run_id = artifact_root, forgeline_run_id
        self.enabled, self.from_params = enabled, from_params
        for name, value in unflatten(model, given).items():
            setattr(self, name, value)
        for name in model.model_fields:
            if not hasattr(self, name):
                setattr(self, name, None)

    def _options(self, context: Any) -> BaseModel | None:
        if self.from_params:
            from forgeline.operators.params import pipeline_params_from

            return pipeline_params_from(context["params"]).stage_options(self.stage)
        values = {name: getattr(self, name) for name in self.spec().options.model_fields}
        return self.spec().options.model_validate(
            {k: v for k, v in values.items() if not _unset(v)})

    def layout(self, context: Any) -> RunLayout:
        root = self.artifact_root
        if _unset(root) and self.from_params:
            root = context["params"].get("artifact_root")
        name = self.forgeline_run_id or run_name(context["dag"].dag_id, context["run_id"])
        return RunLayout(str(default_artifact_root() if _unset(root) else root), str(name))

    def execute(self, context: Any) -> dict[str, Any]:
        if str(self.enabled).strip().lower() in ("false", "0", "no", "off"):
            raise AirflowSkipException(f"{self.task_id}: disabled (enabled={self.enabled!r})")
        try:
            options = self._options(context)
            layout = self.layout(context)
        except (ValidationError, ConfigError) as exc:
            raise AirflowFailException(f"{self.task_id}: invalid options: {exc}") from exc
        if options is None:
            raise AirflowSkipException(f"{self.task_id}: switched off by the DAG's Params")
        self.log.info("forgeline %s → %s", self.stage, layout.stage_url(self.stage))
        try:
            result = self.spec().run(layout, options)
        except (ConfigError, StorageError) as exc:
            raise AirflowFailException(f"{self.task_id}: {exc}") from exc
        return result.model_dump(mode="json")
