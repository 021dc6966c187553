import json

import numpy as np
import pytest
import torch

from forgeline.cache import CacheClient, CachedDataset, CacheServer, ImportanceSampler
from forgeline.datasets import TokenDataset
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
    substituted = [i for i, planned in zip(order, sampler.share(0), strict=True) if i != planned]
    assert len(substituted) == sampler.substitutions
    # substitutes stay cached (pinned) until the loop reads them with its batch
    assert all((data.namespace, i) in client.server.store for i in substituted)
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


class _RecordingClient(CacheClient):
    """The real local client; also keeps the ``exclude`` list of every substitution ask."""

    def __init__(self, server):
        super().__init__(server)
        self.excludes: list[tuple[int, set[int]]] = []  # (epoch being planned, exclude)
        self.sampler = None

    def substitutes(self, ns, n, exclude, seed=None):
        self.excludes.append((self.sampler.epoch, set(exclude)))
        return super().substitutes(ns, n, exclude, seed)


class _CountingDataset(CachedDataset):
    """The real dataset; also records which samples were read from storage, per epoch."""

    sampler = None

    def _fetch(self, indices):
        self.reads.extend((self.sampler.epoch, i) for i in indices)
        return super()._fetch(indices)


def _feedback_losses(indices) -> list[float]:
    return [((int(i) * 2654435761) % 1000) / 1000 for i in indices]  # fixed per sample


def test_epoch_boundary_exclusion_is_per_epoch_and_nothing_is_read_twice(tiny_dataset):
    client = _RecordingClient(CacheServer(300 * 65, "importance", 0.5))
    data = _CountingDataset(tiny_dataset.manifest_url, client, prefetch_threads=1)
    data.reads = []
    client.feedback(data.namespace, list(range(len(data))), _feedback_losses(range(len(data))))
    sampler = ImportanceSampler(data, seed=5, world=4, rank=1, substitution_ratio=0.3,
                                window=32, epochs=3, multiple=8)
    client.sampler = data.sampler = sampler
    orders: list[list[int]] = [[] for _ in range(3)]
    batch: list[int] = []
    for index in sampler:
        orders[sampler.epoch].append(index)
        batch.append(index)
        if len(batch) == 8:
            data.get_many(batch)
            client.feedback(data.namespace, batch, _feedback_losses(batch))
            batch = []
    assert sampler.substitutions > 0
    for epoch, order in enumerate(orders):
        share = sampler.share(epoch).tolist()
        assert len(order) == len(share)
        subs = [p for p in range(len(order)) if order[p] != share[p]]
        assert subs or epoch == 0, epoch  # epoch 0 starts with an empty cache
        # a substitute is never a sample already served in this epoch
        assert all(order[p] not in order[:p] for p in subs), epoch
    # the first substitution asks of epochs 1 and 2 exclude only that epoch's own samples
    # (before: the previous epoch's last window was still excluded)
    for epoch in (1, 2):
        first_ask = next(ex for e, ex in client.excludes if e == epoch)
        last_window = set(orders[epoch - 1][-32:]) - set(sampler.share(epoch).tolist())
        assert last_window and not (first_ask & last_window), epoch
    assert any(set(orders[e - 1][-32:]) & set(orders[e][:64]) - set(sampler.share(e).tolist())
               for e in (1, 2))  # and they are used: last epoch's end substitutes early
    # no sample is read from storage twice in an epoch, across the boundary neither
    assert len(data.reads) == len(set(data.reads))
    assert data.counters["sync_fetches"] == 0
    data.close()


def _run(client, manifest_url, batches: int, state=None, seed=3):
    """``batches`` micro-batches of a substituting cached run; returns (indices, state)."""
    from forgeline.cache import CachedBatches

    data = CachedDataset(manifest_url, client, prefetch_threads=0)
    sampler = ImportanceSampler(data, seed=seed, world=2, rank=0, substitution_ratio=0.3,
                                window=16, epochs=None, multiple=8)
    source = CachedBatches(data, sampler, 8)
    if state is not None:
        source.load_state_dict(state)
    seen: list[int] = []
    it = iter(source)
    for _ in range(batches):
        indices, _ = next(it)
        seen += indices.tolist()
        source.feedback(indices, torch.tensor(_feedback_losses(indices.tolist())))
    state = json.loads(json.dumps(source.state_dict()))  # as a checkpoint stores it
    data.close()
    return seen, state


def test_a_resumed_run_reads_the_same_samples_as_an_uninterrupted_one(tiny_dataset):
    """Substitution on: the restored sampler replays this epoch's decisions and draws the
    next ones with the same seeds, so both runs hand out the same samples (the node's cache
    server outlives a worker restart, so both see the same cache)."""
    url = tiny_dataset.manifest_url
    per_epoch = len(ImportanceSampler(len(TokenDataset(url)), world=2, multiple=8)) // 8
    total, stop = per_epoch + 40, per_epoch + 13  # stop mid-epoch, mid-window
    whole, _ = _run(CacheClient(CacheServer(400 * 65, "importance", 0.6)), url, total)
    again = CacheClient(CacheServer(400 * 65, "importance", 0.6))
    before, state = _run(again, url, stop)
    after, end = _run(again, url, total - stop, state)
    assert state["sub_positions"] and state["position"] % 16 != 0
    assert end["substitutions"] > state["substitutions"]  # new decisions after the restore
    assert before + after == whole
