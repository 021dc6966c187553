"""The chart lints, renders, and every object it renders is valid for its kind."""

from __future__ import annotations

import json

import helm_python as helm
import jsonschema
import kubernetes_validate
import pytest

ERROR = 3
WARNING = 2
# The only warning allowed: the Airflow / KubeRay charts are not downloaded here.
MISSING_DEPENDENCIES = "chart directory is missing these dependencies"


@pytest.mark.parametrize("values_name", ["default", "gpu-objectstore"])
def test_lint_finds_no_errors(values_name, chart_dir, gpu_values, kube_version):
    values = gpu_values if values_name == "gpu-objectstore" else None
    report = helm.lint(chart_dir, values, namespace="ml", kube_version=f"v{kube_version}")
    assert report["errors"] == []
    problems = [m for m in report["messages"] if m["severity"] >= WARNING]
    assert all(MISSING_DEPENDENCIES in m["error"] for m in problems), problems


def test_renders_forgeline_objects(rendered):
    """Default render: release "demo" (see conftest)."""
    kinds = sorted(obj["kind"] for obj in rendered)
    assert "RayCluster" in kinds and "Service" in kinds and "ConfigMap" in kinds
    assert "ServiceAccount" in kinds and "Secret" in kinds
    for obj in rendered:
        assert obj["metadata"]["labels"]["app.kubernetes.io/instance"] == "demo"


def test_builtin_kinds_validate_against_kubernetes_schemas(rendered, kube_version):
    builtin = [obj for obj in rendered if "." not in obj["apiVersion"].split("/")[0]]
    assert len(builtin) == len(rendered) - 1  # everything but the RayCluster
    for obj in builtin:
        kubernetes_validate.validate(obj, kube_version, strict=True)


def test_raycluster_matches_kuberay_schema(rendered, raycluster_schema):
    cluster = rendered.one("RayCluster")
    errors = [e.message for e in jsonschema.Draft7Validator(raycluster_schema).iter_errors(cluster)]
    assert errors == []


def test_raycluster_pod_templates_validate_as_kubernetes_pod_templates(rendered, kube_version):
    templates = rendered.pod_templates()
    assert len(templates) == 2  # head + one worker group
    for template in templates:
        pod_template = {"apiVersion": "v1", "kind": "PodTemplate",
                        "metadata": {"name": "check"}, "template": template}
        kubernetes_validate.validate(pod_template, kube_version, strict=True)


def test_raycluster_schema_rejects_a_misspelt_field(rendered, raycluster_schema):
    """The hand-written schema is strict enough to catch a field KubeRay does not have."""
    cluster = json.loads(json.dumps(rendered.one("RayCluster")))
    cluster["spec"]["workerGroupSpecs"][0]["maxReplica"] = 3
    cluster["spec"]["headGroupSpec"]["rayStartParams"]["num-cpus"] = 0
    errors = list(jsonschema.Draft7Validator(raycluster_schema).iter_errors(cluster))
    assert {e.validator for e in errors} == {"additionalProperties", "type"}


def test_worker_group_scales_from_values(render):
    values = {"ray": {"worker": {"replicas": 6, "minReplicas": 2, "maxReplicas": 10}}}
    group = render(values).one("RayCluster")["spec"]["workerGroupSpecs"][0]
    assert (group["replicas"], group["minReplicas"], group["maxReplicas"]) == (6, 2, 10)


def test_gpu_values_request_gpus_tolerate_gpu_nodes_and_autoscale(render, gpu_values):
    cluster = render(gpu_values).one("RayCluster")["spec"]
    worker = cluster["workerGroupSpecs"][0]["template"]["spec"]
    resources = worker["containers"][0]["resources"]
    assert resources["limits"]["nvidia.com/gpu"] == 1
    assert resources["requests"]["nvidia.com/gpu"] == 1
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in worker[
        "tolerations"
    ]
    assert cluster["enableInTreeAutoscaling"] is True
    # The autoscaler sidecar needs the API token; the workers never get one.
    assert cluster["headGroupSpec"]["template"]["spec"]["automountServiceAccountToken"] is True
    assert worker["automountServiceAccountToken"] is False
    head_resources = cluster["headGroupSpec"]["template"]["spec"]["containers"][0]["resources"]
    assert "nvidia.com/gpu" not in head_resources["limits"]


def test_cpu_default_requests_no_gpus(render):
    worker = render().one("RayCluster")["spec"]["workerGroupSpecs"][0]["template"]["spec"]
    assert "nvidia.com/gpu" not in json.dumps(worker)


def test_gpus_with_a_cpu_image_are_refused(render):
    refused = 'ray.worker.gpus is 1 but image.torch is "cpu"'
    with pytest.raises(helm.HelmRenderError, match=refused):
        render({"ray": {"worker": {"gpus": 1}}})


def test_worker_bounds_are_checked_together(render):
    values = {"ray": {"worker": {"replicas": 9, "minReplicas": 5, "maxReplicas": 3}}}
    with pytest.raises(helm.HelmRenderError) as caught:
        render(values)
    assert "minReplicas 5 exceeds ray.worker.maxReplicas 3" in str(caught.value)
    assert "ray.worker.replicas 9 is outside" in str(caught.value)


def test_kubernetes_validation_catches_a_misspelt_pod_field(rendered, kube_version):
    """The strict Kubernetes schemas reject a field no pod has (so the checks above bite)."""
    template = json.loads(json.dumps(rendered.pod_templates()[0]))
    template["spec"]["containers"][0]["securityContext"]["runAsNonroot"] = True
    pod_template = {"apiVersion": "v1", "kind": "PodTemplate",
                    "metadata": {"name": "check"}, "template": template}
    with pytest.raises(kubernetes_validate.ValidationError, match="runAsNonroot"):
        kubernetes_validate.validate(pod_template, kube_version, strict=True)


def test_artifact_claim_is_created_only_when_asked_and_kept_on_uninstall(render, kube_version):
    assert [o for o in render() if o["kind"] == "PersistentVolumeClaim"] == []
    values = {"artifacts": {"pvc": {"create": True, "storageClassName": "nfs", "size": "1Ti"}}}
    objects = render(values)
    claim = objects.one("PersistentVolumeClaim")
    kubernetes_validate.validate(claim, kube_version, strict=True)
    assert claim["metadata"]["name"] == "forgeline-artifacts"
    assert claim["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    assert claim["spec"]["resources"]["requests"]["storage"] == "1Ti"
