"""A byte-bounded sample store with exact accounting, importance-aware admission and eviction,
and a checksum per entry that is verified on every read.

Policy ``importance`` (iCache/SHADE): the H part (``h_fraction`` of the bytes) is a min-heap
by score — a sample is admitted only if it outscores the heap minimum, which is then evicted
(demoted to the L part); the L part is FIFO and holds the low-importance samples that misses
may be substituted with. Scores of samples not in the cache are kept as *ghost* scores, so a
sample coming back competes with what it was last worth. ``lru`` and ``never_evict`` use the
same accounting and integrity checks (peers for the benchmark).
"""

from __future__ import annotations

import heapq
import itertools
import random
import threading
import zlib
from collections import OrderedDict
from collections.abc import Hashable, Iterable
from dataclasses import dataclass

from forgeline.cache.config import POLICIES
from forgeline.errors import ConfigError, check_choice

Key = Hashable
PIN_TURNOVERS = 4
"""A pin not ended by a read expires after this many turnovers of the cache's entries."""


@dataclass(slots=True)
class _Entry:
    data: bytes
    crc: int
    part: str  # "H", "L" or "A" (the single part of lru / never_evict)
    version: int
    pinned_at: int = -1  # put clock of the latest pin; -1: not pinned
    pins: int = 0  # readers that announced they will read it (each read ends one)
    read_epoch: int = -1  # the namespace's epoch in which it was last read (or read in)


class CacheStore:
    """Thread-safe; ``used_bytes`` is always the exact sum of the stored payloads."""

    def __init__(self, capacity_bytes: int, policy: str = "importance",
                 h_fraction: float = 0.9, keep_unread: bool = False) -> None:
        if capacity_bytes <= 0:
            raise ConfigError("capacity_bytes", capacity_bytes, "must be > 0")
        check_choice("policy", policy, POLICIES)
        if not 0.0 < h_fraction <= 1.0:
            raise ConfigError("h_fraction", h_fraction, "must be within (0, 1]")
        self.capacity_bytes, self.policy = int(capacity_bytes), policy
        self.h_capacity = int(capacity_bytes * h_fraction) if policy == "importance" else 0
        self.l_capacity = self.capacity_bytes - self.h_capacity
        self.default_score = 0.0
        self._lock = threading.RLock()
        self._entries: dict[Key, _Entry] = {}
        self._scores: dict[Key, float] = {}  # cached and ghost scores
        self._heap: list[tuple[float, int, Key]] = []
        self._lru: OrderedDict[Key, None] = OrderedDict()  # L part (FIFO) or lru order
        self._used = {"H": 0, "L": 0, "A": 0}
        self._versions = itertools.count()
        self._clock = 0  # puts so far: pins older than one turnover of the cache expire
        self.keep_unread = keep_unread
        self._epochs: dict[object, int] = {}  # namespace -> its readers' current epoch
        self.counters = dict.fromkeys(
            ("hits", "misses", "inserts", "rejected", "evictions", "corrupt_dropped"), 0
        )

    # --- accounting -------------------------------------------------------------------
    @property
    def used_bytes(self) -> int:
        return sum(self._used.values())

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: Key) -> bool:
        return key in self._entries

    def keys(self) -> list[Key]:
        with self._lock:
            return list(self._entries)

    def stats(self) -> dict[str, float]:
        with self._lock:
            return {**self.counters, "entries": len(self._entries), "used_bytes": self.used_bytes,
                    "capacity_bytes": self.capacity_bytes, "h_bytes": self._used["H"],
                    "l_bytes": self._used["L"] + self._used["A"]}

    def check_accounting(self) -> bool:
        """True if every part's byte count is the exact sum of its payloads and the FIFO/LRU
        order holds exactly the entries outside H."""
        with self._lock:
            used = {"H": 0, "L": 0, "A": 0}
            for entry in self._entries.values():
                used[entry.part] += len(entry.data)
            outside_h = {k for k, e in self._entries.items() if e.part != "H"}
            return used == self._used and outside_h == set(self._lru) and (
                self.used_bytes <= self.capacity_bytes)

    # --- scores -----------------------------------------------------------------------
    def score(self, key: Key) -> float:
        return self._scores.get(key, self.default_score)

    def set_scores(self, scores: Iterable[tuple[Key, float]]) -> None:
        """New importance of samples, cached or not (uncached ones become ghost scores)."""
        with self._lock:
            for key, value in scores:
                self._scores[key] = float(value)
                entry = self._entries.get(key)
                if entry is not None and entry.part == "H":
                    entry.version = next(self._versions)
                    heapq.heappush(self._heap, (float(value), entry.version, key))
            if len(self._heap) > 2 * len(self._entries) + 1024:
                self._heap = [(self.score(k), e.version, k) for k, e in self._entries.items()
                              if e.part == "H"]
                heapq.heapify(self._heap)

    def _heap_min(self) -> tuple[float, Key] | None:
        while self._heap:
            score, version, key = self._heap[0]
            entry = self._entries.get(key)
            if entry is not None and entry.part == "H" and entry.version == version:
                return score, key
            heapq.heappop(self._heap)
        return None

    # --- pins -------------------------------------------------------------------------
    def pin(self, keys: Iterable[Key]) -> None:
        """Keep these cached samples until they are read: a reader has planned them as hits
        (evicting one in between would put a read on the training loop's critical path).
        Pins count: two readers (ranks, jobs) that both planned a sample keep it until both
        read it. A pin ends at its read, or all pins after ``PIN_TURNOVERS`` x as many puts
        as the cache holds entries (a reader that went away)."""
        with self._lock:
            for key in keys:
                entry = self._entries.get(key)
                if entry is not None:
                    entry.pinned_at, entry.pins = self._clock, entry.pins + 1

    def _pinned(self, entry: _Entry) -> bool:
        return (entry.pins > 0
                and self._clock - entry.pinned_at <= PIN_TURNOVERS * len(self._entries))

    # --- epochs -----------------------------------------------------------------------
    def set_epoch(self, namespace: object, epoch: int) -> None:
        """The readers of ``namespace`` started ``epoch`` (the highest one counts)."""
        with self._lock:
            self._epochs[namespace] = max(epoch, self._epochs.get(namespace, 0))

    def _epoch_of(self, key: Key) -> int:
        return self._epochs.get(key[0] if isinstance(key, tuple) else None, 0)

    def _unread(self, key: Key, entry: _Entry) -> bool:
        """``keep_unread``: not yet read in its namespace's current epoch. Ranks' shares of an
        epoch are disjoint, so a sample read this epoch is not asked for again until the
        next one, while an unread one is a coming hit: H evicts read ones first."""
        return self.keep_unread and entry.read_epoch < self._epoch_of(key)

    # --- removal ----------------------------------------------------------------------
    def _remove(self, key: Key) -> _Entry:
        entry = self._entries.pop(key)
        self._used[entry.part] -= len(entry.data)
        self._lru.pop(key, None)
        return entry

    def _evict_fifo(self, part: str, need: int, capacity: int) -> bool:
        while self._used[part] + need > capacity:
            victim = next((k for k in self._lru if not self._pinned(self._entries[k])), None)
            if victim is None:
                break
            self._remove(victim)
            self.counters["evictions"] += 1
        return self._used[part] + need <= capacity

    # --- admission --------------------------------------------------------------------
    def _insert(self, key: Key, data: bytes, crc: int, part: str) -> None:
        entry = _Entry(data, crc, part, next(self._versions), read_epoch=self._epoch_of(key))
        self._entries[key] = entry
        self._used[part] += len(data)
        if part == "H":
            heapq.heappush(self._heap, (self.score(key), entry.version, key))
        else:
            self._lru[key] = None
        self.counters["inserts"] += 1

    def _put_l(self, key: Key, data: bytes, crc: int) -> bool:
        if len(data) > self.l_capacity or not self._evict_fifo("L", len(data), self.l_capacity):
            return False
        self._insert(key, data, crc, "L")
        return True

    def _put_importance(self, key: Key, data: bytes, crc: int) -> bool:
        size, score = len(data), self.score(key)
        if size <= self.h_capacity:
            aside = []  # pinned entries skipped over, back on the heap afterwards
            while self._used["H"] + size > self.h_capacity:
                low = self._heap_min()
                if low is None or low[0] >= score:
                    break
                if self._pinned(self._entries[low[1]]) or self._unread(low[1],
                                                                       self._entries[low[1]]):
                    aside.append(heapq.heappop(self._heap))
                    continue
                demoted = self._remove(low[1])  # leaves H; keeps its ghost score
                self.counters["evictions"] += 1
                self._put_l(low[1], demoted.data, demoted.crc)
            for item in aside:
                heapq.heappush(self._heap, item)
            if self._used["H"] + size <= self.h_capacity:
                self._insert(key, data, crc, "H")
                return True
        return self._put_l(key, data, crc)

    def put(self, key: Key, data: bytes) -> bool:
        """Offer a sample; True if it is now cached."""
        data = bytes(data)
        with self._lock:
            if key in self._entries:
                return True
            self._clock += 1
            crc = zlib.crc32(data)
            if self.policy == "importance":
                ok = self._put_importance(key, data, crc)
            elif len(data) > self.capacity_bytes:
                ok = False
            elif self.policy == "lru":
                ok = self._evict_fifo("A", len(data), self.capacity_bytes)
                if ok:
                    self._insert(key, data, crc, "A")
            else:  # never_evict
                ok = self._used["A"] + len(data) <= self.capacity_bytes
                if ok:
                    self._insert(key, data, crc, "A")
            if not ok:
                self.counters["rejected"] += 1
            return ok

    def put_many(self, items: Iterable[tuple[Key, bytes]]) -> int:
        return sum(self.put(k, v) for k, v in items)

    # --- reads ------------------------------------------------------------------------
    def get(self, key: Key) -> bytes | None:
        """The sample if cached and intact; a corrupt entry is dropped and reported a miss."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                self.counters["misses"] += 1
                return None
            if zlib.crc32(entry.data) != entry.crc:
                self._remove(key)
                self.counters["corrupt_dropped"] += 1
                self.counters["misses"] += 1
                return None
            if self.policy == "lru":
                self._lru.move_to_end(key)
            entry.pins = max(0, entry.pins - 1)  # one reader done; others may still come
            if not entry.pins:
                entry.pinned_at = -1
            entry.read_epoch = self._epoch_of(key)
            self.counters["hits"] += 1
            return entry.data

    def get_many(self, keys: Iterable[Key]) -> dict[Key, bytes]:
        out = {}
        for key in keys:
            data = self.get(key)
            if data is not None:
                out[key] = data
        return out

    def substitutes(self, n: int, exclude: set[Key], match: object = None,
                    below: float = float("inf"), fill: bool = True,
                    rng: random.Random | None = None) -> list[Key]:
        """Up to ``n`` random cached keys not in ``exclude``, least important first: the L
        part, then H entries scoring below ``below``, then (``fill``) the lowest-scoring other
        H entries; any entry for the other policies. ``match`` keeps keys whose first item
        equals it."""
        if n <= 0:
            return []
        rng = rng or random

        def wanted(k: Key) -> bool:
            return k not in exclude and (match is None or (isinstance(k, tuple)
                                                           and k[0] == match))

        with self._lock:
            pool = [k for k in self._lru if wanted(k)]
            if len(pool) < n and self.policy == "importance":
                h_keys = [k for k, e in self._entries.items() if e.part == "H" and wanted(k)]
                low_h = [k for k in h_keys if self.score(k) < below]
                pool += rng.sample(low_h, min(n - len(pool), len(low_h)))
                if len(pool) < n and fill:  # then the least important of the rest
                    rest = sorted((k for k in h_keys if self.score(k) >= below),
                                  key=self.score)
                    pool += rest[: n - len(pool)]
        return rng.sample(pool, min(n, len(pool)))
