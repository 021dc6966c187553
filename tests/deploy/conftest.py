"""Render the forgeline Helm chart offline with the Helm library that helm-python-sdk embeds.

No cluster and no helm binary: the chart's dependencies (Airflow, KubeRay operator) are not
downloaded, so only forgeline's own templates render; the values handed to the Airflow
subchart are checked through the wiring the chart resolves from them, and through a
stand-in Airflow subchart (``airflow_standin/``) that consumes them as the official one does.
"""

from __future__ import annotations

import base64
import json
import shutil
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


POD_KINDS = frozenset({"RayCluster", "Deployment", "StatefulSet", "Job", "DaemonSet"})
RAY_KINDS = frozenset({"RayCluster"})


class Rendered(list):
    """The objects of one render (NOTES.txt left out), with lookups the tests share."""

    def one(self, kind: str) -> dict[str, Any]:
        found = [o for o in self if o["kind"] == kind]
        assert len(found) == 1, f"expected one {kind}, got {len(found)}"
        return found[0]

    def pod_templates(self, kinds: frozenset[str] = POD_KINDS) -> list[dict[str, Any]]:
        """Every pod template of the given kinds (a RayCluster has its head and worker groups)."""
        templates = []
        for obj in self:
            if obj["kind"] not in kinds:
                continue
            if obj["kind"] == "RayCluster":
                spec = obj["spec"]
                templates.append(spec["headGroupSpec"]["template"])
                templates += [g["template"] for g in spec.get("workerGroupSpecs", [])]
            else:
                templates.append(obj["spec"]["template"])
        return templates

    def containers(self, kinds: frozenset[str] = POD_KINDS) -> list[tuple[dict, dict]]:
        """(pod spec, container) for every container and init container."""
        return [
            (t["spec"], c)
            for t in self.pod_templates(kinds)
            for c in t["spec"].get("initContainers", []) + t["spec"]["containers"]
        ]

    def env_of(self, env_from: list[dict[str, Any]]) -> dict[str, str]:
        """The variables a container gets from its envFrom, read from the rendered objects."""
        env: dict[str, str] = {}
        for ref in env_from:
            is_map = "configMapRef" in ref
            kind, key = ("ConfigMap", "configMapRef") if is_map else ("Secret", "secretRef")
            for obj in self:
                if obj["kind"] != kind or obj["metadata"]["name"] != ref[key]["name"]:
                    continue
                data = obj.get("data") or {}
                if kind == "Secret":
                    data = {k: base64.b64decode(v).decode() for k, v in data.items()}
                env.update(data)
                env.update(obj.get("stringData") or {})
        return env

    @staticmethod
    def claimed_mounts(pods: list[tuple[dict, dict]]) -> set[tuple[str, str]]:
        """(claim name, mount path) of every PersistentVolumeClaim mounted in the pods."""
        return {
            (v["persistentVolumeClaim"]["claimName"], m["mountPath"])
            for spec, c in pods
            for v in spec.get("volumes", []) if "persistentVolumeClaim" in v
            for m in c.get("volumeMounts", []) if m["name"] == v["name"]
        }

    def ray_side(self) -> dict[str, Any]:
        """What the Ray pods see: the Jobs URL (Service → head port), images, env, claims."""
        cluster = self.one("RayCluster")
        service = self.one("Service")
        head = cluster["spec"]["headGroupSpec"]
        head_container = head["template"]["spec"]["containers"][0]
        assert service["spec"]["selector"] == {
            "ray.io/cluster": cluster["metadata"]["name"], "ray.io/node-type": "head"}
        (port,) = service["spec"]["ports"]
        (target,) = [p for p in head_container["ports"] if p["name"] == port["targetPort"]]
        assert str(target["containerPort"]) == head["rayStartParams"]["dashboard-port"]
        pods = self.containers(RAY_KINDS)
        envs = [self.env_of(c["envFrom"]) | {e["name"]: e.get("value") for e in c["env"]}
                for _, c in pods]
        return {
            "ray_url": f"http://{service['metadata']['name']}.{NAMESPACE}.svc:{port['port']}",
            "images": {c["image"] for _, c in pods},
            "artifact_roots": {env["FORGELINE_ARTIFACT_ROOT"] for env in envs},
            "train_v2": {env["RAY_TRAIN_V2_ENABLED"] for env in envs},
            "claims": self.claimed_mounts(pods),
            "secret_refs": [{r["secretRef"]["name"] for r in c["envFrom"] if "secretRef" in r}
                            for _, c in pods],
        }


def _objects(files: dict[str, str]) -> Rendered:
    """The objects of rendered template files, NOTES.txt left out."""
    return Rendered(
        doc for path, text in sorted(files.items()) if not path.endswith("NOTES.txt")
        for doc in yaml.safe_load_all(text) if doc
    )


@pytest.fixture(scope="session")
def chart():
    with helm.Chart.load(CHART_DIR) as loaded:
        yield loaded


@pytest.fixture(scope="session")
def render(chart) -> Callable[..., Rendered]:
    """Render with optional override values (schema-validated, as an install would)."""

    def _render(values: dict[str, Any] | None = None, release: str = RELEASE) -> Rendered:
        return _objects(chart.render(values, name=release, namespace=NAMESPACE, is_install=True))

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


@pytest.fixture(scope="session")
def render_with_airflow(tmp_path_factory) -> Callable[..., Rendered]:
    """Render the chart with the stand-in Airflow subchart placed in its charts/ folder."""
    root = tmp_path_factory.mktemp("chart") / "forgeline"
    shutil.copytree(CHART_DIR, root)
    shutil.copytree(Path(__file__).parent / "airflow_standin", root / "charts" / "airflow")

    def _render(values: dict[str, Any] | None = None) -> Rendered:
        # A fresh load each time: rendering with a dependency switched off removes that
        # subchart from the loaded chart (Helm processes conditions in place).
        with helm.Chart.load(root) as loaded:
            files = loaded.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
        return _objects(files)

    return _render
