import json

import numpy as np
import pyarrow.parquet as pq
import pytest
from pydantic import ValidationError

from forgeline import storage
from forgeline.datasets import (
    DatasetConfig,
    DatasetManifest,
    TokenDataset,
    build_dataset,
    load_manifest,
    read_corpus,
    split_indices,
    window_starts,
)
from forgeline.errors import ConfigError, StorageError

SMALL = DatasetConfig(max_source_bytes=50_000, window_tokens=32, samples_per_shard=400,
                      rows_per_group=50)


def test_manifest_round_trip_and_shards_match(tmp_path):
    result = build_dataset(SMALL, f"file://{tmp_path}")
    manifest = load_manifest(result.manifest_url)
    assert DatasetManifest.model_validate_json(manifest.model_dump_json()) == manifest
    assert manifest.splits["train"].samples == result.train_samples
    assert manifest.splits["validation"].samples == result.validation_samples
    assert result.train_samples + result.validation_samples == (50_000 - 1) // 32
    assert manifest.sample_tokens == 33 and manifest.vocab_size == 256
    assert manifest.source.bytes == result.source_bytes == 50_000
    for split in ("train", "validation"):
        for shard in manifest.splits[split].shards:
            assert pq.ParquetFile(tmp_path / shard.path).metadata.num_rows == shard.samples
    assert len(manifest.splits["train"].shards) == -(-result.train_samples // 400)


def test_samples_are_the_corpus_windows_in_order(tmp_path):
    result = build_dataset(SMALL, f"file://{tmp_path}")
    tokens, _ = read_corpus(SMALL.source, SMALL.max_source_bytes)
    starts = window_starts(len(tokens), 32)
    splits = split_indices(len(starts), SMALL.val_fraction, SMALL.seed)
    for split in ("train", "validation"):
        data = TokenDataset(result.manifest_url, split)
        for i in (0, 1, len(data) // 2, len(data) - 1):
            start = starts[splits[split][i]]
            np.testing.assert_array_equal(data[i], tokens[start : start + 33])
    # consecutive windows share one token: the target of one is the first input of the next
    assert splits["train"][1] - splits["train"][0] >= 1


def test_split_is_deterministic_disjoint_and_seed_dependent():
    a, b = split_indices(1000, 0.1, seed=7), split_indices(1000, 0.1, seed=7)
    c = split_indices(1000, 0.1, seed=8)
    np.testing.assert_array_equal(a["validation"], b["validation"])
    assert not np.array_equal(a["validation"], c["validation"])
    assert len(a["validation"]) == 100
    union = np.concatenate([a["train"], a["validation"]])
    assert sorted(union.tolist()) == list(range(1000))


def test_same_config_gives_same_fingerprint_and_checksums(tmp_path):
    first = build_dataset(SMALL, f"file://{tmp_path}/a")
    second = build_dataset(SMALL, f"file://{tmp_path}/b")
    other = build_dataset(SMALL.model_copy(update={"seed": 1}), f"file://{tmp_path}/c")
    assert first.fingerprint == second.fingerprint != other.fingerprint
    shas = [load_manifest(r.manifest_url).splits["train"].shards[0].sha256 for r in (first, second)]
    assert shas[0] == shas[1]


def test_text_files_on_memory_filesystem_by_glob_and_folder():
    storage.write_bytes_atomic("memory://corpus/a.txt", b"hello world\n" * 200)
    storage.write_bytes_atomic("memory://corpus/sub/b.txt", b"other text\n" * 200)
    storage.write_bytes_atomic("memory://corpus/skip.bin", b"\x00" * 10)
    by_glob = build_dataset(DatasetConfig(source="memory://corpus/*.txt", window_tokens=16),
                            "memory://out/glob")
    by_folder = build_dataset(DatasetConfig(source="memory://corpus", window_tokens=16),
                              "memory://out/folder")
    assert by_glob.source_files == 1 and by_glob.source_bytes == 12 * 200 + 1
    assert by_folder.source_files == 3
    assert TokenDataset(by_glob.manifest_url)[0].tobytes() == b"hello world\nhello"


def test_manifest_is_published_last(tmp_path):
    result = build_dataset(SMALL, f"file://{tmp_path}")
    manifest_mtime = (tmp_path / "manifest.json").stat().st_mtime_ns
    shard_mtimes = [p.stat().st_mtime_ns for p in tmp_path.rglob("*.parquet")]
    assert max(shard_mtimes) <= manifest_mtime
    assert not list(tmp_path.rglob("*.tmp"))
    assert json.loads((tmp_path / "manifest.json").read_text())["fingerprint"] == result.fingerprint


def test_missing_path_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match=r"source='file:///no/such/corpus': no such file"):
        build_dataset(DatasetConfig(source="file:///no/such/corpus"), f"file://{tmp_path}")
    with pytest.raises(ConfigError, match="matches no files"):
        build_dataset(DatasetConfig(source=f"file://{tmp_path}/*.txt"), f"file://{tmp_path}/o")


def test_empty_corpus_is_a_clear_error(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "empty.txt").write_bytes(b"")
    (tmp_path / "in" / "blank.txt").write_bytes(b"  \n\n")
    with pytest.raises(ConfigError, match="holds no text"):
        build_dataset(DatasetConfig(source=f"file://{tmp_path}/in"), f"file://{tmp_path}/out")
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_window_longer_than_data_is_a_clear_error(tmp_path):
    (tmp_path / "a.txt").write_text("x" * 100)
    config = DatasetConfig(source=f"file://{tmp_path}/a.txt", window_tokens=64)
    with pytest.raises(ConfigError, match=r"window_tokens=64: longer than the data.*101 tokens"):
        build_dataset(config, f"file://{tmp_path}/out")
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_unwritable_root_is_a_clear_error(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if _can_write(locked):
            pytest.skip("running as a user that ignores file permissions (root)")
        with pytest.raises(StorageError, match="output_url=.*cannot write here"):
            build_dataset(SMALL, f"file://{locked}/ds")
    finally:
        locked.chmod(0o700)


def test_root_under_a_file_is_unwritable_even_for_root(tmp_path):
    (tmp_path / "afile").write_text("not a folder")
    with pytest.raises(StorageError, match="output_url=.*cannot write here"):
        build_dataset(SMALL, f"file://{tmp_path}/afile/ds")


def test_bad_config_values_name_the_field():
    with pytest.raises(ValidationError, match="window_tokens"):
        DatasetConfig(window_tokens=0)
    with pytest.raises(ValidationError, match="val_fraction"):
        DatasetConfig(val_fraction=1.5)
    with pytest.raises(ConfigError, match="source='builtin:nope'"):
        read_corpus("builtin:nope")


def _can_write(folder) -> bool:
    try:
        (folder / ".probe").write_text("x")
        (folder / ".probe").unlink()
        return True
    except OSError:
        return False
