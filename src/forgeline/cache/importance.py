"""Per-sample importance from the training loop's per-sample losses, persisted across runs.

``latest`` keeps each sample's last loss (iCache); ``ema`` smooths it. With ``rank_normalize``
each minibatch's losses become SHADE's ``log(rank + 10)`` scores first, so batches with a
different loss scale (early vs late training) compare fairly. The table is saved per dataset
fingerprint (``.npz``, read back with ``allow_pickle=False``) so the next run starts warm.
"""

from __future__ import annotations

import io
import threading

import numpy as np

from forgeline import storage
from forgeline.errors import ConfigError, IntegrityError, check_choice


def importance_file(importance_url: str, fingerprint: str) -> str:
    """Where the importance of the dataset ``fingerprint`` lives under ``importance_url``."""
    return storage.join(importance_url, f"{fingerprint}.importance.npz")


class ImportanceTable:
    """Scores of ``size`` samples; unseen samples score the mean of the seen ones.

    Thread-safe: every read of ``scores``/``seen`` holds the lock, as every write does. NumPy
    is not safe against a concurrent write: ``scores[seen]`` counts the mask's True values,
    allocates that many, then copies with the GIL released, so a ``seen[i] = True`` landing
    in between writes past the allocation (glibc: "double free or corruption").
    """

    def __init__(self, size: int, mode: str = "latest", ema_decay: float = 0.9,
                 rank_normalize: bool = False) -> None:
        if size <= 0:
            raise ConfigError("size", size, "must be > 0")
        check_choice("importance", mode, ("latest", "ema"))
        self.size, self.mode, self.ema_decay = size, mode, ema_decay
        self.rank_normalize = rank_normalize
        self.scores = np.zeros(size, dtype=np.float64)
        self.seen = np.zeros(size, dtype=bool)
        self.updates = 0
        self._lock = threading.RLock()

    def update(self, indices: np.ndarray, losses: np.ndarray) -> np.ndarray:
        """Fold one minibatch's losses in; return the new scores of ``indices``."""
        indices = np.asarray(indices, dtype=np.int64)
        values = np.asarray(losses, dtype=np.float64)
        if len(indices) != len(values):
            raise ConfigError("losses", len(values), f"expected {len(indices)} per-sample losses")
        if self.rank_normalize and len(values):
            ranks = np.empty(len(values))
            ranks[np.argsort(values, kind="stable")] = np.arange(len(values))
            values = np.log(ranks + 10.0)
        with self._lock:
            if self.mode == "ema":
                old = self.scores[indices]
                values = np.where(self.seen[indices],
                                  self.ema_decay * old + (1 - self.ema_decay) * values, values)
            self.scores[indices] = values
            self.seen[indices] = True
            self.updates += 1
            return self.scores[indices].copy()

    @property
    def default_score(self) -> float:
        with self._lock:
            return float(self.scores[self.seen].mean()) if self.seen.any() else 0.0

    @property
    def seen_count(self) -> int:
        with self._lock:
            return int(self.seen.sum())

    def get(self, indices: np.ndarray) -> np.ndarray:
        indices = np.asarray(indices, dtype=np.int64)
        with self._lock:
            return np.where(self.seen[indices], self.scores[indices], self.default_score)

    def low_threshold(self, quantile: float) -> float:
        """Scores below this are 'low importance' (−inf while nothing has been seen)."""
        with self._lock:
            if not self.seen.any():
                return -np.inf
            return float(np.quantile(self.scores[self.seen], quantile))

    def seen_scores(self) -> tuple[np.ndarray, np.ndarray]:
        """(indices, scores) of the seen samples: a consistent copy."""
        with self._lock:
            seen = np.flatnonzero(self.seen)
            return seen, self.scores[seen]

    def top(self, k: int) -> np.ndarray:
        """The ``k`` seen samples of highest importance, best first."""
        seen, scores = self.seen_scores()
        order = np.argsort(-scores, kind="stable")
        return seen[order[:k]]

    # --- persistence ------------------------------------------------------------------
    def to_bytes(self, fingerprint: str) -> bytes:
        buf = io.BytesIO()
        with self._lock:
            np.savez(buf, scores=self.scores, seen=self.seen,
                     fingerprint=np.array(fingerprint), mode=np.array(self.mode))
        return buf.getvalue()

    def save(self, importance_url: str, fingerprint: str) -> str:
        url = importance_file(importance_url, fingerprint)
        storage.write_bytes_atomic(url, self.to_bytes(fingerprint))
        return url

    def load(self, importance_url: str, fingerprint: str) -> bool:
        """Read a saved table of the same dataset; False if there is none."""
        url = importance_file(importance_url, fingerprint)
        if not storage.exists(url):
            return False
        fs, path = storage.filesystem(url)
        with np.load(io.BytesIO(fs.cat_file(path)), allow_pickle=False) as saved:
            if str(saved["fingerprint"]) != fingerprint or saved["scores"].shape != (self.size,):
                raise IntegrityError(
                    f"{url} holds importance of another dataset ({saved['scores'].shape[0]} "
                    f"samples, fingerprint {saved['fingerprint']})"
                )
            with self._lock:
                self.scores[:] = saved["scores"]
                self.seen[:] = saved["seen"]
        return True


__all__ = ["ImportanceTable", "importance_file"]
