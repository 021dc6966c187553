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
    assert result.servers == 2 and result.calls > 100
