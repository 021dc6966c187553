"""The Airflow plugin: mounts the report app under ``/forgeline`` in Airflow's API server and
adds a "forgeline report" tab to every DAG run page.

A run's artifact root is the one it used: its trigger conf's ``artifact_root``, else the
DAG's ``artifact_root`` Param default, else ``$FORGELINE_ARTIFACT_ROOT`` / ``./artifacts``.
Access needs the same permission as reading the DAG run in Airflow.
"""

from __future__ import annotations

from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity
from airflow.api_fastapi.core_api.security import requires_access_dag
from airflow.plugins_manager import AirflowPlugin

from forgeline.plugins.app import create_app
from forgeline.runs import default_artifact_root

URL_PREFIX = "/forgeline"


def airflow_root_for(dag_id: str, run_id: str) -> str:
    """The artifact root of an Airflow DAG run, looked up in Airflow's metastore."""
    from airflow.models.dagrun import DagRun
    from airflow.models.serialized_dag import SerializedDagModel
    from airflow.utils.session import create_session

    with create_session() as session:
        dag_run = session.query(DagRun).filter_by(dag_id=dag_id, run_id=run_id).one_or_none()
        conf_root = (dag_run.conf or {}).get("artifact_root") if dag_run else None
        if conf_root:
            return str(conf_root)
        serialized = SerializedDagModel.get(dag_id, session=session)
        if serialized is not None:
            param = serialized.dag.params.get_param("artifact_root") \
                if "artifact_root" in serialized.dag.params else None
            if param is not None and param.value:
                return str(param.value)
    return default_artifact_root()


class ForgelinePlugin(AirflowPlugin):
    name = "forgeline"
    fastapi_apps = [
        {
            "app": create_app(
                airflow_root_for,
                dependencies=[requires_access_dag("GET", DagAccessEntity.RUN)],
            ),
            "url_prefix": URL_PREFIX,
            "name": "forgeline reports",
        }
    ]
    external_views = [
        {
            "name": "forgeline report",
            "href": "forgeline/dags/{DAG_ID}/runs/{RUN_ID}/report",
            "destination": "dag_run",
            "url_route": "forgeline-report",
        }
    ]
