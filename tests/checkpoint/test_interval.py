"""Checkpoint intervals from failure statistics: Young/Daly and the MTBF it plans for."""

import math

import pytest

from forgeline.checkpoint import planning_mtbf_s, young_daly_interval_s


def test_young_daly_interval():
    assert young_daly_interval_s(2.0, 3600.0) == pytest.approx(math.sqrt(2 * 2 * 3600))
    assert young_daly_interval_s(2.0, math.inf) == math.inf
    assert young_daly_interval_s(0.0, 3600.0) == math.inf


def test_planning_mtbf_prefers_the_unpredicted_failures():
    assert planning_mtbf_s({"mtbf_s": 100.0, "unpredicted_mtbf_s": 400.0}) == 400.0
    assert planning_mtbf_s({"mtbf_s": 800.0}) == 800.0  # a file from before the split
    assert planning_mtbf_s({}) == math.inf
