"""The Airflow plugin: mounts the report app under ``/forgeline`` in Airflow's API server and
adds a "forgeline report" tab to every DAG run page (a React plugin: no iframe).

A run's artifact root is the one it used: its trigger conf's ``artifact_root``, else the
DAG's ``artifact_root`` Param default, else ``$FORGELINE_ARTIFACT_ROOT`` / ``./artifacts``.
A DAG run Airflow does not know is a 404; a run without a report shows its real state.
Access needs the same permission as reading the DAG run in Airflow.
"""

from __future__ import annotations

from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity
from airflow.api_fastapi.core_api.security import requires_access_dag
from airflow.plugins_manager import AirflowPlugin

from forgeline.plugins.app import TAB_BUNDLE_ROUTE, create_app
from forgeline.runs import default_artifact_root

URL_PREFIX = "/forgeline"


def airflow_root_for(dag_id: str, run_id: str) -> str:
    """The artifact root of an Airflow DAG run, looked up in Airflow's metastore."""
    from airflow.models.dagrun import DagRun
    from airflow.models.serialized_dag import SerializedDagModel
    from airflow.utils.session import create_session

    with create_session() as session:
        dag_run = session.query(DagRun).filter_by(dag_id=dag_id, run_id=run_id).one_or_none()
        if dag_run is None:
            raise LookupError(f"{dag_id}/{run_id}")
        conf_root = (dag_run.conf or {}).get("artifact_root")
        if conf_root:
            return str(conf_root)
        serialized = SerializedDagModel.get(dag_id, session=session)
        if serialized is not None:
            param = serialized.dag.params.get_param("artifact_root") \
                if "artifact_root" in serialized.dag.params else None
            if param is not None and param.value:
                return str(param.value)
    return default_artifact_root()


def airflow_state_of(dag_id: str, run_id: str) -> str | None:
    """The DAG run's state in Airflow's metastore (``running``, ``failed`` …)."""
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session

    with create_session() as session:
        dag_run = session.query(DagRun).filter_by(dag_id=dag_id, run_id=run_id).one_or_none()
        return str(dag_run.state.value if hasattr(dag_run.state, "value") else dag_run.state) \
            if dag_run is not None and dag_run.state is not None else None


class ForgelinePlugin(AirflowPlugin):
    name = "forgeline"
    fastapi_apps = [
        {
            "app": create_app(
                airflow_root_for,
                dependencies=[requires_access_dag("GET", DagAccessEntity.RUN)],
                state_for=airflow_state_of,
            ),
            "url_prefix": URL_PREFIX,
            "name": "forgeline reports",
        }
    ]
    # a React plugin, not an external view: Airflow sandboxes those in an iframe with
    # allow-scripts + allow-same-origin, which Chromium warns can escape its sandbox
    react_apps = [
        {
            "name": "forgeline report",
            "bundle_url": URL_PREFIX.lstrip("/") + TAB_BUNDLE_ROUTE,  # relative to the UI's base
            "destination": "dag_run",
            "url_route": "forgeline-report",
        }
    ]
