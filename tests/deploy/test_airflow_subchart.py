"""With an Airflow subchart present, its pods get the Ray connection, the artifact root,
the image and the artifact claim that the Ray pods get, read from the rendered manifests.

The official Airflow chart cannot be downloaded here; ``airflow_standin/`` takes its place
and consumes the values the way the official chart does (see its Chart.yaml).
"""

from __future__ import annotations

import json

import helm_python as helm
import kubernetes_validate
import pytest

AIRFLOW_KINDS = frozenset({"Deployment"})


@pytest.fixture(scope="module", params=["default", "gpu-objectstore"])
def with_airflow(request, render_with_airflow, gpu_values):
    return render_with_airflow(None if request.param == "default" else gpu_values)


def test_airflow_pods_see_what_ray_pods_see(with_airflow):
    ((pod, scheduler),) = with_airflow.containers(AIRFLOW_KINDS)
    env = with_airflow.env_of(scheduler["envFrom"])
    conn = json.loads(env["AIRFLOW_CONN_RAY_DEFAULT"])
    ray = with_airflow.ray_side()
    assert f"{conn['schema']}://{conn['host']}:{conn['port']}" == ray["ray_url"]
    assert ray["artifact_roots"] == {env["FORGELINE_ARTIFACT_ROOT"]}
    assert ray["images"] == {scheduler["image"]}
    assert with_airflow.claimed_mounts([(pod, scheduler)]) == ray["claims"]
    # Credentials Secrets (object store) reach Airflow as they reach every Ray pod.
    airflow_secrets = {r["secretRef"]["name"] for r in scheduler["envFrom"] if "secretRef" in r}
    assert all(refs <= airflow_secrets for refs in ray["secret_refs"])


def test_airflow_pods_are_valid_and_not_root(with_airflow, kube_version):
    deployment = with_airflow.one("Deployment")
    kubernetes_validate.validate(deployment, kube_version, strict=True)
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 50000
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["resources"]["limits"]["memory"]


def test_airflow_switch_off_renders_no_airflow(render_with_airflow):
    objects = render_with_airflow({"install": {"airflow": False}})
    assert [o for o in objects if o["kind"] == "Deployment"] == []
    assert objects.one("RayCluster")


def test_only_keys_the_airflow_chart_knows_reach_it(render_with_airflow):
    """A strict subchart schema (the official chart has one) sees no forgeline-only key:
    that is why the dependency switches live under install.*, not airflow.enabled."""
    with pytest.raises(helm.HelmValuesError, match="additional properties 'enabled' not allowed"):
        render_with_airflow({"airflow": {"enabled": True}})
