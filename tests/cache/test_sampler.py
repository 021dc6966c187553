import numpy as np
import pytest

from forgeline.cache import CacheClient, CachedDataset, CacheServer, ImportanceSampler
from forgeline.errors import ConfigError


def _local(capacity_bytes=10**7):
    return CacheClient(CacheServer(capacity_bytes, "importance"))


@pytest.mark.parametrize("world", [1, 2, 3])
def test_rank_shares_are_disjoint_and_each_covers_its_share_exactly_once(world):
    shares = [list(ImportanceSampler(1000, seed=4, rank=r, world=world)) for r in range(world)]
    for share in shares:
        assert len(share) == len(set(share)) == 1000 // world
    union = set().union(*map(set, shares))
    assert len(union) == sum(map(len, shares))  # pairwise disjoint


def test_multiple_cuts_each_share_to_whole_micro_batches():
    shares = [list(ImportanceSampler(1000, seed=2, rank=r, world=3, multiple=16))
              for r in range(3)]
    for share in shares:
        assert len(share) == len(set(share)) == 320  # 333 cut to 20 batches of 16
    assert len(set().union(*map(set, shares))) == 960


def test_epochs_are_reshuffled_and_deterministic():
    a = ImportanceSampler(500, seed=1, epochs=2)
    b = ImportanceSampler(500, seed=1, epochs=2)
    order = list(a)
    assert order == list(b) and len(order) == 1000
    assert order[:500] != order[500:] and sorted(order[:500]) == list(range(500))


def test_zero_substitution_gives_exact_epochs_through_a_warm_cache(tiny_dataset):
    client = _local()
    data = CachedDataset(tiny_dataset.manifest_url, client, prefetch_threads=2)
    n = len(data)
    # make half of the samples cached and low-importance: substitution would pick them
    client.feedback(data.namespace, list(range(n)), [float(i) for i in range(n)])
    data.get_many(list(range(n // 2)))
    sampler = ImportanceSampler(data, seed=0, substitution_ratio=0.0, window=32, epochs=2)
    order = list(sampler)
    for epoch in (order[:n], order[n:]):
        assert sorted(epoch) == list(range(n))
    assert sampler.substitutions == 0
    data.close()


def test_substitution_replaces_low_importance_misses_up_to_the_ratio(tiny_dataset):
    client = _local(capacity_bytes=200 * 65)
    data = CachedDataset(tiny_dataset.manifest_url, client, prefetch_threads=0)
    n = len(data)
    losses = np.random.default_rng(0).random(n)
    client.feedback(data.namespace, list(range(n)), losses.tolist())
    data.get_many(list(range(0, 2000, 10)))  # fill the cache (H and L parts)
    sampler = ImportanceSampler(data, seed=0, substitution_ratio=0.1, window=64)
    order = list(sampler)
    assert len(order) == n
    assert 0 < sampler.substitutions <= int(0.1 * n)
    substituted = list(sampler.substituted)
    assert substituted and all((data.namespace, i) in client.server.store for i in substituted)
    data.close()


def test_bad_sampler_arguments():
    with pytest.raises(ConfigError, match="substitution_ratio=2"):
        ImportanceSampler(10, substitution_ratio=2)
    with pytest.raises(ConfigError, match="substitution_ratio=0.5"):
        ImportanceSampler(10, substitution_ratio=0.5)  # no cache to substitute from
    with pytest.raises(ConfigError, match="rank=2"):
        ImportanceSampler(10, rank=2, world=2)
    with pytest.raises(ConfigError, match="multiple=0"):
        ImportanceSampler(10, multiple=0)
