import threading
import time
import uuid

import fsspec
import pytest

from forgeline import storage
from forgeline.errors import ConfigError
from forgeline.throttled import ThrottledFileSystem, throttled_url


@pytest.fixture
def blob():
    path = f"/throttle-{uuid.uuid4().hex}/blob.bin"
    fsspec.filesystem("memory").pipe_file(path, bytes(range(256)) * 400)  # 102_400 B
    return path


def test_registered_protocol_and_self_describing_url(blob):
    url = throttled_url(f"memory://{blob}", latency_s=0.0, bandwidth_bytes_per_s=1e9,
                        bucket=uuid.uuid4().hex)
    fs, path = storage.filesystem(url)
    assert isinstance(fs, ThrottledFileSystem) and fsspec.get_filesystem_class("throttled")
    assert path == blob and fs.unstrip_protocol(path) == url
    assert fs.cat_file(path) == fsspec.filesystem("memory").cat_file(blob)
    with fs.open(path) as f:
        f.seek(256)
        assert f.read(3) == bytes([0, 1, 2])
    child, _ = storage.filesystem(storage.join(url.rsplit("/", 1)[0], "blob.bin"))
    assert child is fs
    chained, chained_path = storage.filesystem(f"throttled::memory://{blob}")
    assert isinstance(chained, ThrottledFileSystem) and chained_path == blob


def test_latency_per_request_and_counts(blob):
    fs = ThrottledFileSystem("memory", latency_s=0.02, bandwidth_bytes_per_s=1e12,
                             bucket=uuid.uuid4().hex)
    started = time.perf_counter()
    for _ in range(5):
        fs.cat_file(blob, start=0, end=1000)
    assert time.perf_counter() - started >= 5 * 0.02
    assert fs.stats() == {"requests": 5, "bytes": 5000}


def test_bandwidth_is_shared_by_threads(blob):
    bucket = uuid.uuid4().hex
    fs = ThrottledFileSystem("memory", latency_s=0.0, bandwidth_bytes_per_s=1_000_000,
                             bucket=bucket)
    started = time.perf_counter()
    threads = [threading.Thread(target=fs.cat_file, args=(blob,)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # 4 × 102_400 B through one 1 MB/s bucket: ≥ 0.4 s although every read ran in parallel
    assert time.perf_counter() - started >= 0.38
    assert fs.stats()["bytes"] == 4 * 102_400


def test_bandwidth_is_shared_across_processes(tmp_path):
    import subprocess
    import sys

    data = tmp_path / "blob.bin"
    data.write_bytes(b"x" * 200_000)
    bucket = uuid.uuid4().hex
    code = (
        "import forgeline.throttled as t, fsspec;"
        f"fs, p = fsspec.core.url_to_fs(t.throttled_url('file://{data}', 0.0, 1e6, '{bucket}'));"
        "fs.cat_file(p)"
    )
    started = time.perf_counter()
    procs = [subprocess.Popen([sys.executable, "-c", code]) for _ in range(2)]
    assert all(p.wait() == 0 for p in procs)
    elapsed = time.perf_counter() - started
    fs = ThrottledFileSystem("file", bandwidth_bytes_per_s=1e6, bucket=bucket)
    assert fs.stats() == {"requests": 2, "bytes": 400_000}
    assert elapsed >= 0.38  # 400 kB at 1 MB/s, shared by two processes


def test_bad_settings_are_refused():
    with pytest.raises(ConfigError, match="bandwidth_bytes_per_s=0.0"):
        ThrottledFileSystem("memory", bandwidth_bytes_per_s=0, bucket="x")
    with pytest.raises(ConfigError, match="latency_s=-1.0"):
        ThrottledFileSystem("memory", latency_s=-1, bucket="y")


_RESOLVE = ("import sys, fsspec; fs, p = fsspec.core.url_to_fs({url!r}); "
            "assert type(fs).__name__ == 'ThrottledFileSystem'; data = fs.cat_file(p)")


def test_entry_point_registers_the_protocol_in_a_fresh_process(tmp_path):
    """No import of forgeline.throttled first: the fsspec.specs entry point is the one path."""
    import subprocess
    import sys

    (tmp_path / "b.bin").write_bytes(b"y" * 100)
    url = throttled_url(f"file://{tmp_path}/b.bin", 0.0, 1e9, uuid.uuid4().hex)
    code = _RESOLVE.format(url=url) + "; assert data == b'y' * 100"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_entry_point_registers_the_protocol_in_ray_workers(ray_cluster, tmp_path):
    (tmp_path / "b.bin").write_bytes(b"z" * 100)
    url = throttled_url(f"file://{tmp_path}/b.bin", 0.0, 1e9, uuid.uuid4().hex)

    @ray_cluster.remote(num_cpus=0, max_calls=1)  # a fresh worker process
    def resolve() -> tuple[bool, int]:
        import sys

        already = "forgeline.throttled" in sys.modules
        exec(_RESOLVE.format(url=url), {})
        return already, len(fsspec.core.url_to_fs(url)[0].cat_file(url))

    already, size = ray_cluster.get(resolve.remote())
    assert not already and size == 100
