"""The shared operator pattern: templated option fields → validated options → stage → result.

A subclass names its ``stage``, its pydantic ``options_model`` and how to ``run`` it. Every
field of the options model becomes a templated keyword argument; the rendered values are
validated at the start of ``execute`` (a bad value fails the task at once, without retries,
naming the field and the value), the stage is called through the core library, and its small
JSON result is returned (XCom). Artifacts go to ``{artifact_root}/runs/{run}/{stage}/``.
A stage whose templated ``enabled`` renders false skips itself; downstream stages then fall
back to their own options.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException
from pydantic import BaseModel, ValidationError

from forgeline.errors import ConfigError, StorageError
from forgeline.runs import RunLayout, default_artifact_root

_UNSET_TEXT = {"", "None", "none", "null"}


def run_name(dag_id: str, run_id: str) -> str:
    """The forgeline run folder of an Airflow DAG run."""
    return f"{dag_id}__{run_id}"


class EmptyOptions(BaseModel):
    """For stages without knobs."""


class StageOperator(BaseOperator):
    """Base of forgeline's operators; see the module docstring."""

    stage: ClassVar[str]
    options_model: ClassVar[type[BaseModel]] = EmptyOptions
    template_fields: Sequence[str] = ("artifact_root", "forgeline_run_id", "enabled")
    ui_color = "#e8f0fe"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.template_fields = (
            "artifact_root", "forgeline_run_id", "enabled", *cls.options_model.model_fields
        )

    def __init__(
        self,
        *,
        artifact_root: str | None = None,
        forgeline_run_id: str | None = None,
        enabled: bool | str = True,
        **kwargs: Any,
    ) -> None:
        fields = self.options_model.model_fields
        options = {k: kwargs.pop(k) for k in list(kwargs) if k in fields}
        super().__init__(**kwargs)
        self.artifact_root = artifact_root
        self.forgeline_run_id = forgeline_run_id
        self.enabled = enabled
        for name in fields:
            setattr(self, name, options.get(name))

    def _rendered_options(self) -> dict[str, Any]:
        values = {name: getattr(self, name) for name in self.options_model.model_fields}
        return {
            k: v for k, v in values.items()
            if v is not None and not (isinstance(v, str) and v.strip() in _UNSET_TEXT)
        }

    def layout(self, context: Any) -> RunLayout:
        root = self.artifact_root
        if root is None or str(root).strip() in _UNSET_TEXT:
            root = default_artifact_root()
        name = self.forgeline_run_id or run_name(context["dag"].dag_id, context["run_id"])
        return RunLayout(str(root), str(name))

    def execute(self, context: Any) -> dict[str, Any]:
        if str(self.enabled).strip().lower() in ("false", "0", "no", "off"):
            raise AirflowSkipException(f"{self.task_id}: disabled (enabled={self.enabled!r})")
        try:
            options = self.options_model.model_validate(self._rendered_options())
            layout = self.layout(context)
        except (ValidationError, ConfigError) as exc:
            raise AirflowFailException(f"{self.task_id}: invalid options: {exc}") from exc
        self.log.info("forgeline %s → %s", self.stage, layout.stage_url(self.stage))
        try:
            result = self.run(layout, options)
        except (ConfigError, StorageError) as exc:
            raise AirflowFailException(f"{self.task_id}: {exc}") from exc
        return result.model_dump(mode="json")

    def run(self, layout: RunLayout, options: Any) -> BaseModel:
        raise NotImplementedError
