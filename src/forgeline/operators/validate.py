"""``ValidateOperator``: the first task of a pipeline DAG — fail in seconds, naming every
problem of the run's configuration (``forgeline.preflight.check_pipeline``)."""

from __future__ import annotations

from typing import Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowFailException

from forgeline.preflight import PreflightError


class ValidateOperator(BaseOperator):
    """Check the DAG run's Params as a whole pipeline configuration; no retries (a bad
    configuration stays bad). Returns the validated options (flat names) as XCom."""

    ui_color = "#fce8e6"

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("retries", 0)
        super().__init__(**kwargs)

    def execute(self, context: Any) -> dict[str, Any]:
        from forgeline.options import flatten
        from forgeline.preflight import check_pipeline

        values = dict(context["params"])
        conf = getattr(context.get("dag_run"), "conf", None) or {}
        values.update(conf)  # undeclared conf keys too: a misspelt key is an error
        try:
            params = check_pipeline(values)
        except PreflightError as exc:
            for problem in exc.problems:
                self.log.error("invalid: %s", problem)
            raise AirflowFailException(str(exc)) from exc
        self.log.info("configuration valid: %d options", len(flatten(params)))
        return flatten(params)
