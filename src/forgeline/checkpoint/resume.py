"""Resume from the fastest surviving tier: memory, then local disk, then the remote root.

The step to resume is decided by the remote root alone (the durable tier: the newest intact
committed step there, or the one asked for). A faster tier is used only when it holds *that*
step with the very manifest the remote holds (same checksum, same writer), so a local tier
that is older than the remote one — or holds another run's step of the same number — is
never used. Every path checks every chunk's content hash; a tier that fails (missing or
corrupted chunk, damaged manifest, unreadable folder) is skipped with a logged reason and
the next one is tried. The choice, the reasons and the timings are logged and returned.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from forgeline import storage
from forgeline.checkpoint.config import TierConfig
from forgeline.checkpoint.errors import CheckpointCorruptError
from forgeline.checkpoint.manifests import decode_manifest
from forgeline.checkpoint.reader import (
    CheckpointReader,
    Restored,
    committed_steps,
    manifest_path,
    step_folders,
)
from forgeline.errors import IntegrityError, StorageError

log = logging.getLogger(__name__)


@dataclass
class TierRestore:
    """A restore and where it came from: ``tier`` (memory, local or remote) and its URL;
    ``choose_s``: finding the step on the remote root; ``restore_s``: reading, decoding and
    verifying (failed faster tiers included); ``skipped``: why each faster tier was not used."""

    step: int
    tier: str
    url: str
    restored: Restored
    choose_s: float
    restore_s: float
    skipped: dict[str, str] = field(default_factory=dict)

    def report(self) -> dict[str, Any]:
        """The JSON-serializable part (for metrics and logs)."""
        return {"step": self.step, "tier": self.tier, "url": self.url,
                "choose_s": self.choose_s, "restore_s": self.restore_s,
                "resume_s": self.choose_s + self.restore_s, "skipped": dict(self.skipped)}


def tier_urls(url: str, tiers: TierConfig | None, rank: int,
              memory_url: str | None = None) -> list[tuple[str, str]]:
    """``[(tier, url), …]`` fastest first, the remote root ``url`` last. The memory tier lives
    in one process: it is listed only when its ``memory_url`` is given."""
    found = []
    if memory_url is not None:
        found.append(("memory", memory_url))
    if tiers is not None and tiers.local_url is not None:
        found.append(("local", storage.join(storage.normalize_root(tiers.local_url),
                                            f"rank-{rank:05d}")))
    return [*found, ("remote", storage.normalize_root(url))]


def _try_tier(name: str, url: str, expected: Any, names: Iterable[str] | None,
              read_threads: int) -> Restored | str:
    """This tier's restore of ``expected``'s step and rank, or why it cannot give it."""
    fs, root = storage.filesystem(url)
    path = manifest_path(root, expected.step, expected.rank, expected.world_size)
    if not fs.exists(path):
        newest = max(step_folders(fs, root), default=None)
        return f"does not hold step {expected.step} (newest step there: {newest})"
    manifest = decode_manifest(fs.cat_file(path), path)
    if (manifest.checksum, manifest.writer) != (expected.checksum, expected.writer):
        return (f"its step {expected.step} is not the remote one (writer {manifest.writer}, "
                f"remote {expected.writer}): another run's save")
    reader = CheckpointReader(url, expected.rank, True, read_threads)
    return reader.restore_manifest(manifest, names, verify=True)


def restore_fastest(tiers: list[tuple[str, str]], rank: int = 0, step: int | None = None,
                    names: Iterable[str] | None = None, read_threads: int = 4
                    ) -> TierRestore | None:
    """Restore ``rank``'s state at ``step`` (default: the remote root's newest intact step)
    from the fastest of ``tiers`` (see :func:`tier_urls`) that holds it intact; None when
    the remote root holds no committed step (a fresh start)."""
    started = time.perf_counter()
    remote_name, remote_url = tiers[-1]
    remote = CheckpointReader(remote_url, rank, True, read_threads)
    committed = committed_steps(remote_url)  # listed once: each remote request costs latency
    target = step if step is not None else remote.latest_good_step(committed)
    if target is None:
        log.info("no committed checkpoint under %s: nothing to resume", remote_url)
        return None
    expected = remote.manifest(target, rank, committed)
    chosen = time.perf_counter()
    skipped: dict[str, str] = {}
    for name, url in tiers[:-1]:
        try:
            result = _try_tier(name, url, expected, names, read_threads)
        except (IntegrityError, CheckpointCorruptError, StorageError, OSError) as exc:
            result = f"{type(exc).__name__}: {exc}"
        if isinstance(result, Restored):
            return _done(name, url, result, started, chosen, skipped)
        skipped[name] = result
        log.warning("checkpoint step %s rank %s: not restoring from the %s tier (%s): %s; "
                    "falling back to the next tier", target, rank, name, url, result)
    restored = remote.restore_manifest(expected, names, verify=True)
    return _done(remote_name, remote_url, restored, started, chosen, skipped)


def _done(name: str, url: str, restored: Restored, started: float, chosen: float,
          skipped: dict[str, str]) -> TierRestore:
    result = TierRestore(restored.step, name, url, restored, chosen - started,
                         time.perf_counter() - chosen, skipped)
    log.warning("restored checkpoint step %s rank %s from the %s tier (%s) in %.3f s%s",
                result.step, restored.manifest.rank, name, url,
                result.choose_s + result.restore_s,
                f"; skipped: {skipped}" if skipped else "")
    return result
