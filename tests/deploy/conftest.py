"""Render the forgeline Helm chart offline with the Helm library that helm-python-sdk embeds.

No cluster and no helm binary: the chart's dependencies (Airflow, KubeRay operator) are not
downloaded, so only forgeline's own templates render; the values handed to the Airflow
subchart are checked through the wiring the chart resolves from them.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import helm_python as helm
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART_DIR = REPO / "helm" / "forgeline"
GPU_VALUES = CHART_DIR / "ci" / "gpu-objectstore-values.yaml"
KUBE_VERSION = "1.33.0"  # a version kubernetes-validate ships schemas for
RELEASE, NAMESPACE = "demo", "ml"  # the tests read these names back


class Rendered(list):
    """The objects of one render (NOTES.txt left out), with lookups the tests share."""

    def one(self, kind: str) -> dict[str, Any]:
        found = [o for o in self if o["kind"] == kind]
        assert len(found) == 1, f"expected one {kind}, got {len(found)}"
        return found[0]

    def pod_templates(self) -> list[dict[str, Any]]:
        """Every pod template the objects create (the RayCluster's head and worker groups)."""
        templates = []
        for obj in self:
            if obj["kind"] == "RayCluster":
                spec = obj["spec"]
                templates.append(spec["headGroupSpec"]["template"])
                templates += [g["template"] for g in spec.get("workerGroupSpecs", [])]
            elif obj["kind"] in {"Deployment", "StatefulSet", "Job", "DaemonSet"}:
                templates.append(obj["spec"]["template"])
        return templates

    def containers(self) -> list[tuple[dict[str, Any], dict[str, Any]]]:
        """(pod spec, container) for every container and init container."""
        return [
            (t["spec"], c)
            for t in self.pod_templates()
            for c in t["spec"].get("initContainers", []) + t["spec"]["containers"]
        ]


@pytest.fixture(scope="session")
def chart():
    with helm.Chart.load(CHART_DIR) as loaded:
        yield loaded


@pytest.fixture(scope="session")
def render(chart) -> Callable[..., Rendered]:
    """Render with optional override values (schema-validated, as an install would)."""

    def _render(values: dict[str, Any] | None = None, release: str = RELEASE) -> Rendered:
        files = chart.render(values, name=release, namespace=NAMESPACE, is_install=True)
        objects = Rendered()
        for path, text in sorted(files.items()):
            if not path.endswith("NOTES.txt"):
                objects.extend(doc for doc in yaml.safe_load_all(text) if doc)
        return objects

    return _render


@pytest.fixture(scope="session")
def gpu_values() -> dict[str, Any]:
    return helm.values_from_yaml(GPU_VALUES.read_text())


@pytest.fixture(scope="session", params=["default", "gpu-objectstore"])
def rendered(request, render, gpu_values) -> Rendered:
    """The chart rendered with default values and with the GPU / object-store values file."""
    return render(None if request.param == "default" else gpu_values)


@pytest.fixture(scope="session")
def kube_version() -> str:
    return KUBE_VERSION


@pytest.fixture(scope="session")
def chart_dir() -> Path:
    return CHART_DIR


@pytest.fixture(scope="session")
def raycluster_schema() -> dict[str, Any]:
    return json.loads((Path(__file__).parent / "raycluster.schema.json").read_text())
