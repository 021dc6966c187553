"""The forgeline image, checked statically (no container runtime here): what it installs,
as which user, and that it agrees with the chart's values and the project's pins."""

from __future__ import annotations

import fnmatch
import re
import shlex
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[2]


def _instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    joined = re.sub(r"\\\n", " ", "\n".join(
        line for line in text.splitlines() if not line.lstrip().startswith("#")))
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1])
            for line in joined.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def dockerfile() -> list[tuple[str, str]]:
    return _instructions((REPO / "docker" / "Dockerfile").read_text())


@pytest.fixture(scope="module")
def values(chart_dir) -> dict:
    return yaml.safe_load((chart_dir / "values.yaml").read_text())


def _args(dockerfile) -> dict[str, str]:
    return dict(a.split("=", 1) for op, a in dockerfile if op == "ARG" and "=" in a)


def _requirement(name: str) -> Requirement:
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    return next(r for r in map(Requirement, deps) if r.name == name)


def test_image_runs_as_the_non_root_airflow_uid(dockerfile, values):
    users = [a for op, a in dockerfile if op == "USER"]
    assert users[-1] == str(values["ray"]["podSecurityContext"]["runAsUser"]) == "50000"
    assert values["airflow"]["securityContexts"]["pod"]["runAsUser"] == 50000


def test_torch_is_a_build_arg_pinned_like_the_project(dockerfile):
    args = _args(dockerfile)
    make_default = re.search(r"^TORCH_SPEC \?= (\S+)", (REPO / "Makefile").read_text(), re.M)
    assert args["TORCH_SPEC"] == make_default.group(1) == "torch==2.13.0"
    assert args["TORCH_INDEX_URL"].endswith("/cpu")
    runs = [a for op, a in dockerfile if op == "RUN"]
    assert any('"${TORCH_SPEC}"' in r and '"${TORCH_INDEX_URL}"' in r for r in runs)


def test_project_is_pip_installed_with_airflow_pinned_to_the_chart(dockerfile, values):
    args = _args(dockerfile)
    install = next(a for op, a in dockerfile if op == "RUN" and '"/opt/forgeline"' in a)
    assert '"apache-airflow==${AIRFLOW_VERSION}"' in install
    assert args["AIRFLOW_VERSION"] == values["airflow"]["airflowVersion"]
    assert _requirement("apache-airflow").specifier.contains(args["AIRFLOW_VERSION"])
    assert _requirement("ray").specifier.contains(values["ray"]["rayVersion"])


def test_dags_land_where_the_chart_points_airflow(dockerfile, values):
    folder = values["dags"]["folder"]
    copies = [shlex.split(a) for op, a in dockerfile if op == "COPY"]
    assert any(c[-2:] == ["dags", folder] for c in copies)
    env = " ".join(a for op, a in dockerfile if op == "ENV")
    assert f"AIRFLOW__CORE__DAGS_FOLDER={folder}" in env
    assert "RAY_TRAIN_V2_ENABLED=1" in env


def test_copied_paths_exist_and_pass_the_dockerignore(dockerfile):
    ignore = (REPO / "docker" / "Dockerfile.dockerignore").read_text().split()
    for op, arguments in dockerfile:
        if op != "COPY":
            continue
        sources = [s for s in shlex.split(arguments) if not s.startswith("--")][:-1]
        for source in sources:
            assert (REPO / source).exists(), source
            kept = False  # last matching rule wins, as in .dockerignore
            for rule in ignore:
                negated = rule.startswith("!")
                if fnmatch.fnmatch(source, rule.lstrip("!").rstrip("/")):
                    kept = negated
            assert kept, f"{source} is excluded by Dockerfile.dockerignore"
