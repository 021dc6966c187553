"""Training on a real multi-node Ray cluster on this machine (``ray.cluster_utils.Cluster``:
a head, where the driver and Ray Train's controller run, and two worker nodes; one logical
CPU and a custom resource of its own on each node, so two training workers always sit on two
different nodes and the two nodes left after a node loss still fit them), with the artifact
root on a non-file:// URL over shared disk (``throttled://``): Ray's run state and
forgeline's checkpoints both live under it; a run survives the loss of a worker node and a
SIGKILLed driver, and resumes on a different worker count.

Each test prints its measured time-to-resume (seconds from the kill to the first completed
step after it) and the steps lost (steps completed before the kill and trained again).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest
import torch
from safetensors.torch import load_file

from forgeline import storage
from forgeline.checkpoint import committed_steps
from forgeline.ray import read_metrics
from forgeline.ray.checkpointer import FAILURE_STATS_FILE
from forgeline.throttled import throttled_url
from forgeline.train import TrainOptions, run_training
from forgeline.train.config import TrainConfig

pytestmark = pytest.mark.slow

STEPS, EVERY, MICRO = 24, 4, 4
NODES = 2
TOLERANCE = 1e-4
"""Max |Δw| against the 2-worker reference when the worker count changed: the same samples
per step (micro-batch × workers kept at 8), so only the summation order of the gradient
mean differs (one rank averaging 8 samples vs. an all-reduce of two 4-sample means)."""


TEMP_DIR = "/tmp/raycluster-ray"
_SLOW_START = {  # Ray's start-up waits, in its own units
    "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S": str(600),
    "RAY_agent_register_timeout_ms": str(600_000),
    "RAY_worker_register_timeout_seconds": str(600),
}
_CLUSTER_ENV = ("HOME", "TORCH_EXTENSIONS_DIR", "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S",
                *_SLOW_START)


STARTUP_TIMEOUT_S = 600
"""Ray waits 30 s for a new node to register, a raylet 30 s for its agents, Ray Train 60 s
for its workers; on this shared 2-core machine under other jobs' load each can take longer
(``_SLOW_START``)."""


def _add_node(cluster, name: str) -> None:
    """A worker node of one logical CPU and its own custom resource ``name``."""
    cluster.add_node(num_cpus=1, resources={name: 1}, temp_dir=TEMP_DIR)
    cluster.wait_for_nodes(timeout=STARTUP_TIMEOUT_S)


def _torch_extensions() -> str:
    """The folder torch builds C++ extensions into under the current HOME."""
    from torch.utils.cpp_extension import get_default_build_root

    flavour = "cpu" if torch.version.cuda is None else f"cu{torch.version.cuda.replace('.', '')}"
    return os.path.join(get_default_build_root(), f"py{sys.version_info[0]}{sys.version_info[1]}_"
                        f"{flavour}")


def _patient(get_node):
    """Ray's node lookup, retried for up to ``STARTUP_TIMEOUT_S`` (a node's 30 s start-up
    limit is checked between lookups)."""
    def lookup(gcs_address, node_id):
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while True:
            try:
                return get_node(gcs_address, node_id)
            except RuntimeError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(1)
    return lookup


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """Head + two worker nodes, 1 CPU each; HOME points at a temp folder, so anything
    Ray wrote to ``~/ray_results`` would show there. Restores the session's local Ray after."""
    import ray
    import ray._common.utils
    import ray._private.services
    import ray._private.utils
    from ray.cluster_utils import Cluster

    had_session_ray = ray.is_initialized()
    if had_session_ray:
        ray.shutdown()
    home = tmp_path_factory.mktemp("home")
    saved = {k: os.environ.get(k) for k in _CLUSTER_ENV}
    os.environ.update({
        # DeepSpeed's CPU comm op is built once (minutes) into torch's extension cache under
        # ~/.cache; keep using that cache under the new HOME
        "TORCH_EXTENSIONS_DIR": os.environ.get("TORCH_EXTENSIONS_DIR") or _torch_extensions(),
        "HOME": str(home),
        # ray.train.report waits for the controller's poll (2 s by default): 0.2 s keeps a
        # 24-step run with a report per step short; it also bounds failure detection
        "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.2",
        **_SLOW_START,
    })
    patch = pytest.MonkeyPatch()
    patch.setattr(ray._private.services, "get_node", _patient(ray._private.services.get_node))
    # Cluster would publish its address in /tmp/ray/ray_current_cluster, where every other
    # ray.init() on this machine (other test sessions) would find and join it; and its
    # shutdown would delete that file even when another cluster wrote it
    patch.setattr(ray._private.utils, "write_ray_address", lambda *args, **kwargs: None)
    patch.setattr(ray._common.utils, "reset_ray_address", lambda *args, **kwargs: None)
    cluster = Cluster(shutdown_at_exit=True)
    try:
        cluster.add_node(num_cpus=1, gcs_server_port=0,  # gRPC picks a free port
                         include_dashboard=False, temp_dir=TEMP_DIR, resources={"head": 1})
        for index in range(NODES):
            _add_node(cluster, f"node{index}")
        ray.init(address=cluster.address, log_to_driver=False)
        yield cluster, home
    finally:
        ray.shutdown()
        cluster.shutdown()
        patch.undo()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        if had_session_ray:
            ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)


def _config(manifest_url: str, workers: int, micro: int, run_name: str,
            steps: int = STEPS) -> TrainConfig:
    """A tiny ZeRO-2 run; the LR schedule always spans ``STEPS`` (a prefix run stops early)."""
    options = TrainOptions(model_size="tiny", workers=workers, zero_stage=2, steps=STEPS,
                           micro_batch_size=micro, lr=3e-3, eval_samples=16,
                           checkpoint_every_steps=EVERY, checkpoint_keep_last=10,
                           max_failures=2, cache_mode="off")  # the cache's sampler: per rank
    config = options.to_config(throttled_url(manifest_url, 0.01, 1e9, "raycluster-data"))
    return config.model_copy(update={"log_every_steps": 1, "run_name": run_name,
                                     "steps": steps})


def _root(tmp_path: Path) -> str:
    """A non-file:// artifact root over shared disk (every node of this machine sees it)."""
    return throttled_url(f"file://{tmp_path}/root", 0.0, 1e9, "raycluster-root")


def _output(tmp_path: Path, run: str) -> tuple[str, Path]:
    """The train stage's output URL of ``run`` and the local folder under it."""
    return (f"{_root(tmp_path)}/runs/{run}/train", tmp_path / "root" / "runs" / run / "train")


def _model(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(folder / "model.safetensors")


def _max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max((a[k] - b[k]).abs().max().item() for k in a)


def _losses(metrics_url: str) -> list[dict]:
    return [r for r in read_metrics(metrics_url) if "loss" in r]


def _resume_facts(metrics_url: str, killed_at: float, committed: list[int]) -> dict[str, float]:
    """Time-to-resume and steps lost, from the per-step metrics and their wall times. Every
    attempt starts with a step-0 validation report; the last one starts the resumed attempt.
    The last step done before the kill is the newest reported or committed one (a step's
    report can still be on its way to the controller when its checkpoint commits)."""
    records = read_metrics(metrics_url)
    restart = max(i for i, r in enumerate(records) if r["step"] == 0 and "val_loss" in r)
    assert records[restart]["wall_time_unix_s"] >= killed_at
    done = max([r["step"] for r in records[:restart] if "loss" in r] + committed, default=0)
    after = [r for r in records[restart:] if "loss" in r]
    resumed_from = after[0]["step"] - 1
    return {"time_to_resume_s": round(after[0]["wall_time_unix_s"] - killed_at, 2),
            "last_step_before_kill": done, "resumed_from_step": resumed_from,
            "steps_lost": done - resumed_from, "steps_after": [r["step"] for r in after]}


def _train_worker_nodes(cluster) -> dict[str, int]:
    """Custom resource of each node → Ray Train workers on it (by their raylet parent)."""
    from ray._private import ray_constants

    raylets = {}
    for node in [cluster.head_node, *cluster.worker_nodes]:
        pid = node.all_processes[ray_constants.PROCESS_TYPE_RAYLET][0].process.pid
        raylets[pid] = next(iter(node._ray_params.resources))
    found = dict.fromkeys(raylets.values(), 0)
    for proc in psutil.process_iter(["cmdline", "ppid"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if "RayTrainWorker" in cmdline and proc.info["ppid"] in raylets:
            found[raylets[proc.info["ppid"]]] += 1
    return found


def _wait_for_commit(folder: Path, running, timeout_s: float = 900) -> int:
    """The first committed forgeline checkpoint step under the run's output folder, waiting
    while ``running()`` says the run is still going."""
    deadline = time.time() + timeout_s
    while time.time() < deadline and running():
        steps = committed_steps(f"file://{folder}/checkpoints")
        if steps:
            return min(steps)
        time.sleep(0.05)
    raise TimeoutError(f"no committed checkpoint under {folder}")


@pytest.fixture(scope="module")
def reference(cluster, tiny_dataset, tmp_path_factory):
    """The uninterrupted 2-worker run every resumed run is compared with."""
    tmp = tmp_path_factory.mktemp("reference")
    url, folder = _output(tmp, "reference")
    started = time.perf_counter()
    run_training(_config(tiny_dataset.manifest_url, 2, MICRO, "reference"), url,
                 f"file://{tmp}/metrics.jsonl")
    print(f"\nreference run: {time.perf_counter() - started:.1f} s")
    return folder, tmp


def test_ray_state_and_checkpoints_live_under_the_artifact_root(cluster, reference):
    _, home = cluster
    folder, tmp = reference
    run_dir = folder / "ray" / "forgeline-reference"
    assert (run_dir / "checkpoint_manager_snapshot.json").exists()
    pointers = sorted(run_dir.glob("checkpoint_*/forgeline_checkpoint.json"))
    assert pointers, sorted(p.name for p in run_dir.iterdir())
    pointer = json.loads(pointers[-1].read_text())
    assert pointer["url"].startswith("throttled://") and pointer["world_size"] == 2
    assert sorted(committed_steps(f"file://{folder}/checkpoints"))[-1] == STEPS
    assert not (home / "ray_results").exists()
    assert not (Path(os.path.expanduser("~")) / "ray_results" / "forgeline-reference").exists()
    assert len(_losses(f"file://{tmp}/metrics.jsonl")) == STEPS


def _train_losing_a_node(ray_cluster, config: TrainConfig, tmp_path: Path, at_kill=None):
    """Run ``config``; once a step is committed, remove (kill, ungracefully) a worker node that
    hosts a Ray Train worker; Ray Train restarts the group on the nodes left. Checks that the
    run resumed from a committed step and trained every later step once; returns the result,
    what was killed (``at_kill()``'s value, taken just before the kill, under "seen") and the
    resume facts. The lost node is added back afterwards, for later tests."""
    url, folder = _output(tmp_path, config.run_name)
    metrics = f"file://{tmp_path}/metrics.jsonl"
    killed: dict[str, object] = {}
    done = threading.Event()

    def kill_a_worker_node() -> None:
        killed["first_commit"] = _wait_for_commit(folder, lambda: not done.is_set())
        placement = _train_worker_nodes(ray_cluster)
        victim_name = next(name for name, workers in placement.items()
                           if workers and name != "head")
        victim = next(n for n in ray_cluster.worker_nodes
                      if victim_name in n._ray_params.resources)
        seen = at_kill() if at_kill is not None else None
        killed.update(placement=placement, node=victim_name, node_id=victim.node_id,
                      seen=seen, at=time.time(),
                      committed=sorted(committed_steps(f"file://{folder}/checkpoints")))
        ray_cluster.remove_node(victim, allow_graceful=False)

    killer = threading.Thread(target=kill_a_worker_node, daemon=True)
    killer.start()
    started = time.perf_counter()
    try:
        result = run_training(config, url, metrics)
    finally:
        done.set()
        killer.join(timeout=60)
        if "at" in killed:
            _add_node(ray_cluster, str(killed["node"]))
    wall = time.perf_counter() - started
    assert "at" in killed, "the run ended before a worker node was removed"
    assert sum(killed["placement"].values()) == 2 and max(killed["placement"].values()) == 1
    facts = _resume_facts(metrics, killed["at"], killed["committed"])
    print(f"\n{config.run_name}: killed {killed['node']} (placement {killed['placement']}) "
          f"after committed steps {killed['committed']}; {facts}; run {wall:.1f} s")
    assert facts["resumed_from_step"] >= killed["first_commit"]  # not step 0
    # from that committed checkpoint on, every step once more, to the end
    assert facts["steps_after"] == list(range(facts["resumed_from_step"] + 1, STEPS + 1))
    # the controller's time to resume, part by part, against this test's own clock
    record = storage.read_json(f"file://{folder}/checkpoints/{FAILURE_STATS_FILE}")[
        "failure_records"][-1]
    resumed = record["time_to_resume"]
    print(f"time to resume, controller's breakdown: {resumed}")
    assert record["time_unix_s"] >= killed["at"]  # Ray Train noticed after the kill
    assert all(seconds >= 0 for seconds in resumed.values()), resumed
    first_step_done = record["last_report_unix_s"] + resumed["total_s"]
    # the first step after the restore ended after the kill, before its report was logged
    assert killed["at"] < first_step_done <= killed["at"] + facts["time_to_resume_s"] + 0.01
    assert resumed["restore_s"] > 0 and result.restore_s is not None
    return result, killed, facts


def test_node_loss_resumes_on_the_remaining_nodes_the_lost_rank_from_the_remote_tier(
        cluster, reference, tiny_dataset, tmp_path):
    """A worker node is killed once a step is committed; Ray Train restarts the group on the
    nodes left, which resume from a committed step (not step 0). Memory, local disk and
    remote tiers on. Each Ray node has a local tier folder of its
    own (``{node_id}`` in ``local_tier_url``), so the killed node's disk is gone with it: its
    folder stays on this machine's disk, but no live node has that id. The resumed ranks say
    which tier they read (``TrainResult.resume_tiers``): a rank on a node whose folder holds
    that rank's copy reads its local tier, every other rank (the lost node's, on a node that
    never held it) the remote root; the model equals the uninterrupted reference bit for bit
    (every tier holds the same checksummed bytes, and tiers do not change training)."""
    ray_cluster, _ = cluster
    local = tmp_path / "local"
    config = _config(tiny_dataset.manifest_url, 2, MICRO, "node-loss-tiers")
    config = config.model_copy(update={"checkpoint": config.checkpoint.model_copy(update={
        "local_tier_url": f"{local}/{{node_id}}", "memory_tier_bytes": 64 << 20})})

    def local_copies() -> dict[str, set[int]]:  # node id → ranks with a local tier folder
        return {node.name: {int(r.name.removeprefix("rank-")) for r in node.glob("rank-*")}
                for node in local.iterdir()}

    result, killed, facts = _train_losing_a_node(ray_cluster, config, tmp_path, local_copies)
    before, step = killed["seen"], facts["resumed_from_step"]
    print(f"local tier folders at the kill: {before}; killed node {killed['node_id']}; "
          f"resume: {result.resume_tiers}")
    assert len(before) == 2 and killed["node_id"] in before  # one folder per worker node
    assert result.resumed_from_step == step and len(result.resume_tiers) == 2
    tiers = []
    for rank, report in enumerate(result.resume_tiers):
        node = report["node_id"]
        assert node != killed["node_id"] and report["step"] == step
        assert "does not hold step" in report["skipped"]["memory"]  # a new process
        if rank in before.get(node, ()):  # this node saved this rank's steps: its own disk
            assert report["tier"] == "local", report
            assert report["url"] == f"file://{local}/{node}/rank-{rank:05d}"
        else:  # the lost node's rank (or a rank that moved): nothing of it on this node
            assert report["tier"] == "remote", report
            assert report["skipped"]["local"].startswith(f"does not hold step {step} "), report
        tiers.append(report["tier"])
    assert "remote" in tiers  # the lost node's rank came back from the remote root
    folder = _output(tmp_path, config.run_name)[1]
    assert _max_diff(_model(folder), _model(reference[0])) == 0.0  # bit-exact


_DRIVER = """
import sys
from forgeline.train import run_training
from forgeline.train.config import TrainConfig
config = TrainConfig.model_validate_json(sys.argv[1])
run_training(config, sys.argv[2], sys.argv[3])
"""


def test_a_killed_driver_restarted_with_the_same_run_id_resumes(
        cluster, reference, tiny_dataset, tmp_path):
    ray_cluster, home = cluster
    url, folder = _output(tmp_path, "driver-kill")
    metrics = f"file://{tmp_path}/metrics.jsonl"
    config = _config(tiny_dataset.manifest_url, 2, MICRO, "driver-kill")
    remote = config.model_copy(update={"ray_address": ray_cluster.address})
    env = {**os.environ, "HOME": str(home), "PYTHONPATH": os.pathsep.join(sys.path)}
    started = time.perf_counter()
    log = (tmp_path / "driver.log").open("wb")
    driver = subprocess.Popen([sys.executable, "-c", _DRIVER, remote.model_dump_json(), url,
                               metrics], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        first = _wait_for_commit(folder, lambda: driver.poll() is None)
        assert driver.poll() is None, "the driver ended before its first checkpoint"
        killed_at = time.time()
        driver.send_signal(signal.SIGKILL)
        driver.wait(timeout=30)
    finally:
        if driver.poll() is None:
            driver.kill()
        log.close()
    committed = sorted(committed_steps(f"file://{folder}/checkpoints"))
    run_training(config, url, metrics)  # same run id, same output: a restarted driver
    wall = time.perf_counter() - started
    facts = _resume_facts(metrics, killed_at, committed)
    print(f"\ndriver kill: after committed steps {committed}; {facts}; both drivers {wall:.1f} s")
    assert facts["resumed_from_step"] >= first and facts["resumed_from_step"] in committed
    assert facts["steps_after"] == list(range(facts["resumed_from_step"] + 1, STEPS + 1))
    assert not (home / "ray_results").exists()
    assert _max_diff(_model(folder), _model(reference[0])) == 0.0  # bit-exact


def test_train_workers_on_two_nodes_read_through_their_own_nodes_cache_server(
        cluster, tiny_dataset, tmp_path):
    """2 Ray Train workers, one CPU per node: each node a worker ran on has its own cache
    server (created there by that worker, placed on that node) holding that worker's reads;
    the run's cache statistics add both up."""
    import uuid

    import ray

    from forgeline.cache import shutdown
    from forgeline.ray import CacheStatsCallback, node_cache_stats

    options = TrainOptions(model_size="tiny", workers=2, zero_stage=1, steps=4,
                           micro_batch_size=4, eval_samples=8, cache_mode="on",
                           cache_server_name=f"mn-{uuid.uuid4().hex[:8]}",
                           cache_capacity_bytes=2**20)
    config = options.to_config(throttled_url(tiny_dataset.manifest_url, 0.01, 1e9,
                                             "raycluster-cache"), _root(tmp_path))
    url, folder = _output(tmp_path, "cache-per-node")
    stats_url = f"file://{folder}/cache_stats.json"
    run_training(config, url, callbacks=[CacheStatsCallback(stats_url)])
    servers = node_cache_stats(config.cache)
    try:
        names = {n["NodeID"]: next(r for r in n["Resources"] if r in ("head", "node0", "node1"))
                 for n in ray.nodes() if n["Alive"]}
        assert len(servers) == 2, servers  # one per node a worker ran on, none elsewhere
        for node_id, stats in servers.items():
            assert stats["server_node_id"] == node_id, (names[node_id], stats)
            assert stats["entries"] > 0, (names[node_id], stats)
        latest = json.loads((folder / "cache_stats.json").read_text())["latest"]
        assert latest["workers"] == 2 and latest["cache_hits"] + latest["cache_misses"] > 0
        print(f"\ncache servers on {sorted(names[n] for n in servers)}: "
              f"{[servers[n]['entries'] for n in sorted(servers)]} entries")
    finally:
        for node_id in servers:
            shutdown(config.cache, node_id)


def test_resume_on_a_different_worker_count(cluster, reference, tiny_dataset, tmp_path):
    """2 workers checkpoint at step ``EVERY``, 1 worker goes on to ``2 × EVERY``, 2 workers
    finish: 2→1 and 1→2. Samples per step stay 8 (micro-batch 8/N), so the run must follow
    the 2-worker reference: the ZeRO-2 optimizer partitions resharded exactly each time and
    the sampler at the same sample."""
    run = "resume-2-to-1-to-2"
    url, folder = _output(tmp_path, run)
    metrics = f"file://{tmp_path}/metrics.jsonl"
    started = time.perf_counter()
    for workers, until in ((2, EVERY), (1, 2 * EVERY)):
        run_training(_config(tiny_dataset.manifest_url, workers, 8 // workers, run,
                             steps=until), url, metrics)
        assert committed_steps(f"file://{folder}/checkpoints")[until] == workers
    resumed = run_training(_config(tiny_dataset.manifest_url, 2, 4, run), url, metrics)
    wall = time.perf_counter() - started
    steps = [r["step"] for r in _losses(metrics)]
    assert steps == list(range(1, STEPS + 1))  # nothing trained twice, nothing skipped
    assert committed_steps(f"file://{folder}/checkpoints")[STEPS] == 2
    diff = _max_diff(_model(folder), _model(reference[0]))
    print(f"\n2→1→2 workers: max |Δw| vs reference {diff:.2e}; "
          f"loss {resumed.train_loss_final:.4f}; three runs {wall:.1f} s")
    assert diff <= TOLERANCE
