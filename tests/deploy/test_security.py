"""Security defaults: no root containers, no secret values inline, least privilege."""

from __future__ import annotations

import json
import re

import yaml

SECRETISH = re.compile(r"(PASSWORD|SECRET|TOKEN|CREDENTIAL|ACCESS_KEY|PRIVATE_KEY)", re.I)


def _effective(pod: dict, container: dict, field: str):
    pod_value = pod.get("securityContext", {}).get(field)
    return container.get("securityContext", {}).get(field, pod_value)


def test_no_container_runs_as_root(rendered):
    pairs = rendered.containers()
    assert pairs
    for pod, container in pairs:
        assert _effective(pod, container, "runAsNonRoot") is True, container["name"]
        assert _effective(pod, container, "runAsUser") not in (None, 0), container["name"]
        context = container["securityContext"]
        assert context["allowPrivilegeEscalation"] is False
        assert context["capabilities"]["drop"] == ["ALL"]
        assert context["readOnlyRootFilesystem"] is True
        # The read-only root gets writable scratch: /tmp (Ray's session dir) and /dev/shm.
        mounts = {m["mountPath"] for m in container["volumeMounts"]}
        assert {"/tmp", "/dev/shm"} <= mounts


def test_every_container_has_requests_and_limits(rendered):
    for _, container in rendered.containers():
        resources = container["resources"]
        assert resources["requests"]["cpu"] and resources["requests"]["memory"]
        assert resources["limits"]["cpu"] and resources["limits"]["memory"]


def test_no_secret_value_is_inline(rendered, render):
    token = {"ray": {"authToken": {"existingSecret": "ray-token"}}}
    for objects in (rendered, render(token)):
        for _, container in objects.containers():
            for var in container.get("env", []):
                if SECRETISH.search(var["name"]):
                    assert "value" not in var and "secretKeyRef" in var["valueFrom"], var
    # The one Secret the chart renders is the connection, and it carries no credentials.
    for secret in (o for o in rendered if o["kind"] == "Secret"):
        conn = json.loads(secret["stringData"]["AIRFLOW_CONN_RAY_DEFAULT"])
        assert set(conn) == {"conn_type", "host", "port", "schema", "extra"}
        assert conn["extra"] == {}


def test_ray_token_comes_from_the_referenced_secret(render):
    objects = render({"ray": {"authToken": {"existingSecret": "ray-token", "key": "t"}}})
    for _, container in objects.containers():
        env = {e["name"]: e for e in container["env"]}
        assert env["RAY_AUTH_MODE"]["value"] == "token"
        token_ref = env["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"]
        assert token_ref == {"name": "ray-token", "key": "t"}


def test_values_file_holds_no_secret_values(chart_dir):
    def walk(node, path=""):
        if isinstance(node, dict):
            for key, value in node.items():
                yield from walk(value, f"{path}.{key}")
        else:
            yield path, node

    values = yaml.safe_load((chart_dir / "values.yaml").read_text())
    for path, value in walk(values):
        leaf = path.rsplit(".", 1)[-1]
        if SECRETISH.search(leaf) and not leaf.lower().endswith(("secret", "secretname")):
            assert value in ("", None, [], {}), path
        if leaf in ("existingSecret", "credentialsSecret"):
            assert value == "", path  # a reference the user fills, never a default


def test_service_account_has_no_token_and_no_role(rendered):
    account = rendered.one("ServiceAccount")
    assert account["automountServiceAccountToken"] is False
    assert not [o for o in rendered if o["kind"] in {"Role", "ClusterRole", "RoleBinding",
                                                     "ClusterRoleBinding"}]
    for template in rendered.pod_templates():
        assert template["spec"]["serviceAccountName"] == account["metadata"]["name"]
