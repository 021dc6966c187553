import json

import pytest

from forgeline.cli import main
from forgeline.stages import STAGES


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
        main(["train", "--model-preset", "huge", "--run-id", "x"])


def _parsed(argv: list[str]):
    from forgeline.cli import _options, _parser

    args = _parser().parse_args(argv)
    return _options(args, STAGES[args.command].options)


def test_list_flags_take_several_values_or_a_comma_list():
    spaced = _parsed(["search", "--run-id", "r", "--zero-stages", "1", "2",
                      "--micro-batch-sizes", "4,8", "16"])
    assert spaced.zero_stages == [1, 2] and spaced.micro_batch_sizes == [4, 8, 16]
    assert _parsed(["search", "--run-id", "r", "--zero-stages", "1,2"]).zero_stages == [1, 2]
    assert _parsed(["search", "--run-id", "r", "--zero-stages", "none"]).zero_stages is None


def test_nested_section_flags_reach_their_section():
    train = _parsed(["train", "--run-id", "r", "--cache-mode", "on",
                     "--cache-capacity-bytes", "4096", "--cache-substitution-ratio", "0.1",
                     "--throttle-enabled", "--throttle-latency-s", "0.02",
                     "--checkpoint-every-steps", "none", "--checkpoint-codec", "zstd",
                     "--no-checkpoint-async-save"])
    assert (train.cache.mode, train.cache.capacity_bytes, train.cache.substitution_ratio) == (
        "on", 4096, 0.1)
    assert train.throttle.enabled and train.throttle.latency_s == 0.02
    assert train.checkpoint.every_steps is None and train.checkpoint.codec == "zstd"
    assert train.checkpoint.async_save is False


def test_enum_flags_offer_their_choices(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--run-id", "r", "--checkpoint-codec", "lz5"])
    assert "invalid choice: 'lz5'" in capsys.readouterr().err


def test_list_and_nested_flags_reach_the_stage(tmp_path, capsys):
    """Run the search stage from the CLI with list flags: the plan obeys them."""
    root = f"file://{tmp_path}"
    assert main(["search", "--root", root, "--run-id", "l", "--seq-len", "32",
                 "--model-size", "tiny", "--global-batch-size", "16", "--zero-stages", "1",
                 "--micro-batch-sizes", "4,8"]) == 0
    capsys.readouterr()
    search = json.loads((tmp_path / "runs" / "l" / "search" / "result.json").read_text())
    configs = [plan["config"] for plan in search["ranking"]]
    assert {c["zero_stage"] for c in configs} == {1}
    assert {c["micro_batch_size"] for c in configs} <= {4, 8}


@pytest.mark.slow
def test_run_whole_pipeline_tiny(ray_cluster, tmp_path, capsys):
    code = main(["run", "--run-id", "cli", "--artifact-root", str(tmp_path),
                 "--data-max-source-bytes", "200000", "--data-window-tokens", "64",
                 "--train-model-preset", "tiny", "--train-steps", "20",
                 "--train-micro-batch-size", "8", "--train-eval-samples", "32",
                 "--train-zero-stage", "1", "--train-throttle-enabled"])
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


@pytest.mark.parametrize("command", [*STAGES, "run"])
def test_every_subcommand_has_help(command, capsys):
    with pytest.raises(SystemExit) as done:
        main([command, "--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith("usage: forgeline " + command) and "options" in text
