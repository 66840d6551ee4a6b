"""Encoder and decoder end to end on real images: round trips, the exact size formula, determinism, k."""

from __future__ import annotations

import inspect
import io
import math
from pathlib import Path

import numpy as np
import pytest

import kmcodec
from kmcodec import KMQImage

from conftest import skimage_image, sklearn_image

#: (image, k) pairs quantized once per session: real photos and graphics, several k (powers of two and not).
REAL_CASES = [("china.jpg", 16), ("flower.jpg", 5), ("chelsea", 9), ("logo", 7)]


def real_image(name: str) -> np.ndarray:
    return sklearn_image(name) if name.endswith(".jpg") else skimage_image(name)


@pytest.fixture(scope="session")
def quantized() -> dict[tuple[str, int], tuple[np.ndarray, KMQImage]]:
    """Each REAL_CASES image and its quantization (k-means is the slow part: do it once)."""
    return {(name, k): (real_image(name), kmcodec.quantize(real_image(name), k, seed=0)) for name, k in REAL_CASES}


def expected_size(k: int, channels: int, width: int, height: int) -> int:
    """Spec section 2: a raw file is 40 + k*channels + ceil(w*h*b/8) bytes, with b = ceil(log2 k)."""
    bits = math.ceil(math.log2(k)) if k > 1 else 0
    return 40 + k * channels + math.ceil(width * height * bits / 8)


def distinct_colours(pixels: np.ndarray) -> np.ndarray:
    """The distinct RGB colours of an image, in a fixed order (fast: on packed 24-bit keys)."""
    flat = pixels.reshape(-1, 3).astype(np.uint32)
    keys = np.unique((flat[:, 0] << 16) | (flat[:, 1] << 8) | flat[:, 2])
    return np.stack([(keys >> 16) & 255, (keys >> 8) & 255, keys & 255], axis=1).astype(np.uint8)


@pytest.fixture(scope="session")
def china_colours(china: np.ndarray) -> np.ndarray:
    return distinct_colours(china)


def image_with_colours(colours: np.ndarray, channels: int) -> np.ndarray:
    """A 2-D image holding exactly these colours (with alpha varying per colour when channels == 4), scrambled."""
    m = colours.shape[0]
    width = 257
    height = max(1, -(-m // width)) + 1
    index = (np.arange(width * height) * 7919) % m  # 7919 is prime and > m only for small m: every colour appears
    index[:m] = np.arange(m)
    pixels = colours[index]
    if channels == 4:
        alpha = ((np.arange(m) * 37) % 256).astype(np.uint8)
        alpha[0] = 0
        pixels = np.concatenate([pixels, alpha[index][:, None]], axis=1)
    return pixels.reshape(height, width, channels)


@pytest.mark.parametrize("channels", [3, 4])
@pytest.mark.parametrize("bits", range(17))
def test_round_trip_for_every_label_width(bits: int, channels: int, china_colours: np.ndarray) -> None:
    """An image with 2**(b-1)+1 of china.jpg's colours, asked for k = 2**b: k is the distinct count, b bits
    per label, the file size is the formula, and decoding gives back every pixel exactly."""
    distinct = 1 if bits == 0 else 2 ** (bits - 1) + 1
    pixels = image_with_colours(china_colours[:: china_colours.shape[0] // distinct][:distinct], channels)
    image = kmcodec.quantize(pixels, 2**bits)
    assert (image.k, image.label_bits, image.channels) == (distinct, bits, channels)
    data = kmcodec.encode(image, coding="raw")
    assert len(data) == expected_size(distinct, channels, image.width, image.height)
    decoded = kmcodec.decode(data)
    assert decoded == image
    assert np.array_equal(decoded.to_array(), pixels)


@pytest.mark.parametrize("channels", [3, 4])
@pytest.mark.parametrize("k", [1, 2, 3, 255, 256, 257, 65536])
def test_round_trip_of_given_palette_and_labels(k: int, channels: int, china: np.ndarray) -> None:
    """A KMQImage made from real colours and labels (no quantizer involved) survives encode/decode unchanged."""
    palette = china.reshape(-1, 3)[(np.arange(k) * 4099) % (china.shape[0] * china.shape[1])]
    if channels == 4:
        palette = np.concatenate([palette, (np.arange(k) % 256).astype(np.uint8)[:, None]], axis=1)
    labels = (china[:37, :41, 0].astype(np.int64) * 257 + china[:37, :41, 1]) % k
    image = KMQImage(palette, labels)
    data = kmcodec.encode(image, coding="raw")
    assert len(data) == expected_size(k, channels, 41, 37)
    assert kmcodec.decode(data) == image
    buffer = io.BytesIO()
    assert kmcodec.write(buffer, image, coding="raw") == len(data)
    assert kmcodec.read(io.BytesIO(buffer.getvalue())) == image


@pytest.mark.parametrize("name, k", REAL_CASES)
def test_encoded_size_is_exactly_the_formula_on_real_images(name: str, k: int, quantized) -> None:
    pixels, image = quantized[(name, k)]
    assert image.k == k  # these photos have far more than k colours
    assert image.channels == (4 if pixels.shape[2] == 4 and (pixels[:, :, 3] < 255).any() else 3)
    data = kmcodec.encode(image, coding="raw")
    assert len(data) == expected_size(k, image.channels, pixels.shape[1], pixels.shape[0])
    header = kmcodec.read_header(data)
    assert (header.width, header.height, header.k, header.label_bits) == (pixels.shape[1], pixels.shape[0], k, image.label_bits)


@pytest.mark.parametrize("name, k", REAL_CASES)
def test_decode_of_encode_is_the_quantized_image(name: str, k: int, quantized) -> None:
    pixels, image = quantized[(name, k)]
    decoded = kmcodec.decode(kmcodec.encode(image))
    assert decoded == image
    expected = image.palette[image.labels.astype(np.int64)]
    assert np.array_equal(decoded.to_array(), expected)
    # the quantizer labels each pixel with its nearest palette entry (ties: the first)
    flat = pixels[:, :, : image.channels].reshape(-1, image.channels).astype(np.int64)
    sample = np.arange(0, flat.shape[0], 997)
    distances = ((flat[sample, None, :] - image.palette[None, :, :].astype(np.int64)) ** 2).sum(axis=2)
    chosen = distances[np.arange(sample.size), image.labels.reshape(-1)[sample]]
    assert np.array_equal(chosen, distances.min(axis=1))


def test_palette_entries_are_distinct_and_all_used(quantized) -> None:
    for (name, k), (_, image) in quantized.items():
        assert np.unique(image.palette, axis=0).shape[0] == image.k, name
        assert np.bincount(image.labels.reshape(-1), minlength=image.k).min() > 0, name


def test_same_input_and_seed_give_identical_bytes(quantized) -> None:
    pixels, first = quantized[("flower.jpg", 5)]
    assert kmcodec.encode(pixels, 5, seed=0) == kmcodec.encode(first)


def test_encode_from_a_path_and_from_bytes_agree(tmp_path: Path) -> None:
    source = tmp_path / "coffee.png"
    from PIL import Image

    Image.fromarray(skimage_image("coffee")[::4, ::4]).save(source)
    from_path = kmcodec.encode(source, 4, seed=3)
    with source.open("rb") as handle:
        assert kmcodec.encode(handle, 4, seed=3) == from_path


def test_fewer_distinct_colours_than_k_stores_exactly_those_colours(china_colours: np.ndarray) -> None:
    colours = china_colours[::9000][:10]
    pixels = image_with_colours(colours, 3)
    image = kmcodec.quantize(pixels, 64)
    assert image.k == 10
    assert {tuple(c) for c in image.palette.tolist()} == {tuple(c) for c in colours.tolist()}
    assert np.array_equal(image.to_array(), pixels)
    assert len(kmcodec.encode(image, coding="raw")) == expected_size(10, 3, pixels.shape[1], pixels.shape[0])


def test_a_one_colour_image_takes_zero_bits_per_pixel() -> None:
    pixels = np.zeros((300, 200, 3), dtype=np.uint8) + np.array([12, 200, 99], dtype=np.uint8)
    data = kmcodec.encode(pixels, 16)
    assert len(data) == 40 + 3  # header + one palette entry + trailer, no payload
    assert np.array_equal(kmcodec.decode(data).to_array(), pixels)


def test_image_is_immutable(quantized) -> None:
    _, image = quantized[("chelsea", 9)]
    with pytest.raises(ValueError):
        image.labels[0, 0] = 1
    with pytest.raises(ValueError):
        image.palette[0, 0] = 1
    with pytest.raises(AttributeError):
        image.palette = image.palette  # type: ignore[misc]


@pytest.mark.parametrize("coding", ["raw", "deflate", "lzma", "context"])
def test_decoded_image_is_immutable_too(quantized, coding: str) -> None:
    # decode wraps the labels it has just checked without copying them; they must still be read-only
    _, image = quantized[("chelsea", 9)]
    decoded = kmcodec.decode(kmcodec.encode(image, coding=coding))
    assert decoded == image
    for array in (decoded.labels, decoded.palette):
        with pytest.raises(ValueError):
            array.flat[0] = 1


def test_decode_wraps_its_arrays_without_the_constructors_checks(quantized, monkeypatch) -> None:
    """KMQImage._adopt, decode's fast path, must not run the palette and label scans the constructor runs."""
    import kmcodec.image

    _, image = quantized[("chelsea", 9)]
    data = kmcodec.encode(image)

    def scan(palette):
        raise AssertionError("decode validated the palette again")

    monkeypatch.setattr(kmcodec.image, "_palette_values", scan)
    assert kmcodec.decode(data) == image
    with pytest.raises(AssertionError, match="validated"):
        KMQImage(image.palette, image.labels)


@pytest.mark.parametrize("palette, message", [
    (np.array([[300, -1, 0], [0, 0, 0]]), "0..255, got -1 to 300"),
    (np.array([[0, 0, 0], [0, 0, 256]], dtype=np.uint16), "0..255, got 0 to 256"),
    (np.array([[0, 0, 0], [0, 0, -1]], dtype=np.int8), "0..255, got -1 to 0"),
    (np.array([[0.6, 255.9, 0], [0, 0, 0]]), "whole numbers"),
    (np.array([[np.nan, 0, 0], [0, 0, 0]]), "whole numbers"),
    (np.array([[256.0, 0, 0], [0, 0, 0]], dtype=np.float32), "0..255"),
    (np.array([[np.inf, 0, 0], [0, 0, 0]]), "0..255"),
    (np.ones((2, 3), dtype=bool), "integers 0..255, got bool"),
    (np.array([["1", "2", "3"], ["4", "5", "6"]]), "integers 0..255"),
    (np.array([[1, 2, 3], [4, 5, 6]], dtype=object), "integers 0..255, got object"),
])
def test_palette_values_outside_0_to_255_are_refused_not_wrapped(palette: np.ndarray, message: str) -> None:
    """A cast would turn 300 into 44, -1 into 255 and 255.9 into 255: the palette is checked as labels are."""
    with pytest.raises(ValueError, match=message):
        KMQImage(palette, np.array([[0, 1]], dtype=np.uint8))


@pytest.mark.parametrize("dtype", [np.int64, np.int16, np.uint16, np.float64, np.float32])
def test_palette_of_any_numeric_dtype_in_range_is_kept_exactly(dtype, china: np.ndarray) -> None:
    colours = np.concatenate([china[:2, :40].reshape(-1, 3), [[0, 0, 0], [255, 255, 255]]]).astype(np.uint8)
    labels = (np.arange(12 * 7).reshape(12, 7) * 5) % colours.shape[0]
    image = KMQImage(colours.astype(dtype), labels)
    assert image.palette.dtype == np.uint8 and image == KMQImage(colours, labels)
    assert np.array_equal(image.palette, colours)


ENCODE_PARAMETERS = inspect.signature(kmcodec.encode).parameters
QUANTIZER_OPTIONS = ["seed", "engine", "space", "speed", "dither", "rdo", "max_pixels"]


@pytest.mark.parametrize("option, value", [("k", 4), ("seed", 1), ("engine", "sklearn"), ("space", "oklab"),
                                           ("speed", 9), ("dither", 1.0), ("rdo", 0.5), ("max_pixels", 10**6)])
def test_a_kmq_image_with_k_or_a_quantizer_option_is_refused(option: str, value, quantized, tmp_path: Path) -> None:
    """The options would be silently ignored: the image is already quantized."""
    _, image = quantized[("flower.jpg", 5)]
    with pytest.raises(TypeError, match=rf"encode\(\) got a KMQImage, which is already quantized, with {option}="):
        kmcodec.encode(image, **{option: value})
    with pytest.raises(TypeError, match=r"write\(\) got a KMQImage.*call quantize\(\)"):
        kmcodec.write(tmp_path / "x.kmq", image, **{option: value})
    assert list(tmp_path.iterdir()) == []


def test_a_kmq_image_with_every_option_at_its_default_encodes_as_it_is(quantized) -> None:
    """The refusal compares with the signatures' own defaults: passing them explicitly changes nothing."""
    _, image = quantized[("flower.jpg", 5)]
    defaults = {name: ENCODE_PARAMETERS[name].default for name in QUANTIZER_OPTIONS}
    assert set(ENCODE_PARAMETERS) - {"image", "k", "coding"} == set(QUANTIZER_OPTIONS)  # a new one: check it too
    write_parameters = inspect.signature(kmcodec.write).parameters
    assert {name: write_parameters[name].default for name in QUANTIZER_OPTIONS} == defaults
    data = kmcodec.encode(image, coding="raw")
    assert kmcodec.encode(image, coding="raw", **defaults) == data
    buffer = io.BytesIO()
    assert kmcodec.write(buffer, image, coding="raw", **defaults) == len(data) and buffer.getvalue() == data
    assert kmcodec.decode(data) == image
