"""Ray job submission of a stage: entrypoint flags, stable ids, re-attaching — on a real
Ray head (``ray start``-style cluster with the dashboard's job API) where it matters."""

from __future__ import annotations

import shlex

import pytest

from forgeline.cli import _options, _parser
from forgeline.options import flatten
from forgeline.ray.jobs import StageJob, option_flags
from forgeline.runs import RunLayout
from forgeline.train.config import TrainOptions


def _reparse(job: StageJob):
    argv = shlex.split(job.entrypoint())
    assert argv[:2] == ["forgeline", job.stage]
    args = _parser().parse_args(argv[1:])
    return args, _options(args, type(job.options))


def test_the_entrypoint_is_the_cli_and_gives_back_the_same_options(tmp_path):
    options = TrainOptions(model_size="tiny", steps=40, workers=1, activation_checkpointing=True,
                           deepspeed_config=None, checkpoint={"every_steps": None,
                                                              "codec": "zstd"},
                           cache={"mode": "on"})
    job = StageJob("train", RunLayout(str(tmp_path), "dag__manual 1"), options, attempt=2)
    args, parsed = _reparse(job)
    assert flatten(parsed) == flatten(options)
    assert args.root == job.layout.root and args.run_id == "dag__manual_1"


def test_defaults_give_no_flags_and_lists_and_dicts_round_trip(tmp_path):
    from forgeline.search.stage import StrategyOptions

    assert option_flags(TrainOptions()) == []
    options = StrategyOptions(zero_stages=[1, 2], model_size="tiny")
    job = StageJob("search", RunLayout(str(tmp_path), "r"), options)
    assert flatten(_reparse(job)[1]) == flatten(options)
    ds = TrainOptions(deepspeed_config={"train_micro_batch_size_per_gpu": 4,
                                        "optimizer": {"type": "AdamW"}})
    flags = option_flags(ds)
    assert flags[0] == "--deepspeed-config"
    assert flatten(_reparse(StageJob("train", RunLayout(str(tmp_path), "r"), ds))[1]) \
        == flatten(ds)


def test_submission_ids_are_stable_per_run_stage_and_attempt(tmp_path):
    job = StageJob("train", RunLayout(str(tmp_path), "forgeline_end_to_end__manual__2026"),
                   TrainOptions(), attempt=3)
    assert job.submission_id() == "forgeline-forgeline_end_to_end__manual__2026-train-try3"
    assert job.submission_id(1).endswith("-train-try1")
    assert StageJob("train", job.layout, TrainOptions(steps=5), attempt=3).submission_id() \
        == job.submission_id()


@pytest.mark.slow
def test_submit_reattaches_instead_of_starting_a_second_job(ray_job_cluster, tmp_path):
    """A retry while attempt 1's job still runs follows that job; once it ended, the retry
    gets its own; asking again for one attempt never submits twice."""
    from forgeline.ray.jobs import StageJob, job_info, stop_job, submit_stage

    cluster = ray_job_cluster
    client = cluster.client()
    layout = RunLayout(str(tmp_path), "reattach")

    class Sleep(StageJob):  # a stand-in entrypoint: keeps running until stopped
        def entrypoint(self) -> str:
            return "sleep 120"

    first = Sleep("train", layout, TrainOptions(), attempt=1)
    sid1 = submit_stage(cluster, first)
    assert submit_stage(cluster, first) == sid1
    retry = Sleep("train", layout, TrainOptions(), attempt=2)
    assert submit_stage(cluster, retry) == sid1  # attempt 1 still live: re-attached
    assert job_info(client, retry.submission_id()) is None
    assert stop_job(cluster, sid1)
    _wait_status(client, sid1, "STOPPED")
    sid2 = submit_stage(cluster, retry)
    assert sid2 == retry.submission_id() != sid1
    assert job_info(client, sid2).metadata["attempt"] == "2"
    stop_job(cluster, sid2)
    _wait_status(client, sid2, "STOPPED")


def _wait_status(client, sid: str, status: str, timeout_s: float = 60) -> None:
    import time

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if str(client.get_job_status(sid).value) == status:
            return
        time.sleep(0.5)
    raise AssertionError(f"{sid}: {client.get_job_status(sid)} after {timeout_s} s")
