"""The context kernel's vector encoder (AVX2 tree walks for models 4 and 5) writes the scalar encoder's bytes.

The vector encoder computes all depths of a label's tree walk at once and updates their
models afterwards; that is only allowed because the depths share no model, and only
correct if its 32-bit arithmetic is the scalar 64-bit arithmetic exactly. Both are
checked here by comparing whole streams, byte for byte, on real quantizations and on
random labels (non-power-of-two k leaves depths uncoded, which the vector code masks).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kmcodec import codings

from conftest import gnome_background, skimage_image
from test_context_models import quantized_labels

kernel = codings._ctxcoder
pytestmark = [
    pytest.mark.skipif(kernel is None, reason="kmcodec._ctxcoder not built (python setup.py build_ext --inplace)"),
    pytest.mark.skipif(kernel is not None and not kernel.VECTOR_ENCODER, reason="this CPU has no AVX2"),
]


def both_encodings(labels: np.ndarray, k: int, model: int) -> tuple[bytes, bytes]:
    height, width = labels.shape
    flat = np.ascontiguousarray(labels.reshape(-1))
    return (kernel.encode(flat, width, height, k, model, vector=False),
            kernel.encode(flat, width, height, k, model, vector=True))


@pytest.mark.parametrize("model", [4, 5])
@pytest.mark.parametrize("k", [2, 3, 16, 23, 64, 200, 256])
def test_vector_encoder_writes_the_scalar_bytes_on_quantized_photos(china: np.ndarray, k: int, model: int) -> None:
    scalar, vector = both_encodings(quantized_labels(china[::2, ::2], k), k, model)
    assert vector == scalar


@pytest.mark.parametrize("model", [4, 5])
def test_vector_encoder_writes_the_scalar_bytes_where_most_pixels_walk_the_tree(model: int) -> None:
    """coffee at k = 256 and a crop of the gnome 'pixels' background (81 % escapes at k = 256): long walks."""
    from PIL import Image

    with Image.open(gnome_background("pixels-l.webp")) as image:
        crop = np.asarray(image.convert("RGB").crop((1800, 1800, 2312, 2312)))
    for pixels in (skimage_image("coffee")[::2, ::2], crop):
        labels = quantized_labels(pixels, 256)
        scalar, vector = both_encodings(labels, 256, model)
        assert vector == scalar
        height, width = labels.shape
        decoded = np.empty(labels.size, dtype=np.uint8)
        kernel.decode(vector, width, height, 256, decoded, model)
        assert np.array_equal(decoded, labels.reshape(-1))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), k=st.integers(2, 256), width=st.integers(1, 40), height=st.integers(1, 12),
       model=st.sampled_from([4, 5]))
def test_vector_encoder_writes_the_scalar_bytes_on_random_labels(data, k: int, width: int, height: int, model: int) -> None:
    """Random labels, some images made of a few labels so that the questions and both tree paths all occur."""
    alphabet = data.draw(st.integers(1, k))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    choices = rng.choice(k, size=alphabet, replace=False)
    labels = rng.choice(choices, size=(height, width)).astype(np.uint8)
    scalar, vector = both_encodings(labels, k, model)
    assert vector == scalar


def test_vector_flag_leaves_model_3_and_two_byte_labels_to_the_scalar_encoder(china: np.ndarray) -> None:
    labels = quantized_labels(china[::4, ::4], 64)
    scalar, vector = both_encodings(labels, 64, 3)
    assert vector == scalar
    wide = labels.astype(np.uint16) * 7
    for model in (4, 5):
        scalar, vector = both_encodings(wide, 1000, model)
        assert vector == scalar
