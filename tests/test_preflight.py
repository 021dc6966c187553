"""Preflight: one check of a whole pipeline configuration, every problem at once."""

import pytest

from forgeline.preflight import PreflightError, check_pipeline, edge_values


def test_every_problem_is_named_at_once(tmp_path):
    with pytest.raises(PreflightError) as caught:
        check_pipeline({"stepz": 3, "train_steps": 0, "train_model_size": "huge",
                        "quantize_scheme": "int3_magic",
                        "data_source": str(tmp_path / "nothing" / "*.txt"),
                        "artifact_root": "/proc/forgeline-cannot-write"})
    problems = caught.value.problems
    named = {p.split("=")[0].split(":")[0] for p in problems}
    assert named == {"stepz", "train_steps", "train_model_size", "quantize_scheme",
                     "data_source", "artifact_root"}, problems
    assert "unknown option" in next(p for p in problems if p.startswith("stepz"))
    assert "6 problem(s)" in str(caught.value)


def test_null_means_the_default_and_good_values_pass(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "a.txt").write_text("hello world\n" * 100)
    params = check_pipeline({"train_steps": None, "data_source": str(corpus),
                             "artifact_root": str(tmp_path / "artifacts"),
                             "train_checkpoint_every_steps": None})
    assert params.train.steps == 300 and params.train.checkpoint.every_steps is None
    assert params.data.source == str(corpus)
    assert edge_values({"train_steps": None}) == {}


@pytest.mark.parametrize(("source", "reason"), [("EMPTY", "empty"), ("MISSING", "no such")])
def test_a_source_that_cannot_feed_prepare_is_refused(tmp_path, source, reason):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "a.txt").write_text("")
    url = str(tmp_path / ("empty" if source == "EMPTY" else "missing"))
    with pytest.raises(PreflightError, match=reason):
        check_pipeline({"data_source": url, "artifact_root": str(tmp_path / "a")})


def test_a_memory_root_is_refused_for_ray_workers():
    with pytest.raises(PreflightError, match="separate processes"):
        check_pipeline({"artifact_root": "memory://forgeline"})


def test_engine_checks_run_too(tmp_path):
    with pytest.raises(PreflightError, match="ZeRO"):
        check_pipeline({"artifact_root": str(tmp_path), "train_zero_stage": 3,
                        "train_checkpoint_every_steps": 50, "strategy_search": False})
