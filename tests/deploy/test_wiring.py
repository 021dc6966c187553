"""Airflow and Ray see the same Ray address, artifact root and image in the rendered chart.

Airflow's pods are not rendered here (its chart is not downloaded), so its side is read from
what the forgeline chart resolves out of the airflow.* values and publishes on the env
ConfigMap (annotation forgeline.io/airflow-wiring); the Airflow chart hands exactly those
values to its pods (env from extraEnvFrom, images from defaultAirflowRepository/Tag, volumes).
"""

from __future__ import annotations

import json
from typing import Any

import helm_python as helm
import pytest


def _airflow_side(objects) -> dict[str, Any]:
    wiring = json.loads(
        objects.one("ConfigMap")["metadata"]["annotations"]["forgeline.io/airflow-wiring"])
    env = objects.env_of(wiring["envFrom"])
    conn = json.loads(env["AIRFLOW_CONN_RAY_DEFAULT"])
    return {
        "image": wiring["image"],
        "ray_url": f"{conn['schema']}://{conn['host']}:{conn['port']}",
        "conn": conn,
        "artifact_root": env["FORGELINE_ARTIFACT_ROOT"],
        "claim": (wiring["artifactClaim"], wiring["artifactMountPath"]),
        "secret_refs": {r["secretRef"]["name"] for r in wiring["envFrom"] if "secretRef" in r},
    }


def test_ray_connection_artifact_root_and_image_agree(rendered):
    airflow, ray = _airflow_side(rendered), rendered.ray_side()
    assert airflow["ray_url"] == ray["ray_url"]
    assert airflow["conn"]["conn_type"] == "ray" and airflow["conn"]["extra"] == {}
    assert ray["images"] == {airflow["image"]}
    assert ray["artifact_roots"] == {airflow["artifact_root"]}
    assert ray["train_v2"] == {"1"}


def test_default_artifact_root_is_the_shared_claim_on_both_sides(render):
    objects = render()
    airflow, ray = _airflow_side(objects), objects.ray_side()
    assert airflow["artifact_root"] == "file:///mnt/forgeline"
    assert airflow["claim"] == ("forgeline-artifacts", "/mnt/forgeline")
    assert ray["claims"] == {airflow["claim"]}
    assert ray["images"] == {"registry.example.com/forgeline/forgeline:0.1.0"}
    assert ray["ray_url"] == "http://demo-forgeline-ray-jobs.ml.svc:8265"


def test_object_store_root_and_credentials_reach_both_sides(render, gpu_values):
    objects = render(gpu_values)
    airflow, ray = _airflow_side(objects), objects.ray_side()
    assert airflow["artifact_root"] == "s3://ml-artifacts/forgeline"
    assert ray["claims"] == set() and airflow["claim"] == ("", "")
    assert "forgeline-s3-credentials" in airflow["secret_refs"]
    assert all(refs == {"forgeline-s3-credentials"} for refs in ray["secret_refs"])


def test_dags_folder_comes_from_the_image_unless_git_sync(render):
    assert render().one("ConfigMap")["data"]["AIRFLOW__CORE__DAGS_FOLDER"] == "/opt/forgeline/dags"
    git_sync = {"dags": {"source": "gitSync"},
                "airflow": {"dags": {"gitSync": {"enabled": True, "repo": "https://git.example/d"}}}}
    assert "AIRFLOW__CORE__DAGS_FOLDER" not in render(git_sync).one("ConfigMap")["data"]


def test_existing_connection_secret_replaces_the_rendered_one(render):
    values = {
        "rayConnection": {"existingSecret": "my-ray-conn"},
        "airflow": {"extraEnvFrom": "- configMapRef:\n    name: demo-forgeline-env\n"
                                    "- secretRef:\n    name: my-ray-conn\n"},
    }
    objects = render(values)
    assert [o for o in objects if o["kind"] == "Secret"] == []
    wiring = json.loads(
        objects.one("ConfigMap")["metadata"]["annotations"]["forgeline.io/airflow-wiring"])
    assert {"secretRef": {"name": "my-ray-conn"}} in wiring["envFrom"]


def test_names_follow_the_release(render):
    objects = render(release="forgeline")
    assert objects.one("RayCluster")["metadata"]["name"] == "forgeline-ray"
    assert _airflow_side(objects)["ray_url"] == objects.ray_side()["ray_url"]


def test_ray_only_install_renders_without_airflow_wiring(render):
    objects = render({"install": {"airflow": False, "kuberayOperator": False}})
    assert "annotations" not in objects.one("ConfigMap")["metadata"]
    assert objects.one("RayCluster")["spec"]["workerGroupSpecs"][0]["replicas"] == 2


@pytest.mark.parametrize(
    ("values", "messages"),
    [
        ({"image": {"tag": "0.2.0"}},
         ['airflow image "registry.example.com/forgeline/forgeline:0.1.0" differs from image '
          '"registry.example.com/forgeline/forgeline:0.2.0"']),
        ({"airflow": {"extraEnvFrom": "- configMapRef:\n    name: demo-forgeline-env\n"}},
         ["airflow.extraEnvFrom lacks secret/demo-forgeline-ray-connection"]),
        ({"artifacts": {"pvc": {"existingClaim": "other", "mountPath": "/data"}}},
         ['claim "forgeline-artifacts" differs from artifacts.pvc.existingClaim "other"',
          'mountPath "/mnt/forgeline" differs from artifacts.pvc.mountPath "/data"']),
        ({"artifacts": {"mode": "objectStore",
                        "objectStore": {"url": "gs://b/p", "credentialsSecret": "gcs-key"}}},
         ["airflow.extraEnvFrom lacks secret/gcs-key",
          'artifacts.mode is objectStore but airflow.volumes still mounts claim']),
        ({"dags": {"source": "gitSync"}},
         ["dags.source is gitSync but airflow.dags.gitSync.enabled is false"]),
    ],
)
def test_airflow_values_that_disagree_are_refused_all_at_once(render, values, messages):
    with pytest.raises(helm.HelmRenderError, match="forgeline values disagree") as caught:
        render(values)
    for message in messages:
        assert message in str(caught.value)



def test_an_airflow_image_digest_is_not_the_ray_image(render):
    with pytest.raises(helm.HelmRenderError, match="forgeline/forgeline@sha256:"):
        render({"airflow": {"defaultAirflowDigest": "sha256:" + "0" * 64}})


def test_install_notes_print_the_rendered_ray_address_and_root(chart, render):
    notes = chart.render(None, name="demo", namespace="ml")["forgeline/templates/NOTES.txt"]
    airflow = _airflow_side(render())
    assert f"Ray Jobs API:             {airflow['ray_url']}" in notes
    assert f"Artifact root:            {airflow['artifact_root']}" in notes
    assert f"Image (Airflow and Ray):  {airflow['image']}" in notes
