import pytest

from forgeline.errors import ConfigError
from forgeline.runs import RunLayout, default_artifact_root, safe_run_id


def test_airflow_run_ids_become_safe_folder_names():
    assert safe_run_id("manual__2026-01-01T00:00:00+00:00") == "manual__2026-01-01T00_00_00_00_00"
    with pytest.raises(ConfigError, match="run_id='/..'"):
        safe_run_id("/..")


def test_record_merges_stage_results_into_run_json():
    layout = RunLayout("memory://root", "r1")
    layout.record("prepare", {"samples": 3})
    layout.record("train", {"loss": 1.5})
    from forgeline import storage

    run = storage.read_json(layout.run_json_url)
    assert run["stages"] == {"prepare": {"samples": 3}, "train": {"loss": 1.5}}
    assert run["run_id"] == "r1" and layout.url == "memory://root/runs/r1"
    layout.record("prepare", {"samples": 4})
    assert layout.load()["stages"]["prepare"] == {"samples": 4}


def test_default_root_from_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("FORGELINE_ARTIFACT_ROOT", str(tmp_path / "a"))
    assert default_artifact_root() == f"file://{tmp_path}/a"
    monkeypatch.delenv("FORGELINE_ARTIFACT_ROOT")
    monkeypatch.chdir(tmp_path)
    assert default_artifact_root() == f"file://{tmp_path}/artifacts"
