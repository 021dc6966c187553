"""On-storage layout and manifest schema.

``{url}/chunks/{key[:2]}/{key}``   content-addressed chunk blobs (codec header + payload)
``{url}/steps/{step:012d}/rank-{r:05d}-of-{w:05d}.json``   one manifest per rank, written last
and atomically, never over an existing one. A step is *committed* once all ``w`` rank manifests
exist; ``{url}/gc.lease`` is held by a running garbage collector; ``{url}/failure_stats.json``
holds the run's failure statistics (``forgeline.ray.FailureStatistics``).
"""

from __future__ import annotations

import posixpath
import re
from typing import Any

from pydantic import BaseModel, Field

FORMAT_VERSION = 3
CHUNKS_DIR = "chunks"
STEPS_DIR = "steps"
FAILURE_STATS_FILE = "failure_stats.json"
_SHARD_RE = re.compile(r"rank-(\d{5})-of-(\d{5})\.json$")


class ChunkRef(BaseModel):
    """One slice of a tensor's bytes: where it is stored and what it must hash to."""

    key: str = Field(description="Blob name under chunks/ (content hash of the raw bytes, plus "
                     "a tag naming the delta base / lossy code when there is one).")
    digest: str = Field(description="Content hash (Manifest.hash) of the bytes restore produces.")
    raw_bytes: int
    stored_bytes: int = Field(description="Size of the blob; 0 when it was already stored.")
    chain: list[str] = Field(
        default_factory=list,
        description="Delta blobs to decode first, keyframe first: blob k is a delta against "
        "the decoded blob k-1, and ``key`` against the last one.")


class TensorEntry(BaseModel):
    name: str
    dtype: str
    shape: list[int]
    nbytes: int
    codec: str
    chunks: list[ChunkRef]
    dim0_offset: int | None = Field(None, description="Row offset when sharded along dim 0.")
    global_shape: list[int] | None = Field(None, description="Unsharded shape (dim-0 shards).")


class Manifest(BaseModel):
    """Everything needed to restore one rank's state at one step."""

    format_version: int = FORMAT_VERSION
    step: int
    rank: int
    world_size: int
    created_unix_s: float
    chunk_bytes: int
    hash: str = Field("blake3", description="Content hash of ChunkRef.digest and chunk keys.")
    parent_step: int | None = None
    keyframe: bool = True
    skeleton: Any = Field(description="The state's nesting with tensors replaced by names.")
    tensors: list[TensorEntry]
    metadata: dict[str, Any] = Field(default_factory=dict)
    stats: dict[str, float] = Field(default_factory=dict)
    writer: str = Field("", description="Id of the store instance that wrote it.")
    checksum: str | None = Field(None, description="blake3 of the canonical JSON without it "
                                 "(forgeline.checkpoint.manifests).")

    def referenced_keys(self) -> set[str]:
        keys: set[str] = set()
        for entry in self.tensors:
            for ref in entry.chunks:
                keys.add(ref.key)
                keys.update(ref.chain)
        return keys


def chunk_path(root: str, key: str) -> str:
    return posixpath.join(root, CHUNKS_DIR, key[:2], key)


def step_dir(root: str, step: int) -> str:
    return posixpath.join(root, STEPS_DIR, f"{step:012d}")


def shard_name(rank: int, world_size: int) -> str:
    return f"rank-{rank:05d}-of-{world_size:05d}.json"


def parse_shard_name(name: str) -> tuple[int, int] | None:
    match = _SHARD_RE.search(name)
    return (int(match.group(1)), int(match.group(2))) if match else None
