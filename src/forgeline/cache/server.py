"""The cache server: one store + importance tables, shared by workers and concurrent jobs.

``CacheServer`` is a plain thread-safe object (the store and every importance table hold
their own locks; no numpy array is read while another thread writes it). In-process it is
used directly; under Ray the same class runs as a named, detached actor, one per node
(``connect``), with ``num_cpus=0`` so it never takes a training worker's slot. Every method
is batched (many samples per call) so actor round trips are amortised. Samples of different
datasets (and splits) live in separate namespaces of one byte budget; two jobs over the same
data share entries.
"""

from __future__ import annotations

import logging
import os
import random
import sys
import threading
from typing import Any

import numpy as np

from forgeline.cache.config import CacheConfig, available_memory_bytes
from forgeline.cache.importance import ImportanceTable
from forgeline.cache.store import CacheStore
from forgeline.errors import ConfigError

log = logging.getLogger(__name__)

ACTOR_NAMESPACE = "forgeline"


def _node_id() -> str | None:
    """The Ray node this process runs on; None outside Ray."""
    ray = sys.modules.get("ray")
    if ray is None or not ray.is_initialized():
        return None
    return ray.get_runtime_context().get_node_id()


class CacheServer:
    """Store + per-namespace importance; every method takes and returns plain data."""

    def __init__(self, capacity_bytes: int, policy: str = "importance",
                 h_fraction: float = 0.9, check_memory: bool = False,
                 keep_unread: bool = False) -> None:
        if check_memory and capacity_bytes > (available := available_memory_bytes()):
            raise ConfigError("capacity_bytes", capacity_bytes,
                              f"above the memory available on node {_node_id()} "
                              f"({available} bytes)")
        self.store = CacheStore(capacity_bytes, policy, h_fraction, keep_unread)
        self.tables: dict[str, ImportanceTable] = {}
        self.quantiles: dict[str, float] = {}
        self._thresholds: dict[str, tuple[int, float]] = {}
        self._register_lock = threading.Lock()

    def ping(self) -> dict[str, Any]:
        """Settings and whereabouts: capacity, policy, process id and (under Ray) node id."""
        return {"capacity_bytes": self.store.capacity_bytes, "policy": self.store.policy,
                "pid": os.getpid(), "node_id": _node_id()}

    def check_accounting(self) -> bool:
        return self.store.check_accounting()

    def register(self, ns: str, size: int, mode: str = "latest", ema_decay: float = 0.9,
                 rank_normalize: bool = False, low_quantile: float = 0.5,
                 importance_url: str | None = None, fingerprint: str | None = None) -> bool:
        """Make namespace ``ns`` of ``size`` samples known; True if it starts warm (importance
        read back from ``importance_url``, or already live on this server)."""
        with self._register_lock:  # two jobs registering at once share one table
            if ns in self.tables:
                return self.tables[ns].seen_count > 0
            table = ImportanceTable(size, mode, ema_decay, rank_normalize)
            warm = bool(importance_url and fingerprint
                        and table.load(importance_url, fingerprint))
            if warm:
                seen, scores = table.seen_scores()
                self.store.set_scores(((ns, int(i)), float(v)) for i, v in zip(seen, scores,
                                                                              strict=True))
                self.store.default_score = table.default_score
            self.tables[ns], self.quantiles[ns] = table, low_quantile
        return warm

    def _table(self, ns: str) -> ImportanceTable:
        if ns not in self.tables:
            raise ConfigError("namespace", ns, "not registered with this cache server")
        return self.tables[ns]

    def _low_threshold(self, ns: str) -> float:
        table = self._table(ns)
        cached = self._thresholds.get(ns)
        if cached is None or table.updates - cached[0] >= 8 or (
                cached[1] == -np.inf and table.updates > cached[0]):
            cached = (table.updates, table.low_threshold(self.quantiles[ns]))
            self._thresholds[ns] = cached
        return cached[1]

    def lookup(self, ns: str, indices: list[int]) -> tuple[list[bool], list[bool]]:
        """For each sample: is it cached, and is it of low importance? The cached ones are
        pinned until read: the caller plans them as hits."""
        low = self._table(ns).get(np.asarray(indices, dtype=np.int64)) < self._low_threshold(ns)
        keys = [(ns, int(i)) for i in indices]
        cached = [k in self.store for k in keys]
        self.store.pin(k for k, c in zip(keys, cached, strict=True) if c)
        return cached, low.tolist()

    def new_epoch(self, ns: str, epoch: int) -> None:
        """A reader of ``ns`` started ``epoch`` (for the H part's ``keep_unread``)."""
        self.store.set_epoch(ns, epoch)

    def get_many(self, ns: str, indices: list[int]) -> dict[int, bytes]:
        found = self.store.get_many((ns, int(i)) for i in indices)
        return {key[1]: data for key, data in found.items()}

    def put_many(self, ns: str, items: list[tuple[int, bytes]]) -> int:
        return self.store.put_many(((ns, int(i)), data) for i, data in items)

    def substitutes(self, ns: str, n: int, exclude: list[int],
                    seed: int | None = None) -> list[int]:
        """Up to ``n`` cached low-importance samples of ``ns`` not in ``exclude``, pinned
        until read (the caller reads them with its batch, like planned hits); the random
        choice is seeded by ``seed``, so the same cache contents give the same answer."""
        rng = random.Random(seed) if seed is not None else None
        keys = self.store.substitutes(n, {(ns, int(i)) for i in exclude}, match=ns,
                                      below=self._low_threshold(ns), rng=rng)
        self.store.pin(keys)
        return [key[1] for key in keys]

    def feedback(self, ns: str, indices: list[int], losses: list[float]) -> None:
        table = self._table(ns)
        scores = table.update(np.asarray(indices), np.asarray(losses))
        self.store.set_scores(((ns, int(i)), float(s)) for i, s in zip(indices, scores,
                                                                         strict=True))
        self.store.default_score = table.default_score

    def top(self, ns: str, k: int) -> list[int]:
        return self._table(ns).top(k).tolist()

    def save_importance(self, ns: str, importance_url: str, fingerprint: str) -> str:
        return self._table(ns).save(importance_url, fingerprint)

    def stats(self) -> dict[str, float]:
        return self.store.stats()


class CacheClient:
    """The same batched API over an in-process ``CacheServer`` or a Ray actor handle."""

    def __init__(self, server: Any) -> None:
        self.server = server
        self.remote = not isinstance(server, CacheServer)

    def _call(self, method: str, *args: Any) -> Any:
        if not self.remote:
            return getattr(self.server, method)(*args)
        import ray

        return ray.get(getattr(self.server, method).remote(*args))

    def ping(self) -> dict[str, Any]:
        """The server's settings, process id and node id (where it really runs)."""
        return self._call("ping")

    def register(self, ns: str, size: int, **kwargs: Any) -> bool:
        if not self.remote:
            return self.server.register(ns, size, **kwargs)
        import ray

        return ray.get(self.server.register.remote(ns, size, **kwargs))

    def lookup(self, ns: str, indices: list[int]) -> tuple[list[bool], list[bool]]:
        return self._call("lookup", ns, indices)

    def new_epoch(self, ns: str, epoch: int) -> None:
        self._call("new_epoch", ns, epoch)

    def get_many(self, ns: str, indices: list[int]) -> dict[int, bytes]:
        return self._call("get_many", ns, indices)

    def put_many(self, ns: str, items: list[tuple[int, bytes]]) -> int:
        return self._call("put_many", ns, items)

    def substitutes(self, ns: str, n: int, exclude: list[int],
                    seed: int | None = None) -> list[int]:
        return self._call("substitutes", ns, n, exclude, seed)

    def feedback(self, ns: str, indices: list[int], losses: list[float]) -> None:
        """Fire-and-forget on Ray: the loop never waits for importance bookkeeping."""
        if self.remote:
            self.server.feedback.remote(ns, indices, losses)
        else:
            self.server.feedback(ns, indices, losses)

    def top(self, ns: str, k: int) -> list[int]:
        return self._call("top", ns, k)

    def save_importance(self, ns: str, importance_url: str, fingerprint: str) -> str:
        return self._call("save_importance", ns, importance_url, fingerprint)

    def stats(self) -> dict[str, float]:
        return self._call("stats")


def actor_name(config: CacheConfig, node_id: str) -> str:
    return f"{config.server_name}-{node_id[:16]}"


def connect(config: CacheConfig, node_id: str | None = None) -> CacheClient:
    """A client of this node's cache server: the shared Ray actor or, for
    ``server="local"``, a fresh in-process store.

    Under Ray there is one named, detached server per node (``actor_name``), pinned there by
    node affinity and found from the caller's own node id: the first caller on a node creates
    it (its capacity checked against that node's memory), every later worker and job on that
    node joins it. A dead node's server dies with it; a new node gets a new, empty one.
    """
    if config.server == "local":
        return CacheClient(CacheServer(config.capacity_bytes, config.policy, config.h_fraction,
                                       False, config.h_keep_unread))
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    if not ray.is_initialized():
        ray.init()
    node_id = node_id or ray.get_runtime_context().get_node_id()
    name = actor_name(config, node_id)
    handle = (
        ray.remote(CacheServer)
        .options(
            name=name, namespace=ACTOR_NAMESPACE, get_if_exists=True,
            lifetime="detached", num_cpus=0, max_concurrency=config.server_concurrency,
            scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False),
        )
        .remote(config.capacity_bytes, config.policy, config.h_fraction, True,
                config.h_keep_unread)
    )
    client = CacheClient(handle)
    try:
        info = client.ping()
    except ray.exceptions.RayActorError as exc:
        cause = getattr(exc, "cause", None) or exc
        if isinstance(cause, ConfigError) or "ConfigError" in str(exc):
            raise ConfigError("capacity_bytes", config.capacity_bytes,
                              f"the cache server {name} did not start: {cause}") from exc
        raise
    if info["capacity_bytes"] != config.capacity_bytes or info["policy"] != config.policy:
        log.warning("joined the running cache server %s (%s); its settings win over %s",
                    name, info, config.model_dump(include={"capacity_bytes", "policy"}))
    return client


def shutdown(config: CacheConfig, node_id: str | None = None) -> bool:
    """Stop this node's cache server actor; False if none was running."""
    import ray

    node_id = node_id or ray.get_runtime_context().get_node_id()
    try:
        handle = ray.get_actor(actor_name(config, node_id), namespace=ACTOR_NAMESPACE)
    except ValueError:
        return False
    ray.kill(handle)
    return True
