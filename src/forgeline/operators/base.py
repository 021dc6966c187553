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

A stage that runs on Ray (``runs_on_ray``, the train stage) runs as a Ray job when the Ray
connection ``ray_conn_id`` (default ``ray_default``) exists: the task submits it
(``forgeline.ray.jobs``), frees its worker slot by deferring to ``RayJobTrigger`` and, once
the job succeeded, returns the stage's result from ``run.json``. Without that connection
the stage runs in the task (embedded). Stages with an Asset (dataset, model, quantized
model) emit an event with the result's key facts as its extra.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowException, AirflowFailException, AirflowSkipException
from pydantic import BaseModel, ValidationError

from forgeline.errors import ConfigError, StorageError
from forgeline.operators.assets import STAGE_ASSETS, asset_extra
from forgeline.operators.links import RayJobLink, ReportLink
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
    runs_on_ray: ClassVar[bool] = False
    """With a Ray connection, run the stage as a Ray job and defer (see the module doc)."""
    template_fields: Sequence[str] = _BASE_FIELDS
    ui_color = "#e8f0fe"
    operator_extra_links = (ReportLink(),)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.template_fields = (*_BASE_FIELDS, *cls.spec().options.model_fields)
        if cls.runs_on_ray:
            cls.operator_extra_links = (ReportLink(), RayJobLink())

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
        ray_conn_id: str | None = "ray_default",
        **kwargs: Any,
    ) -> None:
        model = self.spec().options
        accepted = set(model.model_fields) | {f.name for f in flat_fields(model)}
        given = {k: kwargs.pop(k) for k in list(kwargs) if k in accepted}
        if self.stage in STAGE_ASSETS and "outlets" not in kwargs:
            kwargs["outlets"] = [STAGE_ASSETS[self.stage][0]]
        super().__init__(**kwargs)
        self.artifact_root, self.forgeline_run_id = artifact_root, forgeline_run_id
        self.enabled, self.from_params = enabled, from_params
        self.ray_conn_id = ray_conn_id
        self.ray_job_url: str | None = None
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
        if self.runs_on_ray:
            from forgeline.operators.hooks import RayHook

            hook = RayHook.find(self.ray_conn_id)
            if hook is not None:
                self._submit_and_defer(hook, layout, options, context)
        try:
            result = self.spec().run(layout, options).model_dump(mode="json")
        except (ConfigError, StorageError) as exc:
            raise AirflowFailException(f"{self.task_id}: {exc}") from exc
        return self._emit(context, layout, result)

    def _submit_and_defer(self, hook: Any, layout: RunLayout, options: BaseModel,
                          context: Any) -> None:
        from forgeline.operators.triggers import RayJobTrigger
        from forgeline.ray.jobs import StageJob, submit_stage

        cluster = hook.cluster()
        job = StageJob(self.stage, layout, options, attempt=int(context["ti"].try_number))
        submission_id = submit_stage(cluster, job)
        self.ray_job_url = cluster.job_url(submission_id)
        self.log.info("forgeline %s runs as Ray job %s: %s", self.stage, submission_id,
                      self.ray_job_url)
        self.defer(trigger=RayJobTrigger(hook.ray_conn_id, submission_id),
                   method_name="execute_complete")

    def execute_complete(self, context: Any, event: dict[str, Any]) -> dict[str, Any]:
        """The Ray job ended: its stage result from ``run.json``, or a (retryable) failure."""
        from forgeline.operators.hooks import RayHook

        submission_id, status = event["submission_id"], event["status"]
        hook = RayHook.find(self.ray_conn_id)
        self.ray_job_url = hook.cluster().job_url(submission_id) if hook else None
        if status != "SUCCEEDED":
            raise AirflowException(f"{self.task_id}: Ray job {submission_id} ended {status}: "
                                   f"{event.get('message', '')}")
        layout = self.layout(context)
        result = layout.load()["stages"].get(self.stage)
        if result is None:
            raise AirflowException(f"{self.task_id}: Ray job {submission_id} succeeded but "
                                   f"{layout.run_json_url} has no {self.stage} result")
        return self._emit(context, layout, result)

    def _emit(self, context: Any, layout: RunLayout, result: dict[str, Any]) -> dict[str, Any]:
        """Attach the stage's Asset event extra (if it has an Asset); return the result."""
        if self.stage in STAGE_ASSETS:
            asset = STAGE_ASSETS[self.stage][0]
            context["outlet_events"][asset].extra = asset_extra(self.stage, result, layout)
        return result
