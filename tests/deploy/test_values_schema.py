"""values.schema.json refuses bad values before anything renders, naming the field."""

from __future__ import annotations

import helm_python as helm
import pytest


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"ray": {"worker": {"minReplicas": -1}}}, "at '/ray/worker/minReplicas': minimum: got -1"),
        ({"ray": {"worker": {"replicas": -2}}}, "at '/ray/worker/replicas': minimum: got -2"),
        ({"ray": {"worker": {"gpus": -1}}}, "at '/ray/worker/gpus': minimum: got -1"),
        ({"image": {"repository": None}}, "at '/image': missing property 'repository'"),
        ({"image": {"repository": ""}}, "at '/image/repository': minLength: got 0, want 1"),
        ({"image": {"tag": None}}, "at '/image': missing property 'tag'"),
        ({"artifacts": {"mode": "nfs"}},
         "at '/artifacts/mode': value must be one of 'pvc', 'objectStore'"),
        ({"artifacts": {"mode": "objectStore"}},
         "at '/artifacts/objectStore/url': '' does not match pattern"),
        ({"artifacts": {"mode": "objectStore", "objectStore": {"url": "/data"}}},
         "at '/artifacts/objectStore/url': '/data' does not match pattern"),
        ({"artifacts": {"pvc": {"existingClaim": ""}}},
         "at '/artifacts/pvc/existingClaim': minLength: got 0, want 1"),
        ({"dags": {"source": "s3"}}, "at '/dags/source': value must be one of 'image', 'gitSync'"),
        ({"ray": {"wroker": {}}}, "additional properties 'wroker' not allowed"),
    ],
)
def test_schema_rejects_bad_values_with_a_clear_message(chart, values, message):
    with pytest.raises(helm.HelmValuesError, match="don't meet the specifications") as caught:
        chart.render(values, name="demo")
    assert message in str(caught.value)


def test_schema_accepts_defaults_and_the_gpu_file(chart, gpu_values):
    chart.validate_schema(chart.values)
    chart.validate_schema(chart.merge_values(gpu_values))


def test_several_bad_values_are_reported_together(chart):
    values = {"ray": {"worker": {"minReplicas": -1, "maxReplicas": -1}}, "artifacts": {"mode": "x"}}
    with pytest.raises(helm.HelmValuesError) as caught:
        chart.render(values, name="demo")
    for field in ("/ray/worker/minReplicas", "/ray/worker/maxReplicas", "/artifacts/mode"):
        assert field in str(caught.value)
