"""Model 5 of the context kernel (spec 5.4.1, the model of coding 5's bands) on real images.

The pure-Python decoder written from the spec must agree with the compiled kernel bit
for bit (for exact and hashed quad contexts, and for exact and reduced joint tree
contexts); the kernel must round-trip, reject damaged streams, and beat model 4 where
auto uses it (k <= 64).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kmcodec import api, codings
from kmcodec.container import Header

from banded_reference import decode_banded
from conftest import gnome_background, skimage_image
from context_reference import StreamError, decode_context
from test_context_model4 import colour_labels, quantized_labels

pytestmark = pytest.mark.skipif(codings._ctxcoder is None, reason="kmcodec._ctxcoder not built (python setup.py build_ext --inplace)")


def encode5(labels: np.ndarray, k: int) -> bytes:
    height, width = labels.shape
    return codings._ctxcoder.encode(labels, width, height, k, model=5)


def decode5(payload: bytes, shape: tuple[int, int], k: int, dtype) -> np.ndarray:
    height, width = shape
    out = np.empty(shape, dtype=dtype)
    codings._ctxcoder.decode(payload, width, height, k, out, model=5)
    return out


@pytest.mark.parametrize(
    "k, box, source",
    [
        (2, (0, 0, 31, 23), "quantized"),
        (3, (40, 10, 45, 30), "quantized"),  # 4b = 8: the quad context is exact
        (16, (200, 300, 40, 37), "quantized"),  # 4b = 16: exact, the largest exact quad
        (17, (120, 80, 44, 30), "quantized"),  # 4b = 20: hashed quad; joint contexts still exact
        (64, (200, 300, 50, 33), "quantized"),  # b = 6: the largest exact joint contexts
        (100, (150, 250, 41, 30), "quantized"),  # b = 7: joint contexts reduced by one bit
        (256, (150, 250, 41, 30), "quantized"),
        (300, (200, 300, 26, 21), "colour"),  # b > 8: deep tree nodes
        (65536, (100, 100, 17, 13), "colour"),  # b = 16: the 64-bit quad key
        (16, (5, 5, 1, 40), "quantized"),  # one column: no NE, no left neighbour
        (64, (5, 5, 70, 1), "quantized"),  # one row: N, NW, NE are all W
    ],
)
def test_reference_decoder_written_from_the_spec_agrees_with_the_kernel(china: np.ndarray, k, box, source) -> None:
    y, x, width, height = box
    crop = china[y : y + height, x : x + width]
    labels = quantized_labels(crop, k) if source == "quantized" else colour_labels(crop, k)
    k = max(k, int(labels.max()) + 1)
    payload = encode5(labels, k)
    assert decode_context(payload, width, height, k, model=5) == labels.reshape(-1).tolist()
    assert np.array_equal(decode5(payload, labels.shape, k, labels.dtype), labels)
    with pytest.raises(StreamError):
        decode_context(payload[:-1], width, height, k, model=5)
    with pytest.raises(StreamError):
        decode_context(payload + b"\x00", width, height, k, model=5)


def test_reference_agrees_on_a_gnome_background_crop_with_long_runs() -> None:
    from PIL import Image

    with Image.open(gnome_background("adwaita-l.webp")) as image:
        crop = np.asarray(image.convert("RGB").crop((1000, 1000, 1120, 1030)))
    labels = quantized_labels(crop, 64)
    payload = encode5(labels, 64)
    assert decode_context(payload, 120, 30, 64, model=5) == labels.reshape(-1).tolist()


def test_banded_reference_decodes_a_multi_band_coding_5_payload(flower: np.ndarray) -> None:
    labels = quantized_labels(flower[100:160, 200:260], 16)
    height, width = labels.shape
    header = Header(width=width, height=height, channels=3, k=16, coding=codings.CONTEXT2.id, payload_length=0)
    flat = labels.reshape(-1)
    from kmcodec import banded

    payload = banded.encode_bands(flat, width, height, lambda band, rows: codings._ctxcoder.encode(band, width, rows, 16, 5),
                                  bands=3, workers=2)
    assert decode_banded(payload, width, height, 16, model=5) == flat.tolist()
    assert np.array_equal(codings.CONTEXT2.decode(payload, header), flat)
    try:  # the model is part of the coding: model 4 cannot read a coding-5 stream
        assert decode_banded(payload, width, height, 16, model=4) != flat.tolist()
    except StreamError:
        pass


@pytest.mark.parametrize("k", [2, 16, 64, 256, 3000])
def test_kernel_round_trips_full_photos(flower: np.ndarray, k: int) -> None:
    labels = colour_labels(flower, k) if k > 256 else quantized_labels(flower, k)
    payload = encode5(labels, k)
    assert np.array_equal(decode5(payload, labels.shape, k, labels.dtype), labels)


def sizes_by_model(labels: np.ndarray, k: int) -> dict[int, int]:
    height, width = labels.shape
    return {model: len(codings._ctxcoder.encode(labels, width, height, k, model=model)) for model in (4, 5)}


def test_model_5_is_smaller_than_model_4_on_quantized_photos_at_k_16(china: np.ndarray, flower: np.ndarray) -> None:
    """The point of model 5 (tools/bench_size.py measures it on the whole corpus): 1.4-2.4 % here."""
    for pixels in (china, flower, skimage_image("coffee")):
        sizes = sizes_by_model(quantized_labels(pixels, 16), 16)
        assert sizes[5] < 0.99 * sizes[4], sizes


def test_model_5_is_smaller_than_model_4_at_k_64_on_a_megapixel_photo() -> None:
    """At k = 64 the joint tree contexts (4096 label pairs) need about a megapixel to learn: on 0.3 MP photos
    model 5 is up to 1.5 % larger (auto codes both there), on a 1 MP wood photo 2.8 % smaller."""
    from PIL import Image

    with Image.open(gnome_background("wood-l.webp")) as image:
        pixels = np.asarray(image.convert("RGB").reduce(4))
    sizes = sizes_by_model(quantized_labels(pixels, 64), 64)
    assert sizes[5] < 0.985 * sizes[4], sizes


def test_auto_codes_big_images_with_one_context_coding_chosen_by_label_width(flower: np.ndarray) -> None:
    big = np.tile(flower, (2, 2, 1))  # 1.1 MP: over AUTO_BOTH_CONTEXTS_MAX_LABELS, so auto codes one context coding
    for k, expected in ((16, codings.CONTEXT2), (256, codings.CONTEXT)):
        image = api.quantize(big, k, seed=0)
        assert image.labels.size > codings.AUTO_BOTH_CONTEXTS_MAX_LABELS
        data = api.encode(image)
        assert data[10] == expected.id
        assert api.decode(data) == image


@pytest.fixture(scope="module")
def model5_sample(china: np.ndarray) -> tuple[np.ndarray, bytes]:
    labels = quantized_labels(china[50:90, 60:120], 64)
    return labels, encode5(labels, 64)


@settings(max_examples=100, deadline=2000, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_damaged_model_5_streams_decode_to_valid_labels_or_raise(model5_sample, data) -> None:
    labels, payload = model5_sample
    damaged = bytearray(payload)
    for _ in range(data.draw(st.integers(1, 4))):
        position = data.draw(st.integers(0, len(damaged) - 1))
        damaged[position] ^= 1 << data.draw(st.integers(0, 7))
    damaged = bytes(damaged[: data.draw(st.integers(0, len(damaged)))])
    try:
        out = decode5(damaged, labels.shape, 64, labels.dtype)
    except ValueError:
        return
    assert int(out.max()) < 64
