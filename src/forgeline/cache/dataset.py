"""``CachedDataset``: a ``forgeline.datasets.TokenDataset`` read through the sample cache.

Reads ask the cache first (one batched call), then samples staged by the background readers,
then storage. Background readers (threads: the work is I/O-bound) fetch upcoming misses that
the sampler announces with ``prefetch`` and offer them to the cache.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np

from forgeline.cache.server import CacheClient
from forgeline.datasets import TokenDataset

PREFETCH_TASK_SAMPLES = 4
"""Samples per background read task (one cache put per task amortises the actor call)."""


class CachedDataset:
    """Samples of one split, indexable like ``TokenDataset``; counts where each came from."""

    def __init__(self, manifest_url: str, client: CacheClient, split: str = "train",
                 prefetch_threads: int = 4, mode: str = "latest", ema_decay: float = 0.9,
                 rank_normalize: bool = False, low_quantile: float = 0.5,
                 importance_url: str | None = None) -> None:
        self.source = TokenDataset(manifest_url, split)
        self.manifest_url, self.split, self.client = manifest_url, split, client
        self.fingerprint = self.source.manifest.fingerprint
        self.namespace = f"{self.fingerprint}:{split}"
        self.warm = client.register(
            self.namespace, len(self.source), mode=mode, ema_decay=ema_decay,
            rank_normalize=rank_normalize, low_quantile=low_quantile,
            importance_url=importance_url, fingerprint=self.fingerprint,
        )
        self._local = threading.local()
        self._lock = threading.Lock()
        self._staged: dict[int, bytes] = {}
        self._inflight: dict[int, Future[None]] = {}
        self._pool = ThreadPoolExecutor(prefetch_threads, "forgeline-prefetch") if (
            prefetch_threads > 0) else None
        self.counters: dict[str, float] = dict.fromkeys(
            ("hits", "prefetched", "misses", "sync_fetches", "remote_bytes", "wait_s"), 0
        )

    def __len__(self) -> int:
        return len(self.source)

    @property
    def sample_tokens(self) -> int:
        return self.source.sample_tokens

    def _reader(self) -> TokenDataset:
        """One ``TokenDataset`` per thread: its row-group cache is not thread-safe."""
        reader = getattr(self._local, "reader", None)
        if reader is None:
            reader = self._local.reader = TokenDataset(self.manifest_url, self.split)
        return reader

    def _fetch(self, indices: list[int]) -> dict[int, bytes]:
        reader = self._reader()
        out = {i: reader[i].tobytes() for i in indices}
        with self._lock:
            self.counters["misses"] += len(out)
            self.counters["remote_bytes"] += sum(len(v) for v in out.values())
        return out

    def _prefetch_task(self, indices: list[int]) -> None:
        data = self._fetch(indices)
        with self._lock:
            self._staged.update(data)
        self.client.put_many(self.namespace, list(data.items()))

    def prefetch(self, indices: list[int], cached: list[bool] | None = None) -> int:
        """Start reading the samples of ``indices`` that the cache lacks; return how many."""
        if self._pool is None or not indices:
            return 0
        if cached is None:
            cached = self.client.lookup(self.namespace, list(indices))[0]
        with self._lock:
            todo = [i for i, c in zip(indices, cached, strict=True)
                    if not c and i not in self._inflight and i not in self._staged]
        # small tasks in order: the first samples land early instead of with the whole window
        chunk = max(1, min(PREFETCH_TASK_SAMPLES, -(-len(todo) // self._pool._max_workers)))
        for first in range(0, len(todo), chunk):
            part = todo[first : first + chunk]
            future = self._pool.submit(self._prefetch_task, part)
            with self._lock:
                for i in part:
                    self._inflight[i] = future
            future.add_done_callback(lambda _f, part=part: self._done(part))
        return len(todo)

    def pending(self) -> set[int]:
        """Samples being read or read and not yet taken by the loop."""
        with self._lock:
            return set(self._staged) | set(self._inflight)

    def _done(self, part: list[int]) -> None:
        with self._lock:
            for i in part:
                self._inflight.pop(i, None)

    def get_many(self, indices: Any) -> np.ndarray:
        """Samples at ``indices`` as ``[len, sample_tokens]`` tokens."""
        started = time.perf_counter()
        indices = [int(i) for i in indices]
        found: dict[int, bytes] = {}
        with self._lock:
            for i in indices:
                if i not in found and i in self._staged:
                    found[i] = self._staged.pop(i)
                    self.counters["prefetched"] += 1
        ask = [i for i in indices if i not in found]
        hits = self.client.get_many(self.namespace, ask) if ask else {}
        self.counters["hits"] += len(hits)
        found.update(hits)
        for i in [i for i in indices if i not in found]:
            with self._lock:
                future = self._inflight.get(i)
            if future is not None:
                future.result()
            with self._lock:  # staged by a prefetch that landed (or finished) meanwhile
                if i in self._staged:
                    found[i] = self._staged.pop(i)
                    self.counters["prefetched"] += 1
        missing = [i for i in indices if i not in found]
        if missing:  # read on the loop's critical path: not announced, or evicted meanwhile
            self.counters["sync_fetches"] += len(missing)
            fetched = self._fetch(missing)
            self.client.put_many(self.namespace, list(fetched.items()))
            found.update(fetched)
        with self._lock:
            for i in indices:
                self._staged.pop(i, None)  # served another way while its prefetch landed
            self.counters["wait_s"] += time.perf_counter() - started
        width = self.sample_tokens
        if not indices:
            return np.empty((0, width), dtype=self.source.token_dtype)
        dtype = self.source.token_dtype
        return np.stack([np.frombuffer(found[i], dtype=dtype, count=width) for i in indices])

    def __getitem__(self, index: int) -> np.ndarray:
        return self.get_many([index])[0]

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)

    def __getstate__(self) -> dict[str, Any]:
        raise TypeError("CachedDataset holds threads; build one per worker from its URL")
