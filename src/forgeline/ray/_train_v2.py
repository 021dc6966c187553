"""Ray Train V2 is the API forgeline's Ray pieces use: the version floor and the feature flag.

Imported first by ``forgeline.ray``: it sets ``RAY_TRAIN_V2_ENABLED=1`` before anything
imports ``ray.train`` (Ray Train propagates the flag from the driver to its controller and
workers), then checks that the installed Ray is recent enough and that V2 really is in use.

It also sets how often the Train controller polls its workers,
``RAY_TRAIN_HEALTH_CHECK_INTERVAL_S``, to 0.5 s unless set already. Ray's default is 2 s, and
each poll is what moves a run on: a reported checkpoint, the end of the train function. Each
of these waits up to one interval. On a 12-step run on 2 CPUs, the train stage took 29 s with
the 2 s default and 23 s with 0.5 s. A poll is a small actor call per worker. A missed poll
is not a failure: that takes ``RAY_TRAIN_WORKER_HEALTH_CHECK_TIMEOUT_S``, 10 min by default.
"""

from __future__ import annotations

import os

from forgeline.errors import ConfigError

MIN_RAY_VERSION = (2, 51)
"""Ray Train V2 is the default from Ray 2.51 (V1 only with ``RAY_TRAIN_V2_ENABLED=0``)."""
FLAG = "RAY_TRAIN_V2_ENABLED"

os.environ.setdefault(FLAG, "1")
HEALTH_CHECK_INTERVAL = "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"
os.environ.setdefault(HEALTH_CHECK_INTERVAL, "0.5")


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(".")[:2] if part.isdigit())


def require_train_v2() -> None:
    """Raise a clear ``ConfigError`` unless Ray ≥ 2.51 runs the Train V2 API."""
    import ray

    if _version(ray.__version__) < MIN_RAY_VERSION:
        raise ConfigError("ray version", ray.__version__,
                          "forgeline needs ray[train]>=2.51, where Ray Train V2 is stable")
    if os.environ[FLAG].strip().lower() in ("0", "false", "no", "off", ""):
        raise ConfigError(FLAG, os.environ[FLAG],
                          "forgeline's Ray pieces use the Ray Train V2 API; unset it or set 1")
    import ray.train
    from ray.train.v2.api.config import RunConfig

    if ray.train.RunConfig is not RunConfig:
        raise ConfigError(FLAG, os.environ[FLAG],
                          "ray.train was imported with Train V1 before forgeline; set "
                          f"{FLAG}=1 in the environment before starting Python")


require_train_v2()
