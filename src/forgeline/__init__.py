"""forgeline: training-efficiency stages for Airflow and Ray Train."""

from __future__ import annotations

__version__ = "0.1.0"


def get_provider_info() -> dict:
    """Airflow provider metadata (entry point ``apache_airflow_provider``): operators, the
    ``ray`` connection type and its hook, the Ray job trigger and the extra links. The UI
    plugin registers through its own ``airflow.plugins`` entry point only (listing it here
    too would load it twice when provider discovery is not lazy)."""
    return {
        "package-name": "forgeline",
        "name": "forgeline",
        "description": "Airflow operators for forgeline's training-efficiency pipeline stages.",
        "versions": [__version__],
        "integrations": [
            {
                "integration-name": "forgeline",
                "how-to-guide": [],
                "tags": ["software"],
            }
        ],
        "operators": [
            {"integration-name": "forgeline", "python-modules": ["forgeline.operators"]}
        ],
        "hooks": [
            {"integration-name": "forgeline", "python-modules": ["forgeline.operators.hooks"]}
        ],
        "triggers": [
            {"integration-name": "forgeline", "python-modules": ["forgeline.operators.triggers"]}
        ],
        "connection-types": [
            {
                "hook-class-name": "forgeline.operators.hooks.RayHook",
                "connection-type": "ray",
                "hook-name": "Ray",
            }
        ],
        "extra-links": [
            "forgeline.operators.links.ReportLink",
            "forgeline.operators.links.RayJobLink",
        ],
    }
