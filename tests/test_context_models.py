"""Models 4 and 5 of the context kernel (spec 5.3.1 and 5.4.1, the models of the bands of codings 4 and 5).

On real images, for both models: the pure-Python decoder written from the spec must
agree with the compiled kernel bit for bit, and the kernel must round-trip and reject
damaged streams. Model 4 must beat model 3 (model 5's gains: test_context_model5.py).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import kmcodec
from kmcodec import codings
from kmcodec.bitpack import label_bits, label_dtype

from conftest import damaged_stream, skimage_image
from context_reference import StreamError, decode_context

pytestmark = pytest.mark.skipif(codings._ctxcoder is None, reason="kmcodec._ctxcoder not built (python setup.py build_ext --inplace)")


def quantized_labels(pixels: np.ndarray, k: int) -> np.ndarray:
    """Labels of a real k-means quantization (palette order as the quantizer leaves it)."""
    return kmcodec.quantize(np.ascontiguousarray(pixels[..., :3]), k, seed=0).labels


def colour_labels(pixels: np.ndarray, k: int) -> np.ndarray:
    """Labels for any k, also k > 256 and k beyond the image's colour count: the 24-bit colour scaled to 0..k-1."""
    rgb = pixels[..., :3].astype(np.int64)
    key = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
    return ((key * k) >> 24).astype(label_dtype(label_bits(k)))


#: The band models: 4 (coding 4) and 5 (coding 5).
MODELS = (4, 5)


def encode(labels: np.ndarray, k: int, model: int) -> bytes:
    height, width = labels.shape
    return codings._ctxcoder.encode(labels, width, height, k, model=model)


def decode(payload: bytes, shape: tuple[int, int], k: int, dtype, model: int) -> np.ndarray:
    height, width = shape
    out = np.empty(shape, dtype=dtype)
    codings._ctxcoder.decode(payload, width, height, k, out, model=model)
    return out


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize(
    "k, box, source",
    [
        (2, (0, 0, 31, 23), "quantized"),
        (3, (40, 10, 45, 30), "quantized"),  # model 5: 4b = 8, the quad context is exact
        (16, (200, 300, 40, 37), "quantized"),  # model 5: 4b = 16, the largest exact quad
        (17, (120, 80, 44, 30), "quantized"),  # model 5: hashed quad, exact joint tree contexts
        (37, (120, 80, 50, 33), "quantized"),
        (64, (200, 300, 50, 33), "quantized"),  # model 5: b = 6, the largest exact joint contexts
        (100, (150, 250, 41, 30), "quantized"),  # model 5: b = 7, joint contexts reduced by one bit
        (256, (150, 250, 41, 30), "quantized"),
        (300, (200, 300, 26, 21), "colour"),  # b > 8: deep tree nodes
        (1000, (210, 310, 23, 19), "colour"),
        (65536, (100, 100, 17, 13), "colour"),  # model 5: b = 16, the 64-bit quad key
        (16, (5, 5, 1, 40), "quantized"),  # one column: no NE, no left neighbour
        (64, (5, 5, 70, 1), "quantized"),  # one row: N, NW, NE are all W
    ],
)
def test_reference_decoder_written_from_the_spec_agrees_with_the_kernel(china: np.ndarray, k, box, source, model) -> None:
    y, x, width, height = box
    crop = china[y : y + height, x : x + width]
    labels = quantized_labels(crop, k) if source == "quantized" else colour_labels(crop, k)
    k = max(k, int(labels.max()) + 1)
    payload = encode(labels, k, model)
    assert decode_context(payload, width, height, k, model=model) == labels.reshape(-1).tolist()
    assert np.array_equal(decode(payload, labels.shape, k, labels.dtype, model), labels)
    with pytest.raises(StreamError):
        decode_context(payload[:-1], width, height, k, model=model)
    with pytest.raises(StreamError):
        decode_context(payload + b"\x00", width, height, k, model=model)


@pytest.mark.parametrize("model, k", [(3, 5), (4, 5), (5, 5), (6, 5), (7, 5), (4, 300), (7, 300)])
def test_reference_agrees_at_every_narrow_width(model: int, k: int) -> None:
    """Widths 1 to 12, with runs of one label longer than 8 and a row repeating the one above: the kernel takes
    what the rows above give each pixel (four pattern bits, the run count above) from a pass over the row before it
    (the row's ends by a general path, its inner pixels, from width 9 up, by a vectorized one) and carries W, NW and
    N along the row; the reference reads every neighbour. They must agree at every width, both label widths."""
    rng = np.random.default_rng(model * 1000 + k)
    dtype = label_dtype(label_bits(k))
    for width in range(1, 13):
        height = 64
        labels = rng.integers(0, k, (height, width))
        labels[rng.random((height, width)) < 0.6] = 0
        labels[3] = labels[2]
        labels[10:, :] = k - 1  # rows of one label: the count above, 8 inside, falls to 1 at the row's end
        labels = labels.astype(dtype)
        payload = encode(labels, k, model)
        assert decode_context(payload, width, height, k, model=model) == labels.reshape(-1).tolist(), width
        assert np.array_equal(decode(payload, labels.shape, k, dtype, model), labels), width


@pytest.mark.parametrize("model, k", [(3, 65536), (4, 65536), (5, 65536), (7, 65536), (4, 256), (6, 256), (7, 256)])
def test_surprises_after_long_runs_and_streams_past_the_first_buffer_round_trip(model: int, k: int) -> None:
    """The encoder makes room in its output before each pixel for the most one pixel can shift out, instead of as
    each byte goes out (so that its loops call nothing): the widest label after hundreds of zeros (every tree bit
    a surprise to models that learnt to expect 0, past depth 8 with no clamp on their probability) and noise, whose
    stream outgrows the first 64 KiB buffer, must code (not raise MemoryError) and decode; the vector encoder
    (k <= 256) and the scalar one must write the same bytes. With tight_buffer every pixel starts with exactly the
    room the bound promises, so a pixel that shifts out more raises MemoryError."""
    rng = np.random.default_rng(model * 7 + k)
    dtype = label_dtype(label_bits(k))
    labels = np.zeros((400, 256), dtype=dtype)
    labels[:100:9, ::41] = k - 1
    labels[100:] = rng.integers(0, k, (300, 256))
    payload = encode(labels, k, model)
    assert len(payload) > 1 << 16
    assert np.array_equal(decode(payload, labels.shape, k, dtype, model), labels)
    assert codings._ctxcoder.encode(labels, 256, 400, k, model=model, vector=False) == payload
    assert codings._ctxcoder.encode(labels, 256, 400, k, model=model, tight_buffer=True) == payload
    assert codings._ctxcoder.encode(labels, 256, 400, k, model=model, vector=False, tight_buffer=True) == payload


@pytest.mark.parametrize("model, k", [(4, 16), (5, 64)])
def test_reference_agrees_on_a_gnome_background_crop_with_long_runs(model: int, k: int) -> None:
    """Wide flat areas exercise the run contexts (above = 8, run >= 15) and the APM's extreme buckets."""
    from conftest import gnome_background
    from PIL import Image

    with Image.open(gnome_background("adwaita-l.webp")) as image:
        crop = np.asarray(image.convert("RGB").crop((1000, 1000, 1120, 1030)))
    labels = quantized_labels(crop, k)
    payload = encode(labels, k, model)
    assert decode_context(payload, 120, 30, k, model=model) == labels.reshape(-1).tolist()


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("k", [2, 16, 64, 256, 3000])
def test_kernel_round_trips_full_photos(flower: np.ndarray, k: int, model: int) -> None:
    labels = colour_labels(flower, k) if k > 256 else quantized_labels(flower, k)
    payload = encode(labels, k, model)
    assert np.array_equal(decode(payload, labels.shape, k, labels.dtype, model), labels)


def test_model_4_is_smaller_than_model_3_on_quantized_photos(china: np.ndarray, flower: np.ndarray) -> None:
    """The point of model 4 (tools/model_eval.py measures it on the whole corpus: about 3 % fewer bytes)."""
    sizes = {3: 0, 4: 0}
    for pixels in (china, flower, skimage_image("coffee")):
        for k in (16, 64):
            labels = quantized_labels(pixels, k)
            height, width = labels.shape
            for model in (3, 4):
                sizes[model] += len(codings._ctxcoder.encode(labels, width, height, k, model=model))
    assert sizes[4] < 0.985 * sizes[3], sizes


def test_model_argument(china: np.ndarray) -> None:
    labels = quantized_labels(china[:40, :50], 16)
    height, width = labels.shape
    kernel = codings._ctxcoder
    assert kernel.encode(labels, width, height, 16) == kernel.encode(labels, width, height, 16, 3)
    assert kernel.encode(labels, width, height, 16, model=4) == kernel.encode(labels, width, height, 16, 4)
    assert kernel.encode(labels, width, height, 16, model=4) != kernel.encode(labels, width, height, 16)
    for bad in (0, 2, 8):
        with pytest.raises(ValueError, match="model"):
            kernel.encode(labels, width, height, 16, model=bad)
        with pytest.raises(ValueError, match="model"):
            kernel.decode(b"\0\0\0\0", width, height, 16, np.empty_like(labels), model=bad)
        with pytest.raises(ValueError, match="model"):
            kernel.row_costs(labels, width, height, 16, np.empty(height, dtype=np.uint64), bad)
    wide = labels.astype(np.uint16)  # model 6 codes labels of at most 8 bits (spec 5.6.1)
    with pytest.raises(ValueError, match="model 6 codes labels of at most 8 bits"):
        kernel.encode(wide, width, height, 257, model=6)
    with pytest.raises(ValueError, match="model 6 codes labels of at most 8 bits"):
        kernel.decode(b"\0\0\0\0", width, height, 257, np.empty_like(wide), model=6)
    assert kernel.encode(np.zeros((1, 1), np.uint8), 1, 1, 1, model=4) == b""  # k = 1: nothing to code


@pytest.fixture(scope="module", params=MODELS)
def model_sample(request, china: np.ndarray) -> tuple[int, np.ndarray, bytes]:
    labels = quantized_labels(china[50:90, 60:120], 64)
    return request.param, labels, encode(labels, 64, request.param)


@settings(max_examples=100, deadline=2000, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_damaged_streams_decode_to_valid_labels_or_raise(model_sample, data) -> None:
    model, labels, payload = model_sample
    try:
        out = decode(damaged_stream(data, payload), labels.shape, 64, labels.dtype, model)
    except ValueError:
        return
    assert int(out.max()) < 64
