import numpy as np
import pytest

from forgeline.checkpoint import codecs


def test_byte_group_puts_byte_k_of_every_item_together():
    raw = np.array([1, 2, 3, 4, 5, 6, 7, 8], dtype=np.uint8)  # two 4-byte items
    assert codecs.byte_group(raw, 4).tolist() == [1, 5, 2, 6, 3, 7, 4, 8]
    assert codecs.byte_ungroup(codecs.byte_group(raw, 4), 4).tolist() == raw.tolist()


@pytest.mark.parametrize("itemsize", [1, 2, 4, 8])
def test_byte_group_inverts_and_leaves_ragged_sizes_alone(itemsize):
    rng = np.random.default_rng(itemsize)
    raw = rng.integers(0, 256, 64 * 1024, dtype=np.uint8)
    assert np.array_equal(codecs.byte_ungroup(codecs.byte_group(raw, itemsize), itemsize), raw)
    ragged = raw[: itemsize * 10 + 1] if itemsize > 1 else raw[:11]
    assert np.array_equal(codecs.byte_group(ragged, itemsize), ragged)


@pytest.mark.parametrize("codec", ["raw", "zstd", "shuffle-zstd"])
def test_decode_inverts_encode_with_and_without_a_delta_base(codec):
    rng = np.random.default_rng(0)
    base = rng.standard_normal(4096).astype(np.float32).view(np.uint8)
    raw = (base.view(np.float32) + 1e-3).astype(np.float32).view(np.uint8)
    assert np.array_equal(codecs.decode(bytes(codecs.encode(raw, 4, codec))), raw)
    assert np.array_equal(codecs.decode(bytes(codecs.encode(raw, 4, codec, base=base)), base), raw)


@pytest.mark.parametrize("codec", ["zstd", "shuffle-zstd"])
def test_transcode_compresses_a_raw_chunk_delta_or_not_to_the_same_bytes(codec):
    rng = np.random.default_rng(1)
    base = rng.standard_normal(4096).astype(np.float32).view(np.uint8)
    raw = (base.view(np.float32) * 1.001).astype(np.float32).view(np.uint8)
    for blob, delta_base in ((codecs.encode(raw, 4, "raw"), None),
                             (codecs.encode(raw, 4, "raw", base=base), base)):
        coded = codecs.transcode(bytes(blob), codec)
        assert codecs.blob_codec(coded) == codec and len(coded) < len(blob)
        assert np.array_equal(codecs.decode(coded, delta_base), raw)


def test_transcode_leaves_encoded_chunks_alone():
    raw = np.arange(1024, dtype=np.float32).view(np.uint8)
    blob = bytes(codecs.encode(raw, 4, "zstd"))
    assert codecs.transcode(blob, "shuffle-zstd") is blob
