import itertools

import pytest
import torch

from forgeline.datasets import TokenDataset
from forgeline.errors import ConfigError
from forgeline.train import BatchSource, ShuffledBatches


def _take(source, n):
    return list(itertools.islice(iter(source), n))


def test_rank_shares_are_disjoint_and_cover_an_epoch_once(tiny_dataset):
    data = TokenDataset(tiny_dataset.manifest_url)
    world, micro = 2, 8
    per_rank_batches = (len(data) // world) // micro
    seen = []
    for rank in range(world):
        source = ShuffledBatches(data, micro, seed=3, rank=rank, world=world)
        assert isinstance(source, BatchSource)
        indices = torch.cat([i for i, _ in _take(source, per_rank_batches)]).tolist()
        assert len(indices) == len(set(indices))
        seen.append(set(indices))
    assert not seen[0] & seen[1]
    assert len(seen[0] | seen[1]) == world * per_rank_batches * micro


def test_tokens_are_the_indexed_samples(tiny_dataset):
    data = TokenDataset(tiny_dataset.manifest_url)
    indices, tokens = _take(ShuffledBatches(data, 4, seed=0), 1)[0]
    assert tokens.dtype == torch.long and tokens.shape == (4, data.sample_tokens)
    torch.testing.assert_close(tokens, torch.from_numpy(data.get_many(indices.numpy())).long())


def test_resume_continues_the_same_order_across_epochs(tiny_dataset):
    data = TokenDataset(tiny_dataset.manifest_url)
    per_epoch = len(data) // 8
    full = _take(ShuffledBatches(data, 8, seed=1), per_epoch + 5)
    first = ShuffledBatches(data, 8, seed=1)
    _take(first, per_epoch - 2)
    resumed = ShuffledBatches(data, 8, seed=1)
    resumed.load_state_dict(first.state_dict())
    rest = _take(resumed, 7)
    for (a, _), (b, _) in zip(full[per_epoch - 2 :], rest, strict=True):
        torch.testing.assert_close(a, b)
    assert resumed.stats()["epoch"] == 1.0


def test_too_few_samples_for_the_batch_is_a_clear_error(tiny_dataset):
    data = TokenDataset(tiny_dataset.manifest_url)
    with pytest.raises(ConfigError, match="micro_batch_size=100000"):
        ShuffledBatches(data, 100_000, seed=0, world=2)
