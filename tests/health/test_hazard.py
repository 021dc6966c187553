"""The hazard model: fitted on the stated traces, ranks failures first, pluggable."""

import math
import sys

import numpy as np
import pytest

from forgeline.errors import ConfigError
from forgeline.health import (
    FEATURES,
    HazardModel,
    LogisticHazard,
    default_hazard_model,
    job_hazard,
    load_hazard_model,
    roc_auc,
    training_set,
)


def test_default_model_generalises_to_unseen_synthetic_traces():
    model = default_hazard_model()
    assert all(w >= 0 for w in model.weights)  # a feature can only raise the hazard
    X, y = training_set(traces_per_kind=3, seed=123)  # other traces than the fit's
    assert roc_auc(model.predict_many(X), y) > 0.7
    healthy = dict.fromkeys(FEATURES, 0.0)
    assert model.predict(healthy) < 0.1
    assert model.predict({**healthy, "mem_exhaustion": 3.0, "mem_used": 1.0}) > 0.5
    assert model.predict({**healthy, "nonfinite": 1.0}) == 1.0
    assert "mem_exhaustion" in model.reasons({**healthy, "mem_exhaustion": 3.0})


def test_logistic_fit_recovers_a_separable_rule():
    rng = np.random.default_rng(0)
    X = rng.random((400, len(FEATURES)))
    X[:, FEATURES.index("nonfinite")] = 0.0  # (a non-finite flag is the hard rule: 1)
    y = (X[:, 0] > 0.6).astype(float)
    model = LogisticHazard.fit(X, y)
    assert model.weights[0] == max(model.weights)
    assert roc_auc(model.predict_many(X), y) > 0.99
    with pytest.raises(ConfigError, match="X"):
        LogisticHazard.fit(X[:, :3], y)


def test_job_hazard_and_auc():
    assert job_hazard([0.5, 0.5]) == 0.5  # the most suspect worker's, not 1 − 0.5²
    assert job_hazard([0.03] * 1000) == 0.03  # no drift to 1 with the rank count
    assert job_hazard([0.1, 0.7, 0.2]) == 0.7
    assert job_hazard([]) == 0.0 and job_hazard([math.nan]) == 1.0
    assert roc_auc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1])) == 0.75
    assert math.isnan(roc_auc(np.array([0.1]), np.array([1])))


def test_a_user_model_plugs_in(tmp_path, monkeypatch):
    (tmp_path / "my_hazard.py").write_text(
        "class Always:\n    def predict(self, features):\n        return 0.9\n"
        "def make():\n    return Always()\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    model = load_hazard_model("my_hazard:make")
    assert isinstance(model, HazardModel) and model.predict({}) == 0.9
    with pytest.raises(ConfigError, match="health.model='collections:OrderedDict'"):
        load_hazard_model("collections:OrderedDict")
    with pytest.raises(ConfigError, match="cannot be loaded"):
        load_hazard_model("no_such_module_x:make")
    sys.modules.pop("my_hazard", None)
