import json

import pytest

from forgeline.cli import main


def test_prepare_and_report(tmp_path, capsys):
    root = f"file://{tmp_path}"
    assert main(["prepare", "--root", root, "--run-id", "c1", "--max-source-bytes", "20000",
                 "--window-tokens", "32"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["source_bytes"] == 20000 and result["manifest_url"].startswith(root)
    assert main(["report", "--root", root, "--run-id", "c1"]) == 0
    assert (tmp_path / "runs" / "c1" / "report" / "report.md").exists()


def test_search_prints_a_ranked_table(tmp_path, capsys):
    root = f"file://{tmp_path}"
    assert main(["search", "--root", root, "--run-id", "s", "--seq-len", "64",
                 "--model-size", "tiny", "--global-batch-size", "16", "--top-k", "3"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].split()[:3] == ["#", "workers", "ZeRO"] and len(lines) == 5
    assert "plan: " + root in lines[-1]


def test_bad_input_exits_2_naming_the_field(tmp_path, capsys):
    assert main(["prepare", "--root", str(tmp_path), "--window-tokens", "0"]) == 2
    assert "window_tokens" in capsys.readouterr().err
    assert main(["prepare", "--root", str(tmp_path), "--source", "file:///nope"]) == 2
    assert "source='file:///nope'" in capsys.readouterr().err
    assert main(["report", "--root", str(tmp_path), "--run-id", "missing"]) == 2
    with pytest.raises(SystemExit):
        main(["train", "--model-size", "huge", "--run-id", "x"])


@pytest.mark.slow
def test_run_whole_pipeline_tiny(ray_cluster, tmp_path, capsys):
    code = main(["run", "--run-id", "cli", "--artifact-root", str(tmp_path),
                 "--max-source-bytes", "200000", "--window-tokens", "64", "--model-size", "tiny",
                 "--steps", "20", "--micro-batch-size", "8", "--eval-samples", "32",
                 "--zero-stage", "1", "--remote-like-data"])
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    assert result["val_ppl_after"] < result["val_ppl_before"]
    assert result["quantized_model_url"].endswith("quantize/model")
    assert (tmp_path / "runs" / "cli" / "report" / "report.html").exists()
    # remote-like data: read through the throttled filesystem, so the cache was used
    cache_stats = json.loads((tmp_path / "runs" / "cli" / "train" / "cache_stats.json").read_text())
    assert cache_stats, "the cache reported statistics"
    assert (tmp_path / "cache" / "importance").exists()
    stages = json.loads((tmp_path / "runs" / "cli" / "run.json").read_text())["stages"]
    assert stages["train"]["zero_stage"] == stages["search"]["zero_stage"] == 1
