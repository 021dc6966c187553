"""Airflow UI plugin: forgeline's run reports inside the Airflow UI.

The FastAPI app (``create_app``) has no Airflow dependency; ``ForgelinePlugin`` lives in
``forgeline.plugins.airflow_plugin`` and is registered through the ``airflow.plugins`` entry
point.
"""

from forgeline.plugins.app import RootResolver, create_app

__all__ = ["RootResolver", "create_app"]
