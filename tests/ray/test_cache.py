"""The cache as a Ray actor shared by workers, and a real training run through it."""

import json
import uuid

import pytest

from forgeline.cache import CacheConfig, CachedDataset, connect, shutdown
from forgeline.cache.stress import StressSpec, stress_server
from forgeline.ray import CacheStatsCallback, aggregate_cache_stats, read_metrics
from forgeline.throttled import throttled_url


def test_aggregation_sums_counters_across_workers(tmp_path):
    per_worker = [{"step": 10, "cache_hits": 3, "cache_misses": 1, "cache_wait_s": 0.5},
                  {"step": 10, "cache_hits": 1, "cache_misses": 3, "cache_substitutions": 2,
                   "cache_wait_s": 1.5}]
    totals = aggregate_cache_stats(per_worker)
    assert totals["cache_hits"] == 4 and totals["cache_misses"] == 4
    assert totals["cache_hit_rate"] == pytest.approx(6 / 10)
    assert totals["cache_wait_s_max_worker"] == 1.5 and totals["workers"] == 2
    url = f"file://{tmp_path}/cache_stats.json"
    callback = CacheStatsCallback(url)
    callback.after_report(None, [{"step": 1, "loss": 2.0}], None)  # no cache stats: ignored
    callback.after_report(None, per_worker, None)
    saved = json.loads((tmp_path / "cache_stats.json").read_text())
    assert saved["latest"]["cache_hits"] == 4 and len(saved["history"]) == 1


def test_two_workers_share_one_node_actor(ray_cluster, tiny_dataset):
    config = CacheConfig(capacity_bytes=2**20, server_name=f"test-{uuid.uuid4().hex[:8]}")

    @ray_cluster.remote(num_cpus=0)
    def worker(indices, expect_hits):
        client = connect(config)
        data = CachedDataset(tiny_dataset.manifest_url, client, prefetch_threads=0)
        data.get_many(indices)
        hits = data.counters["hits"]
        client.feedback(data.namespace, indices, [1.0] * len(indices))
        assert hits == expect_hits
        return client.stats()

    try:
        first = ray_cluster.get(worker.remote(list(range(100)), 0))
        second = ray_cluster.get(worker.remote(list(range(100)), 100))  # the other's samples
        assert first["entries"] == 100 and second["hits"] == 100
        assert second["used_bytes"] == 100 * 65
    finally:
        assert shutdown(config)


@pytest.mark.slow
def test_training_through_the_cache_on_throttled_storage(ray_cluster, tiny_dataset, tmp_path):
    from forgeline.train import TrainOptions, run_training

    bucket = f"train-{uuid.uuid4().hex[:8]}"
    cache = CacheConfig(
        capacity_bytes=1500 * 65, substitution_ratio=0.2, prefetch_threads=2,
        server_name=f"test-{uuid.uuid4().hex[:8]}", importance_url=f"file://{tmp_path}/imp",
        persist_every_batches=10,
    )
    options = TrainOptions(model_size="tiny", workers=2, zero_stage=0, steps=40,
                           micro_batch_size=8, lr=3e-3, eval_samples=64, cache=cache)
    manifest = throttled_url(tiny_dataset.manifest_url, latency_s=0.002,
                             bandwidth_bytes_per_s=50e6, bucket=bucket)
    metrics_url = f"file://{tmp_path}/metrics.jsonl"
    stats_url = f"file://{tmp_path}/cache_stats.json"
    try:
        result = run_training(options.to_config(manifest), f"file://{tmp_path}/train",
                              metrics_url, callbacks=[CacheStatsCallback(stats_url)])
    finally:
        shutdown(cache)
    assert result.train_loss_final < result.train_loss_first
    assert result.val_loss_after < result.val_loss_before
    records = [r for r in read_metrics(metrics_url) if "loss" in r]
    assert records and all(r["cache_misses"] > 0 for r in records)
    totals = json.loads((tmp_path / "cache_stats.json").read_text())["latest"]
    assert totals["workers"] == 2 and totals["cache_remote_bytes"] > 0
    assert list((tmp_path / "imp").glob("*.importance.npz"))  # saved for the next run


def test_threaded_server_survives_concurrent_clients_evictions_and_large_values(ray_cluster):
    """6 clients x 4 threads on a 16-thread server under PYTHONMALLOC=debug, values up to
    1 MiB in a 24 MiB store, then the server killed with calls in flight (before the fix it
    aborted with "double free or corruption" within seconds)."""
    result = stress_server(StressSpec(seconds=4.0, kill_rounds=1))
    assert result.crashes == 0, result.log_findings
    assert result.client_errors == [] and result.wrong_values == 0 and result.accounting_ok
    assert result.servers == 2 and result.calls >= 6 * 4 * 10  # the unkilled round's floor


@pytest.mark.slow
def test_one_server_per_node_shared_by_jobs_and_replaced_with_a_lost_node(tiny_dataset):
    """A real head + 2-node cluster (own process, own RAY_TMPDIR and GCS port): each worker
    reads through its own node's server; a second job joins the same servers; after a node
    is removed the survivor keeps its server and samples, a new node gets a new, empty one."""
    import os
    import shutil
    import socket
    import subprocess
    import sys
    import tempfile
    from pathlib import Path

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    script = Path(__file__).with_name("multinode_cache.py")
    short = tempfile.mkdtemp(prefix="fl-mn-", dir="/tmp")  # unix socket paths: <= 107 bytes
    os.makedirs(os.path.join(short, "ray"))  # where Ray keeps the cluster's address file
    env = {**os.environ, "RAY_TMPDIR": short}
    try:
        run = subprocess.run([sys.executable, str(script), tiny_dataset.manifest_url,
                              str(port), short], capture_output=True, text=True, env=env,
                             timeout=480)
    finally:
        shutil.rmtree(short, ignore_errors=True)
    assert run.returncode == 0, run.stderr[-3000:]
    doc = json.loads(run.stdout.strip().splitlines()[-1])
    ids, (first, second, third) = doc["ids"], doc["jobs"]
    for job in (first, second):
        for name in ("node_a", "node_b"):
            worker = job["workers"][name]
            assert worker["worker_node"] == worker["server_node"] == ids[name]
        assert set(job["per_node"]) == {ids["node_a"], ids["node_b"]}
    assert first["workers"]["node_a"]["server"] != first["workers"]["node_b"]["server"]
    assert first["job"] != second["job"]
    for name in ("node_a", "node_b"):  # the second job joined the same servers, warm
        assert second["workers"][name]["server"] == first["workers"][name]["server"]
        assert first["workers"][name]["hits"] == 0 and second["workers"][name]["hits"] == 50
        assert second["per_node"][ids[name]]["entries"] == 50
    survivor, fresh = third["workers"]["node_a"], third["workers"]["node_c"]
    assert survivor["server"] == first["workers"]["node_a"]["server"] and survivor["hits"] == 50
    assert fresh["worker_node"] == fresh["server_node"] == ids["node_c"] and fresh["hits"] == 0
    assert set(third["per_node"]) == {ids["node_a"], ids["node_c"]}  # node_b's died with it
    assert third["per_node"][ids["node_a"]]["hits"] == 100


def test_capacity_is_checked_against_the_servers_own_node(ray_cluster):
    from forgeline.cache import CacheServer, available_memory_bytes
    from forgeline.errors import ConfigError

    too_much = available_memory_bytes() * 4
    with pytest.raises(ConfigError, match=f"capacity_bytes={too_much}: above the memory "
                                          "available on node"):
        CacheServer(too_much, check_memory=True)
    server = ray_cluster.remote(CacheServer).options(num_cpus=0).remote(too_much, "lru", 0.9,
                                                                         True)
    with pytest.raises(ray_cluster.exceptions.RayActorError, match="above the memory"):
        ray_cluster.get(server.ping.remote())
