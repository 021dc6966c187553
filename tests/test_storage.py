import pytest

from forgeline import storage
from forgeline.errors import StorageError


def test_atomic_write_leaves_no_temp_files_and_replaces_whole(tmp_path):
    url = f"file://{tmp_path}/deep/er/x.json"
    storage.write_json_atomic(url, {"a": 1})
    storage.write_json_atomic(url, {"a": 2})
    assert storage.read_json(url) == {"a": 2}
    assert [p.name for p in (tmp_path / "deep" / "er").iterdir()] == ["x.json"]


def test_memory_filesystem_and_join():
    url = storage.join("memory://bucket/", "runs", "r1", "f.bin")
    assert url == "memory://bucket/runs/r1/f.bin"
    storage.write_bytes_atomic(url, b"abc")
    assert storage.exists(url)
    fs, path = storage.filesystem(url)
    assert fs.cat_file(path) == b"abc"


def test_unknown_protocol_is_a_clear_error():
    with pytest.raises(StorageError, match="root='nosuchproto://x': no usable filesystem"):
        storage.filesystem("nosuchproto://x", "root")


def test_normalize_root(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert storage.normalize_root("artifacts") == f"file://{tmp_path}/artifacts"
    assert storage.normalize_root("s3://b/p/") == "s3://b/p"
