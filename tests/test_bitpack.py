"""The label bitstream against an independent reference (bitarray), for every label width 0-16."""

from __future__ import annotations

import numpy as np
import pytest
from bitarray import bitarray

from kmcodec.bitpack import label_bits, label_dtype, pack_labels, packed_size, unpack_labels
from kmcodec.errors import LabelError, PaddingError, TruncatedError


def reference_pack(labels: np.ndarray, bits: int) -> bytes:
    stream = bitarray(endian="big")
    for value in labels.tolist():
        stream.extend(format(value, f"0{bits}b") if bits else "")
    return stream.tobytes()


@pytest.mark.parametrize("k, bits", [(1, 0), (2, 1), (3, 2), (4, 2), (5, 3), (8, 3), (9, 4), (16, 4), (17, 5),
                                     (255, 8), (256, 8), (257, 9), (1000, 10), (4097, 13), (65535, 16), (65536, 16)])
def test_label_bits(k: int, bits: int) -> None:
    assert label_bits(k) == bits


@pytest.mark.parametrize("bits", range(0, 17))
@pytest.mark.parametrize("count", [1, 7, 8, 9, 15, 17, 1001])
def test_pack_matches_bitarray_and_round_trips(bits: int, count: int) -> None:
    rng = np.random.default_rng(bits * 1000 + count)
    labels = rng.integers(0, 1 << bits, count).astype(label_dtype(bits))
    packed = pack_labels(labels, bits)
    assert len(packed) == packed_size(count, bits) == (count * bits + 7) // 8
    assert packed == reference_pack(labels, bits)
    assert np.array_equal(unpack_labels(packed, count, bits, 1 << bits), labels)


@pytest.mark.parametrize("bits", [3, 6, 9, 13])
def test_chunked_path_matches_reference_across_chunk_boundaries(bits: int, monkeypatch) -> None:
    import kmcodec.bitpack as bitpack

    monkeypatch.setattr(bitpack, "CHUNK_LABELS", 64)
    rng = np.random.default_rng(bits)
    labels = rng.integers(0, 1 << bits, 1000).astype(label_dtype(bits))
    packed = bitpack.pack_labels(labels, bits)
    assert packed == reference_pack(labels, bits)
    assert np.array_equal(bitpack.unpack_labels(packed, labels.size, bits), labels)


def test_label_out_of_range_is_rejected() -> None:
    packed = reference_pack(np.array([0, 1, 2, 4, 1]), 3)  # 4 >= k = 5? no: k = 4 here
    with pytest.raises(LabelError, match="pixel 3 has label 4"):
        unpack_labels(packed, 5, 3, k=4)


def test_nonzero_padding_is_rejected() -> None:
    packed = bytearray(reference_pack(np.array([1, 2, 3]), 2))  # 6 bits + 2 padding bits
    packed[-1] |= 0x01
    with pytest.raises(PaddingError):
        unpack_labels(bytes(packed), 3, 2, k=4)


def test_short_stream_is_truncated() -> None:
    with pytest.raises(TruncatedError):
        unpack_labels(b"\x00", 9, 1, k=2)
