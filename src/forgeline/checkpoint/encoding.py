"""How one chunk is encoded: which code applies to a tensor, and the chunk's key and blob.

Keys are content addresses: the hash of the raw bytes, plus a tag naming the delta base or
the lossy code when there is one, so equal keys always decode to equal bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from forgeline.checkpoint import codecs
from forgeline.checkpoint.chunking import content_hash, dtype_name
from forgeline.checkpoint.config import CheckpointConfig
from forgeline.checkpoint.format import ChunkRef
from forgeline.checkpoint.publish import Parts

DELTA_WORTH = 0.75  # a delta blob larger than this × raw is re-encoded plain; smaller wins


@dataclass
class EncodedChunk:
    """A persisted chunk: its ref, what a restore reconstructs (kept as the next delta base),
    and the hash of the source bytes (to spot unchanged chunks)."""

    ref: ChunkRef
    recon: np.ndarray | None
    source_digest: str


def chunk_kind(config: CheckpointConfig, name: str, value: Any) -> str:
    """``lossless``, or the lossy code of weights (``-w``), momentum (``-m``), second moment."""
    numel = value.numel() if isinstance(value, torch.Tensor) else value.size
    if not (config.lossy and dtype_name(value) in ("float32", "np:<f4")
            and numel >= config.lossy_min_numel and name.startswith(config.lossy_prefixes)):
        return "lossless"
    if name.endswith("exp_avg_sq"):
        return "lossy-v"
    return "lossy-m" if name.endswith(("exp_avg", "momentum_buffer")) else "lossy-w"


def lossless_key(digest: str, base: EncodedChunk | None) -> str:
    return digest if base is None else f"{digest}.x{base.ref.digest[:16]}"


def encode_lossless(config: CheckpointConfig, buf: np.ndarray, item: int,
                    base: EncodedChunk | None, codec: str | None = None
                    ) -> tuple[bytes | bytearray | Parts, EncodedChunk | None]:
    """The blob of ``buf`` (a delta against ``base`` when that pays) and the base it used;
    ``codec`` overrides the configured one (the store's raw fast path)."""
    codec = codec or config.codec
    if codec == "raw" and base is None:
        return codecs.encode_raw_parts(buf, item), None
    blob = codecs.encode(buf, item, codec, config.zstd_level,
                         base.recon if base is not None else None)
    if base is not None and len(blob) > DELTA_WORTH * buf.size:
        plain = codecs.encode(buf, item, codec, config.zstd_level)
        if len(plain) < len(blob):  # the delta did not pay: a keyframe chunk
            return plain, None
    return blob, base


def encode_lossy(config: CheckpointConfig, kind: str, buf: np.ndarray, digest: str,
                 base: EncodedChunk | None) -> tuple[ChunkRef, bytes, np.ndarray]:
    """Lossy blob of a float32 chunk against ``base``'s reconstruction, its ref and recon."""
    error = {"lossy-w": config.lossy_weight_error, "lossy-m": config.lossy_momentum_error,
             "lossy-v": config.lossy_second_moment_error}[kind]
    try:
        blob, recon = codecs.encode_lossy(buf, base.recon if base else None, error,
                                          kind == "lossy-v", config.zstd_level)
    except OverflowError:  # a residual beyond the code range: start a new chain
        base = None
        blob, recon = codecs.encode_lossy(buf, None, error, kind == "lossy-v",
                                          config.zstd_level)
    chain = [*base.ref.chain, base.ref.key] if base is not None else []
    tag = content_hash(f"{kind}:{error!r}:{chain[-1] if chain else ''}".encode())
    ref = ChunkRef(key=f"{digest}.l{tag[:16]}", digest=content_hash(recon),
                   raw_bytes=buf.size, stored_bytes=len(blob), chain=chain)
    return ref, blob, recon
