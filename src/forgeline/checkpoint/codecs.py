"""Chunk codecs: byte grouping + zstd, XOR delta against a base chunk, and an opt-in 8-bit
quantizer for optimizer state.

A blob is ``b"FLCK"`` + a 16-byte header (codec id, flags, item size, raw length) + payload,
so a chunk decodes without its manifest. zstd comes from ``zstandard`` (measured against
plain zstd on fp32 weights: byte grouping shrinks 0.92 → 0.84 of raw at level 1).

Lossy bound (``quantize8``), per block of 256 float32 values with ``m`` = the block's max |x|:
signed values (e.g. Adam ``exp_avg``): ``|x - x̂| ≤ m / 254``;
``*exp_avg_sq`` (non-negative): ``0 ≤ sqrt(x̂) - sqrt(x) ≤ max sqrt(x) / 255`` — rounded up,
so a restored Adam denominator is never smaller than the true one (no exploding steps).
"""

from __future__ import annotations

import struct
import threading

import numpy as np
import zstandard

from forgeline.errors import ConfigError, IntegrityError

MAGIC = b"FLCK"
_HEADER = struct.Struct("<4sBBBBQ")  # magic, codec id, flags, itemsize, reserved, raw length
_CODEC_IDS = {"raw": 0, "zstd": 1, "shuffle-zstd": 2, "q8": 3}
_CODEC_NAMES = {v: k for k, v in _CODEC_IDS.items()}
FLAG_DELTA = 1
FLAG_SQRT = 2
Q_BLOCK = 256

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
    return raw.reshape(-1, itemsize).T.copy().reshape(-1)


def byte_ungroup(grouped: np.ndarray, itemsize: int) -> np.ndarray:
    if itemsize <= 1 or grouped.size % itemsize:
        return grouped
    return grouped.reshape(itemsize, -1).T.copy().reshape(-1)


def xor(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if a.size != b.size:
        raise IntegrityError(f"delta base has {b.size} bytes, chunk has {a.size}")
    if a.size % 8 == 0:
        return np.bitwise_xor(a.view(np.uint64), b.view(np.uint64)).view(np.uint8)
    return np.bitwise_xor(a, b)


def encode(raw: np.ndarray, itemsize: int, codec: str, level: int = 1,
           base: np.ndarray | None = None) -> bytes:
    """Encode the uint8 array ``raw``; with ``base``, store ``raw XOR base`` instead."""
    if codec not in _CODEC_IDS or codec == "q8":
        raise ConfigError("codec", codec, "unknown codec; choose one of raw, zstd, shuffle-zstd")
    flags = 0
    data = raw
    if base is not None:
        data, flags = xor(raw, base), FLAG_DELTA
    if codec == "raw":
        payload = data.tobytes()
    elif codec == "zstd":
        payload = _compressor(level).compress(data)
    else:
        payload = _compressor(level).compress(byte_group(data, itemsize))
    return _HEADER.pack(MAGIC, _CODEC_IDS[codec], flags, itemsize, 0, raw.size) + payload


def quantize8(raw: np.ndarray, sqrt_mode: bool, level: int = 1) -> bytes:
    """Lossy: float32 bytes → per-block scale + 8-bit codes (bounds in the module docstring)."""
    x = raw.view(np.float32)
    n = x.size
    pad = (-n) % Q_BLOCK
    blocks = np.pad(x, (0, pad)).reshape(-1, Q_BLOCK).astype(np.float32)
    if sqrt_mode:
        s = np.sqrt(np.maximum(blocks, 0))
        scale = s.max(axis=1, keepdims=True) / 255.0
        safe = np.where(scale > 0, scale, 1.0)
        codes = np.clip(np.ceil(s / safe), 0, 255).astype(np.uint8)
    else:
        scale = np.abs(blocks).max(axis=1, keepdims=True) / 127.0
        safe = np.where(scale > 0, scale, 1.0)
        codes = np.clip(np.rint(blocks / safe), -127, 127).astype(np.int8).view(np.uint8)
    payload = _compressor(level).compress(scale.astype(np.float32).tobytes() + codes.tobytes())
    flags = FLAG_SQRT if sqrt_mode else 0
    return _HEADER.pack(MAGIC, _CODEC_IDS["q8"], flags, 4, 0, raw.size) + payload


def _dequantize8(payload: bytes, raw_len: int, sqrt_mode: bool) -> np.ndarray:
    n = raw_len // 4
    nblocks = -(-n // Q_BLOCK)
    body = np.frombuffer(_decompressor().decompress(payload), dtype=np.uint8)
    scale = body[: nblocks * 4].view(np.float32).reshape(-1, 1)
    codes = body[nblocks * 4 :]
    if sqrt_mode:
        values = (codes.reshape(nblocks, Q_BLOCK).astype(np.float32) * scale) ** 2
    else:
        values = codes.view(np.int8).reshape(nblocks, Q_BLOCK).astype(np.float32) * scale
    return values.reshape(-1)[:n].astype(np.float32).view(np.uint8)


def blob_base_needed(blob: bytes) -> bool:
    return len(blob) >= _HEADER.size and bool(_HEADER.unpack_from(blob)[2] & FLAG_DELTA)


def decode(blob: bytes, base: np.ndarray | None = None) -> np.ndarray:
    """Decode a blob back to its raw uint8 bytes (``base`` = the decoded delta base chunk)."""
    if len(blob) < _HEADER.size:
        raise IntegrityError(f"blob of {len(blob)} bytes is shorter than its header")
    magic, codec_id, flags, itemsize, _, raw_len = _HEADER.unpack_from(blob)
    if magic != MAGIC or codec_id not in _CODEC_NAMES:
        raise IntegrityError("not a forgeline chunk (bad magic or codec id)")
    codec = _CODEC_NAMES[codec_id]
    payload = memoryview(blob)[_HEADER.size :]
    try:
        if codec == "q8":
            return _dequantize8(bytes(payload), raw_len, bool(flags & FLAG_SQRT))
        if codec == "raw":
            data = np.frombuffer(payload, dtype=np.uint8).copy()
        else:
            data = np.frombuffer(
                _decompressor().decompress(payload, max_output_size=raw_len), dtype=np.uint8
            )
            if codec == "shuffle-zstd":
                data = byte_ungroup(data, itemsize)
    except zstandard.ZstdError as exc:
        raise IntegrityError(f"cannot decompress ({exc})") from exc
    if data.size != raw_len:
        raise IntegrityError(f"decoded {data.size} bytes, header says {raw_len}")
    if flags & FLAG_DELTA:
        if base is None:
            raise IntegrityError("delta chunk decoded without its base")
        data = xor(data, base)
    return data
