"""The raw decoder's fast paths (C unpack, pack and palette expansion) against the numpy reference paths."""

from __future__ import annotations

import numpy as np
import pytest

import kmcodec
import kmcodec.bitpack as bitpack
from kmcodec import fastpath
from kmcodec.bitpack import label_dtype


@pytest.mark.parametrize("bits", [1, 2, 3, 5, 6, 7, 9, 12, 15])
def test_pack_and_unpack_match_numpy(bits: int, monkeypatch) -> None:
    rng = np.random.default_rng(bits)
    labels = rng.integers(0, 1 << bits, 100_003).astype(label_dtype(bits))
    fast_packed = bitpack.pack_labels(labels, bits)
    fast_labels = bitpack.unpack_labels(fast_packed, labels.size, bits, 1 << bits)
    monkeypatch.setattr(fastpath, "_c", None)
    assert bitpack.pack_labels(labels, bits) == fast_packed
    assert np.array_equal(bitpack.unpack_labels(fast_packed, labels.size, bits, 1 << bits), fast_labels)
    assert np.array_equal(fast_labels, labels)


def test_unpack_reports_the_first_bad_label() -> None:
    labels = np.array([1, 2, 6, 0, 7, 1], dtype=np.uint8)
    packed = bitpack.pack_labels(labels, 3)
    with pytest.raises(kmcodec.LabelError, match="pixel 2 has label 6"):
        bitpack.unpack_labels(packed, labels.size, 3, k=6)


@pytest.mark.parametrize("k, channels", [(5, 3), (256, 3), (40, 4), (3000, 3), (3000, 4)])
def test_expand_matches_take(k: int, channels: int, china: np.ndarray) -> None:
    rng = np.random.default_rng(k)
    palette = rng.integers(0, 256, (k, channels)).astype(np.uint8)
    labels = rng.integers(0, k, china.shape[:2]).astype(label_dtype((k - 1).bit_length()))
    reference = np.take(palette, labels, axis=0)
    assert np.array_equal(fastpath.expand(palette, labels, use_c=False), reference)
    if fastpath.have_c_extension():
        assert np.array_equal(fastpath.expand(palette, labels, use_c=True), reference)


def test_decoded_photo_equals_its_labels_through_the_palette(china: np.ndarray) -> None:
    image = kmcodec.quantize(china, 64, speed=8)
    decoded = kmcodec.decode(kmcodec.encode(image))
    assert np.array_equal(decoded.to_array(), image.palette[image.labels])
