import itertools

import numpy as np
import pytest
import torch

from forgeline.cache import (
    CacheClient,
    CacheConfig,
    CachedBatches,
    CachedDataset,
    CacheServer,
    importance_file,
    warm_cache,
)
from forgeline.datasets import TokenDataset
from forgeline.errors import ConfigError
from forgeline.throttled import ThrottledFileSystem, throttled_url
from forgeline.train import BatchSource


def _config(tmp_path, **kw):
    return CacheConfig(**{"capacity_bytes": 400 * 65, "server": "local",
                          "importance_url": f"file://{tmp_path}/importance", **kw})


def test_batches_are_the_indexed_samples_and_stats_add_up(tiny_dataset, tmp_path):
    source = CachedBatches.from_config(_config(tmp_path), tiny_dataset.manifest_url, 8, seed=0)
    assert isinstance(source, BatchSource)
    plain = TokenDataset(tiny_dataset.manifest_url)
    per_epoch = len(plain) // 8
    batches = list(itertools.islice(iter(source), per_epoch + 3))
    for indices, tokens in batches[:5]:
        torch.testing.assert_close(tokens, torch.from_numpy(plain.get_many(indices)).long())
    epoch = torch.cat([i for i, _ in batches[:per_epoch]]).tolist()
    assert len(set(epoch)) == len(epoch) == per_epoch * 8  # exact epoch by default
    stats = source.stats()
    assert stats["epoch"] == 1.0 and stats["cache_substitutions"] == 0
    assert stats["cache_misses"] >= per_epoch * 8  # first epoch: everything is read once
    assert stats["cache_hits"] > 0  # second epoch: hits on what the cache kept
    assert stats["cache_remote_bytes"] == stats["cache_misses"] * plain.sample_tokens
    source.close()


def test_corrupt_cache_entry_is_refetched_not_served(tiny_dataset):
    client = CacheClient(CacheServer(10**6, "lru"))
    data = CachedDataset(tiny_dataset.manifest_url, client, prefetch_threads=0)
    good = data.get_many([5, 6]).copy()
    entry = client.server.store._entries[(data.namespace, 5)]
    entry.data = bytes(len(entry.data))  # zeroed in memory
    again = data.get_many([5, 6])
    np.testing.assert_array_equal(again, good)
    assert client.stats()["corrupt_dropped"] == 1 and data.counters["misses"] == 3
    data.close()


def test_importance_persists_and_the_next_run_starts_warm(tiny_dataset, tmp_path):
    config = _config(tmp_path, persist_every_batches=5)
    first = CachedBatches.from_config(config, tiny_dataset.manifest_url, 8, seed=0)
    assert not first.dataset.warm
    it = iter(first)
    for _ in range(10):
        indices, tokens = next(it)
        first.feedback(indices, tokens.float().std(dim=1))  # any per-sample "loss"
    first.close()
    saved = importance_file(config.importance_url, first.dataset.fingerprint)
    fs_path = saved.removeprefix("file://")
    assert tmp_path.joinpath(fs_path.removeprefix(str(tmp_path) + "/")).exists()
    second = CachedBatches.from_config(config, tiny_dataset.manifest_url, 8, seed=1)
    assert second.dataset.warm
    table = second.dataset.client.server.tables[second.dataset.namespace]
    assert table.seen.sum() == 80
    second.close()
    # the warm-up stage reads the previous run's most important samples into a new server
    client = CacheClient(CacheServer(config.capacity_bytes))
    result = warm_cache(config, tiny_dataset.manifest_url, client=client)
    assert result.warm_importance and result.samples == 80  # all seen samples fit in H
    top = client.top(f"{first.dataset.fingerprint}:train", 10)
    assert set(client.get_many(f"{first.dataset.fingerprint}:train", top)) == set(top)


def test_warm_up_needs_an_importance_folder(tiny_dataset):
    with pytest.raises(ConfigError, match="importance_url=None"):
        warm_cache(CacheConfig(server="local"), tiny_dataset.manifest_url)


def test_reads_through_the_throttled_store_hit_storage_once_per_cached_sample(tiny_dataset):
    url = throttled_url(tiny_dataset.manifest_url, latency_s=0.001, bucket="batches-test")
    client = CacheClient(CacheServer(10**7, "never_evict"))
    data = CachedDataset(url, client, prefetch_threads=2)
    fs = ThrottledFileSystem("file", bucket="batches-test")
    data.prefetch(list(range(64)))
    data.get_many(list(range(64)))
    before = fs.stats()["requests"]
    data.get_many(list(range(64)))  # all cached now: no storage request
    assert fs.stats()["requests"] == before and data.counters["hits"] >= 64
    data.close()


def test_planned_samples_never_become_reads_on_the_loops_critical_path(tiny_dataset, tmp_path):
    """With prefetch, pins and substitution together, every sample of epochs 2-3 comes from
    the cache, a landed prefetch or a substitute: none is read synchronously by the loop."""
    source = CachedBatches.from_config(
        _config(tmp_path, prefetch_threads=1, substitution_ratio=0.3, lookahead_batches=2),
        tiny_dataset.manifest_url, 8, seed=3)
    per_epoch = len(source.sampler) // 8
    rng = np.random.default_rng(0)
    batches = iter(source)
    for epoch in range(3):
        before = source.dataset.counters["sync_fetches"]
        for _ in range(per_epoch):
            indices, _ = next(batches)
            source.feedback(indices, torch.from_numpy(rng.random(len(indices))))
        if epoch:
            assert source.dataset.counters["sync_fetches"] == before, epoch
    assert source.sampler.substitutions > 0
    source.close()
