"""forgeline: training-efficiency stages for Airflow and Ray Train."""

from __future__ import annotations

__version__ = "0.1.0"


def get_provider_info() -> dict:
    """Airflow provider metadata (entry point ``apache_airflow_provider``)."""
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
    }
