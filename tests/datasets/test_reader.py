import pickle

import numpy as np
import pytest

from forgeline.datasets import DatasetConfig, TokenDataset, build_dataset
from forgeline.errors import ConfigError, IntegrityError


@pytest.fixture(scope="module")
def dataset_url(tmp_path_factory):
    out = tmp_path_factory.mktemp("reader")
    config = DatasetConfig(max_source_bytes=40_000, window_tokens=16, samples_per_shard=500,
                           rows_per_group=32)
    return build_dataset(config, f"file://{out}").manifest_url


def test_random_access_matches_sequential(dataset_url):
    data = TokenDataset(dataset_url, "train", cached_row_groups=2)
    sequential = np.stack([data[i] for i in range(len(data))])
    order = np.random.default_rng(0).permutation(len(data))
    fresh = TokenDataset(dataset_url, "train", cached_row_groups=2)
    np.testing.assert_array_equal(fresh.get_many(order), sequential[order])
    assert sequential.dtype == np.uint8 and sequential.shape == (len(data), 17)
    assert len(data.shards) > 1


def test_out_of_range_and_unknown_split(dataset_url):
    data = TokenDataset(dataset_url, "validation")
    with pytest.raises(IndexError):
        data[len(data)]
    with pytest.raises(ConfigError, match="split='test'"):
        TokenDataset(dataset_url, "test")
    with pytest.raises(ConfigError, match="manifest_url=.*no dataset manifest"):
        TokenDataset(dataset_url.replace("manifest.json", "nothing.json"))


def test_pickles_without_open_handles(dataset_url):
    data = TokenDataset(dataset_url)
    first = data[3].copy()
    clone = pickle.loads(pickle.dumps(data))
    np.testing.assert_array_equal(clone[3], first)


def test_verify_detects_a_corrupted_shard(tmp_path):
    config = DatasetConfig(max_source_bytes=20_000, window_tokens=16)
    result = build_dataset(config, f"file://{tmp_path}")
    data = TokenDataset(result.manifest_url)
    data.verify()
    shard = tmp_path / data.shards[0].path
    raw = bytearray(shard.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    shard.write_bytes(bytes(raw))
    with pytest.raises(IntegrityError, match="part-00000.parquet"):
        TokenDataset(result.manifest_url).verify()
