"""Hazard models: features → probability of a failure within the horizon.

forgeline's default, :class:`LogisticHazard`, is a logistic regression on the rule features
of ``forgeline.health.features`` (change points and thresholds per signal), fitted with
numpy (Newton/IRLS, L2) on the synthetic labelled traces of ``forgeline.health.traces``. A
non-finite loss or gradient is a hard rule: hazard 1. Users plug in their own model through
the :class:`HazardModel` protocol (``HealthOptions.model = "package.module:factory"``).

The job's hazard is its most suspect worker's: ``max p_i`` (see :func:`job_hazard`).
"""

from __future__ import annotations

import functools
import importlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from forgeline.errors import ConfigError
from forgeline.health.features import FEATURES


@runtime_checkable
class HazardModel(Protocol):
    """Anything that maps a feature dict (``FEATURES``) to P(failure within the horizon)."""

    def predict(self, features: Mapping[str, float]) -> float: ...


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(z, -40.0, 40.0)))


@dataclass(frozen=True)
class LogisticHazard:
    """``σ(b + Σ w_i · x_i)`` over ``FEATURES``; a non-finite loss/gradient gives 1."""

    weights: tuple[float, ...]
    bias: float

    @classmethod
    def fit(cls, X: np.ndarray, y: np.ndarray, l2: float = 1e-4) -> LogisticHazard:
        """Maximum-likelihood fit with an L2 penalty and non-negative weights (a feature
        can only raise the hazard): Newton's method on the active features, dropping any
        whose weight comes out negative, until none does."""
        if X.ndim != 2 or X.shape[1] != len(FEATURES) or len(X) != len(y):
            raise ConfigError("X", X.shape, f"want (n, {len(FEATURES)}) rows matching y")
        active = [i for i in range(X.shape[1]) if np.any(X[:, i] != 0)]
        while True:
            w = cls._newton(X[:, active], y, l2)
            negative = [i for i, v in zip(active, w[:-1], strict=True) if v < 0]
            if not negative:
                break
            active = [i for i in active if i not in negative]
        weights = np.zeros(X.shape[1])
        weights[active] = w[:-1]
        return cls(tuple(float(v) for v in weights), float(w[-1]))

    @staticmethod
    def _newton(X: np.ndarray, y: np.ndarray, l2: float, iterations: int = 50) -> np.ndarray:
        A = np.hstack([X, np.ones((len(X), 1))])
        w = np.zeros(A.shape[1])
        penalty = np.eye(A.shape[1]) * l2 * len(X)
        penalty[-1, -1] = 0.0
        for _ in range(iterations):
            p = _sigmoid(A @ w)
            gradient = A.T @ (p - y) + penalty @ w
            hessian = (A * (p * (1 - p))[:, None]).T @ A + penalty + 1e-9 * np.eye(len(w))
            delta = np.linalg.solve(hessian, gradient)
            w -= delta
            if float(np.max(np.abs(delta))) < 1e-8:
                break
        return w

    def predict(self, features: Mapping[str, float]) -> float:
        if features.get("nonfinite", 0.0) > 0:
            return 1.0
        z = self.bias + sum(w * features.get(n, 0.0)
                            for w, n in zip(self.weights, FEATURES, strict=True))
        return float(_sigmoid(np.array(z)))

    def predict_many(self, X: np.ndarray) -> np.ndarray:
        p = _sigmoid(X @ np.array(self.weights) + self.bias)
        return np.where(X[:, FEATURES.index("nonfinite")] > 0, 1.0, p)

    def reasons(self, features: Mapping[str, float], top: int = 3) -> list[str]:
        """The features that push the hazard up most, strongest first."""
        pushes = sorted(((w * features.get(n, 0.0), n)
                         for w, n in zip(self.weights, FEATURES, strict=True)), reverse=True)
        return [n for push, n in pushes[:top] if push > 0.05]


def default_hazard_model(window_steps: int = 32, horizon_steps: int = 20) -> LogisticHazard:
    """forgeline's model, fitted on the synthetic traces for this window and horizon (once
    per process and pair, however the arguments are passed)."""
    return _fitted(int(window_steps), int(horizon_steps))


@functools.cache
def _fitted(window_steps: int, horizon_steps: int) -> LogisticHazard:
    from forgeline.health.traces import training_set

    X, y = training_set(window_steps, horizon_steps)
    return LogisticHazard.fit(X, y)


def load_hazard_model(spec: str | None, window_steps: int = 32,
                      horizon_steps: int = 20) -> HazardModel:
    """The default model (``spec`` None) or ``package.module:factory()``'s."""
    if spec is None:
        return default_hazard_model(window_steps, horizon_steps)
    module, _, name = spec.partition(":")
    try:
        model = getattr(importlib.import_module(module), name)()
    except (ImportError, AttributeError) as exc:
        raise ConfigError("health.model", spec, f"cannot be loaded ({exc})") from exc
    if not isinstance(model, HazardModel):
        raise ConfigError("health.model", spec, "the factory's object has no predict(features)")
    return model


def job_hazard(worker_hazards: Sequence[float]) -> float:
    """The most suspect worker's hazard (a non-finite one counts as 1). Not the
    independent-workers ``1 − Π(1 − p_i)``: the step-time evidence of a synchronous job is
    common to every rank (each waits for the slowest in the collectives), so that product
    would count one slow step once per rank; and over many ranks it drifts to 1 on noise
    alone (at 1,000 ranks a 0.03 healthy baseline gives 1 − 0.97¹⁰⁰⁰ ≈ 1)."""
    return max((min(1.0, max(0.0, p)) if math.isfinite(p) else 1.0 for p in worker_hazards),
               default=0.0)


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve (Mann–Whitney, ties averaged); NaN with one class only."""
    scores, labels = np.asarray(scores, float), np.asarray(labels, bool)
    pos, neg = int(labels.sum()), int((~labels).sum())
    if pos == 0 or neg == 0:
        return math.nan
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores))
    sorted_scores = scores[order]
    i = 0
    while i < len(scores):
        j = i
        while j + 1 < len(scores) and sorted_scores[j + 1] == sorted_scores[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return float((ranks[labels].sum() - pos * (pos + 1) / 2.0) / (pos * neg))
