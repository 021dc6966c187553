"""forgeline's Ray pieces run on Ray Train V2: the flag is set for the driver (and propagated
by Ray to the controller and workers); a disabled flag or V1 imported first is a clear error
at import (fresh interpreters, since the flag is read when ``ray.train`` is imported)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


def _python(code: str, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items()
             if k not in ("RAY_TRAIN_V2_ENABLED", "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S")}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**clean, **env}, timeout=600)


def test_importing_forgeline_ray_turns_train_v2_on():
    done = _python("import os, forgeline.ray, ray.train\n"
                   "from ray.train.v2.api.config import RunConfig\n"
                   "print(os.environ['RAY_TRAIN_V2_ENABLED'], ray.train.RunConfig is RunConfig)")
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["1", "True"]


@pytest.mark.parametrize(("env", "interval"), [({}, "0.5"),
                                             ({"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "3"}, "3")])
def test_the_train_controller_polls_its_workers_every_half_second_unless_set(env, interval):
    done = _python("import forgeline.ray\n"
                   "from ray.train.v2._internal.constants import get_env_vars_to_propagate\n"
                   "print(get_env_vars_to_propagate()['RAY_TRAIN_HEALTH_CHECK_INTERVAL_S'])",
                   **env)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == [interval]  # what Ray hands the controller and workers


@pytest.mark.parametrize(("code", "env", "message"), [
    ("import forgeline.ray", {"RAY_TRAIN_V2_ENABLED": "0"},
     "RAY_TRAIN_V2_ENABLED='0': forgeline's Ray pieces use the Ray Train V2 API"),
    ("import os\nos.environ['RAY_TRAIN_V2_ENABLED'] = '0'\nimport ray.train\n"
     "os.environ['RAY_TRAIN_V2_ENABLED'] = '1'\nimport forgeline.ray", {},
     "ray.train was imported with Train V1 before forgeline"),
])
def test_train_v1_is_a_clear_error_at_import(code, env, message):
    done = _python(code, **env)
    assert done.returncode != 0 and "ConfigError" in done.stderr and message in done.stderr
