"""Chunk codecs: byte grouping + zstd, a delta against the parent checkpoint's chunk, and
the opt-in lossy code of :mod:`forgeline.checkpoint.lossy`.

A blob is ``b"FLCK"`` + a 16-byte header (codec id, flags, item size, raw length) + payload,
so a chunk decodes without its manifest (given its delta base). Measured on AdamW-trained fp32
state (4 MiB chunks, 1 and 5 steps apart): zstandard level 1 after byte grouping (ZipNN-style:
byte k of every value together) matches blosc2's shuffle + zstd in size (0.836 vs 0.838 of raw
on weights) and speed (~590 MB/s per thread), bitshuffle is worse (0.88), higher levels gain
< 1 % at 1/2–1/7 the speed: so zstandard, level 1. The delta is the *integer difference* of
each value's bits, zigzag-coded (weights: 0.705/0.769 of raw vs XOR's 0.738/0.792), so the
sign/exponent/high-mantissa planes become mostly zeros; Adam moments change too much between
checkpoints for any delta to help, and the store keeps whichever encoding is smaller. zstd
skips the incompressible low mantissa planes at ~4 GB/s; the exponent plane is the CPU cost.
"""

from __future__ import annotations

import struct
import threading

import numpy as np
import zstandard

from forgeline.checkpoint import lossy
from forgeline.checkpoint.publish import Parts
from forgeline.errors import ConfigError, IntegrityError

MAGIC = b"FLCK"
_HEADER = struct.Struct("<4sBBBBQ")  # magic, codec id, flags, itemsize, reserved, raw length
_CODEC_IDS = {"raw": 0, "zstd": 1, "shuffle-zstd": 2, "lossy": 4}
_CODEC_NAMES = {v: k for k, v in _CODEC_IDS.items()}
FLAG_DELTA = 1
FLAG_SQRT = 2

_local = threading.local()


def _compressor(level: int) -> zstandard.ZstdCompressor:
    cache = _local.__dict__.setdefault("compressors", {})
    if level not in cache:
        cache[level] = zstandard.ZstdCompressor(level=level)
    return cache[level]


def _decompressor() -> zstandard.ZstdDecompressor:
    if not hasattr(_local, "decompressor"):
        _local.decompressor = zstandard.ZstdDecompressor()
    return _local.decompressor


def byte_group(raw: np.ndarray, itemsize: int) -> np.ndarray:
    """Byte k of every item together (ZipNN-style): exponents and signs line up and compress."""
    if itemsize <= 1 or raw.size % itemsize:
        return raw
    items, out = raw.reshape(-1, itemsize), np.empty((itemsize, raw.size // itemsize), np.uint8)
    for k in range(itemsize):  # one strided pass per byte: ~25x faster than a transposed copy
        out[k] = items[:, k]
    return out.reshape(-1)


def byte_ungroup(grouped: np.ndarray, itemsize: int, out: np.ndarray | None = None
                 ) -> np.ndarray:
    """Undo :func:`byte_group`, into ``out`` when given (a uint8 buffer of the same size)."""
    if itemsize <= 1 or grouped.size % itemsize:
        return _into(out, grouped)
    dest = np.empty(grouped.size, np.uint8) if out is None else out
    planes, items = grouped.reshape(itemsize, -1), dest.reshape(-1, itemsize)
    for k in range(itemsize):
        items[:, k] = planes[k]
    return dest


def _into(out: np.ndarray | None, data: np.ndarray) -> np.ndarray:
    if out is None:
        return data
    out[:] = data
    return out


_UINTS = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}


def _width(size: int, itemsize: int) -> type:
    return _UINTS[itemsize] if itemsize in _UINTS and size % itemsize == 0 else np.uint8


def delta(raw: np.ndarray, base: np.ndarray, itemsize: int) -> np.ndarray:
    """zigzag(raw - base) per item, in the item's unsigned integer width (wrapping)."""
    if raw.size != base.size:
        raise IntegrityError(f"delta base has {base.size} bytes, chunk has {raw.size}")
    u = _width(raw.size, itemsize)
    d = raw.view(u) - base.view(u)
    return ((d << u(1)) ^ (u(0) - (d >> u(8 * d.itemsize - 1)))).view(np.uint8)


def undelta(coded: np.ndarray, base: np.ndarray, itemsize: int) -> np.ndarray:
    if coded.size != base.size:
        raise IntegrityError(f"delta base has {base.size} bytes, chunk has {coded.size}")
    u = _width(coded.size, itemsize)
    z = coded.view(u)
    return (base.view(u) + ((z >> u(1)) ^ (u(0) - (z & u(1))))).view(np.uint8)


def encode(raw: np.ndarray, itemsize: int, codec: str, level: int = 1,
           base: np.ndarray | None = None) -> bytes | bytearray:
    """Encode the uint8 array ``raw``; with ``base``, store ``delta(raw, base)`` instead."""
    if codec not in _CODEC_IDS or codec == "lossy":
        raise ConfigError("codec", codec, "unknown codec; choose one of raw, zstd, shuffle-zstd")
    flags = 0
    data = raw
    if base is not None:
        data, flags = delta(raw, base, itemsize), FLAG_DELTA
    if codec == "raw":  # one copy (the store's fast path): header and payload in one buffer
        header = _HEADER.pack(MAGIC, _CODEC_IDS[codec], flags, itemsize, 0, raw.size)
        out = bytearray(len(header) + data.size)
        out[: len(header)] = header
        out[len(header) :] = data.data
        return out
    return _compressed(data, itemsize, codec, level, flags, raw.size)


def _compressed(data: np.ndarray, itemsize: int, codec: str, level: int, flags: int,
                raw_len: int) -> bytes:
    """Header + ``data`` compressed with ``codec`` (zstd, or shuffle-zstd: byte-grouped)."""
    header = _HEADER.pack(MAGIC, _CODEC_IDS[codec], flags, itemsize, 0, raw_len)
    return header + _compressor(level).compress(
        data if codec == "zstd" else byte_group(data, itemsize))


def blob_codec(blob: bytes) -> str:
    """The codec a chunk blob was written with (its header says)."""
    if len(blob) < _HEADER.size or blob[:4] != MAGIC:
        raise IntegrityError("not a forgeline chunk (bad magic or too short)")
    return _CODEC_NAMES.get(_HEADER.unpack_from(blob)[1], "unknown")


HEADER_BYTES = _HEADER.size


def plain_raw_length(header: bytes) -> int | None:
    """The payload length of a plain ``raw`` chunk (no delta, no flags) from its header, so
    a reader can read the payload straight into its buffer; None for any other blob."""
    if len(header) < _HEADER.size:
        return None
    magic, codec_id, flags, _, _, raw_len = _HEADER.unpack_from(header)
    if magic != MAGIC or _CODEC_NAMES.get(codec_id) != "raw" or flags:
        return None
    return raw_len


def transcode(blob: bytes, codec: str, level: int = 1) -> bytes | bytearray:
    """A ``raw`` chunk ``blob`` (delta or not) re-encoded with ``codec``: same header flags,
    same decoded bytes. Blobs of any other codec come back unchanged."""
    if len(blob) < _HEADER.size:
        raise IntegrityError(f"blob of {len(blob)} bytes is shorter than its header")
    magic, codec_id, flags, itemsize, _, raw_len = _HEADER.unpack_from(blob)
    if magic != MAGIC or _CODEC_NAMES.get(codec_id) != "raw" or codec == "raw":
        return blob
    payload = np.frombuffer(memoryview(blob)[_HEADER.size :], dtype=np.uint8)
    return _compressed(payload, itemsize, codec, level, flags, raw_len)


def encode_raw_parts(raw: np.ndarray, itemsize: int) -> Parts:
    """The raw blob of ``raw`` (no delta) as header + a view of ``raw``: the store's fast
    path writes it without copying the chunk again (see ``publish.Parts``)."""
    return Parts(_HEADER.pack(MAGIC, _CODEC_IDS["raw"], 0, itemsize, 0, raw.size),
                 raw.data)


def encode_lossy(raw: np.ndarray, base: np.ndarray | None, error: float, sqrt_mode: bool,
                 level: int = 1) -> tuple[bytes, np.ndarray]:
    """Lossy float32 chunk → (blob, reconstruction as uint8 bytes); bounds in ``lossy``."""
    payload, recon = lossy.encode(raw.view(np.float32),
                                  None if base is None else base.view(np.float32),
                                  error, sqrt_mode)
    flags = (FLAG_DELTA if base is not None else 0) | (FLAG_SQRT if sqrt_mode else 0)
    blob = (_HEADER.pack(MAGIC, _CODEC_IDS["lossy"], flags, 4, 0, raw.size)
            + _compressor(level).compress(payload))
    return blob, recon.view(np.uint8)


def decode(blob: bytes, base: np.ndarray | None = None, out: np.ndarray | None = None
           ) -> np.ndarray:
    """Decode a blob back to its raw uint8 bytes (``base`` = the decoded delta base chunk),
    written into ``out`` when given (a uint8 buffer of the raw size: saves a copy)."""
    if len(blob) < _HEADER.size:
        raise IntegrityError(f"blob of {len(blob)} bytes is shorter than its header")
    magic, codec_id, flags, itemsize, _, raw_len = _HEADER.unpack_from(blob)
    if magic != MAGIC or codec_id not in _CODEC_NAMES:
        raise IntegrityError("not a forgeline chunk (bad magic or codec id)")
    if out is not None and out.size != raw_len:
        raise IntegrityError(f"chunk holds {raw_len} bytes, the buffer for it {out.size}")
    codec = _CODEC_NAMES[codec_id]
    payload = memoryview(blob)[_HEADER.size :]
    if flags & FLAG_DELTA and base is None:
        raise IntegrityError("delta chunk decoded without its base")
    try:
        if codec == "lossy":
            body = _decompressor().decompress(payload, max_output_size=raw_len * 2 + 64)
            return _into(out, lossy.decode(body, raw_len // 4,
                                           base if flags & FLAG_DELTA else None,
                                           bool(flags & FLAG_SQRT)).view(np.uint8))
        data = (np.frombuffer(payload, dtype=np.uint8) if codec == "raw" else np.frombuffer(
            _decompressor().decompress(payload, max_output_size=raw_len), dtype=np.uint8))
    except zstandard.ZstdError as exc:
        raise IntegrityError(f"cannot decompress ({exc})") from exc
    if data.size != raw_len:
        raise IntegrityError(f"decoded {data.size} bytes, header says {raw_len}")
    if flags & FLAG_DELTA:
        if codec == "shuffle-zstd":
            data = byte_ungroup(data, itemsize)
        return _into(out, undelta(data, base, itemsize))
    if codec == "shuffle-zstd":
        return byte_ungroup(data, itemsize, out)
    if out is None and codec == "raw":
        return data.copy()  # an array that owns its bytes, not a view of the blob
    return _into(out, data)
