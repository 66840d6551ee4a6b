"""How samples deeper than 8 bits become 8-bit: one fixed rule per Pillow mode or array dtype, never chosen by
the pixel values, so the same value maps to the same 8-bit value whatever else the image holds (kmcodec/imageio.py).

Each rule is checked on a probe row alone and inside images whose other pixels would have changed the old,
content-dependent choice of scale; the QA reproductions are checked end to end through kmcodec.quantize.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import kmcodec
from kmcodec.errors import InputImageError, KMQError
from kmcodec.imageio import load_pixels

from conftest import skimage_image

LOSSLESS_K = 65536


def grey(source) -> list[int]:
    """The 8-bit grey levels load_pixels gives a one-row greyscale input (checking R = G = B)."""
    pixels = load_pixels(source)
    assert pixels.shape[2] == 3
    assert np.array_equal(pixels[:, :, 0], pixels[:, :, 1]) and np.array_equal(pixels[:, :, 0], pixels[:, :, 2])
    return pixels[0, :, 0].tolist()


def encoded_grey(source) -> list[int]:
    """The grey levels of the first row after quantize -> encode -> decode with k above the colour count."""
    image = kmcodec.decode(kmcodec.encode(kmcodec.quantize(source, LOSSLESS_K)))
    return image.to_array()[0, :, 0].tolist()


def assert_content_independent(make, probe: list, others: list[list], expected: list[int]) -> None:
    """make(values) builds a one-row image; the probe's pixels must map to `expected` alone and followed by
    each list of other values."""
    assert grey(make(probe)) == expected
    for extra in others:
        assert grey(make(probe + extra))[: len(probe)] == expected, extra


# --- Pillow modes -----------------------------------------------------------------------------------------------


def test_qa_repro_mode_i_does_not_change_scale_when_one_pixel_exceeds_255() -> None:
    def mode_i(values):
        return Image.fromarray(np.array([values], np.int32), "I")

    assert mode_i([0]).mode == "I"
    # before: [0, 128, 255] alone came out as [0, 128, 255], and as [0, 0, 0] once a pixel of 256 was added
    assert encoded_grey(mode_i([0, 128, 255])) == [0, 0, 0]
    assert encoded_grey(mode_i([0, 128, 255, 256])) == [0, 0, 0, 1]


def test_mode_i_is_16_bit_samples_clipped_then_shifted() -> None:
    def mode_i(values):
        return Image.fromarray(np.array([values], np.int32), "I")

    probe = [0, 1, 128, 255, 256, 511, 512, 32768, 65280, 65535, 70000, -5, 2**31 - 1, -(2**31)]
    expected = [0, 0, 0, 0, 1, 1, 2, 128, 255, 255, 255, 0, 255, 0]
    assert_content_independent(mode_i, probe, [[0], [255], [65535], [2**31 - 1], [-1]], expected)
    # an image whose every value is <= 255 is not taken as 8-bit
    assert_content_independent(mode_i, [0, 1, 128, 255, -5], [[256], [65535], [70000]], [0, 0, 0, 0, 0])


@pytest.mark.parametrize("byte_order", ["<", ">"])
def test_mode_i16_keeps_the_high_byte(byte_order: str) -> None:
    def mode_i16(values):
        samples = np.array([values], f"{byte_order}u2")
        return Image.frombytes("I;16" if byte_order == "<" else "I;16B", (len(values), 1), samples.tobytes())

    assert mode_i16([0]).mode == ("I;16" if byte_order == "<" else "I;16B")
    probe = [0, 1, 255, 256, 32767, 32768, 65535]
    assert_content_independent(mode_i16, probe, [[0], [255], [65535]], [0, 0, 0, 1, 127, 128, 255])


def test_mode_f_is_pillows_0_to_255_scale_rounded_and_clipped() -> None:
    def mode_f(values):
        return Image.fromarray(np.array([values], np.float32))

    assert mode_f([0.0]).mode == "F"
    probe = [0.0, 0.5, 1.0, 1.4, 1.6, 127.5, 254.5, 255.0, 300.0, -2.0, np.inf, -np.inf]
    expected = [0, 0, 1, 1, 2, 128, 254, 255, 255, 0, 255, 0]  # np.rint: halves go to the even neighbour
    assert_content_independent(mode_f, probe, [[0.25], [0.999], [1.0], [255.0], [1e9]], expected)


def test_mode_f_with_nan_is_refused() -> None:
    image = Image.fromarray(np.array([[0.0, np.nan, 100.0]], np.float32))
    with pytest.raises(InputImageError, match="mode F image has NaN pixels") as caught:
        kmcodec.quantize(image, 4)
    assert isinstance(caught.value, KMQError)
    assert "cannot convert" not in str(caught.value)  # the real reason, not a wrapped conversion error


def _camera16() -> np.ndarray:
    """A real 64x64 16-bit greyscale image: camera.png spread over the full 16-bit range with low-byte noise."""
    camera = skimage_image("camera")[100:164, 100:164].astype(np.uint16)
    low_bits = np.random.default_rng(7).integers(0, 256, camera.shape, dtype=np.uint16)
    return camera * 256 + low_bits


@pytest.mark.parametrize("scale", ["full range", "dark (every value <= 255)"])
def test_a_16_bit_pgm_encodes_like_the_same_uint16_array(scale: str, tmp_path: Path) -> None:
    """Pillow opens a 16-bit PGM as mode 'I' (int32): it must give the labels and palette of the uint16 array it
    was written from, also when every value is <= 255 (the old rule read such a file as 8-bit)."""
    samples = _camera16() if scale == "full range" else _camera16() >> 8
    path = tmp_path / "camera16.pgm"  # written by hand: Pillow < 10.2 cannot write 16-bit PGM, only read it
    height, width = samples.shape
    path.write_bytes(b"P5\n%d %d\n65535\n" % (width, height) + samples.astype(">u2").tobytes())
    with Image.open(path) as reopened:
        assert reopened.mode == "I"
        assert np.array_equal(np.asarray(reopened), samples)
    for k in (8, LOSSLESS_K):
        from_file = kmcodec.quantize(path, k, seed=3)
        from_array = kmcodec.quantize(samples, k, seed=3)
        assert np.array_equal(from_file.palette, from_array.palette)
        assert np.array_equal(from_file.labels, from_array.labels)
    assert np.array_equal(from_file.to_array()[:, :, 0], (samples >> 8).astype(np.uint8))


# --- numpy arrays -----------------------------------------------------------------------------------------------


def test_qa_repro_float_arrays_are_always_0_to_1() -> None:
    assert encoded_grey(np.array([[0.0, 0.5, 1.0]])) == [0, 128, 255]
    # before: [0, 0.5, 1.5] was taken as 0..255 and became [0, 0, 2]; now it is refused, nothing reinterpreted
    with pytest.raises(InputImageError, match=r"taken as 0\.\.1; this one has values from 0 to 1\.5: scale it"):
        kmcodec.quantize(np.array([[0.0, 0.5, 1.5]]), 4)


def exact_ubyte(values: np.ndarray) -> np.ndarray:
    """value * 255 in float64 (exact for a float16 value), rounded half to even."""
    return np.rint(values.astype(np.float64) * 255).astype(np.uint8)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_float_arrays_are_value_times_255_rounded_whatever_else_they_hold(dtype) -> None:
    """float32 and float64 give exactly skimage.img_as_ubyte's values (the product computed in the array's own
    dtype); float16 is computed in float32, where the product is exact (skimage rounds it to float16 first)."""
    from skimage.util import img_as_ubyte

    def array(values):
        return np.array([values], dtype)

    reference = exact_ubyte if dtype == np.float16 else img_as_ubyte
    edges = [0.0, 1.0, 0.5, 1 / 510, 3 / 510, 0.25, 0.75, 254.5 / 255, np.nextafter(dtype(1), dtype(0))]
    probe = [float(dtype(v)) for v in edges]
    expected = reference(array(probe))[0].tolist()
    assert expected[:3] == [0, 255, 128]
    if dtype == np.float16:
        assert expected[4] == 1 and img_as_ubyte(array(probe))[0, 4] == 2  # float16(3/510) * 255 = 1.49998
    assert_content_independent(array, probe, [[0.0], [1.0], [0.001], [0.999]], expected)
    values = np.random.default_rng(1).random((32, 48, 3)).astype(dtype)
    assert np.array_equal(load_pixels(values), reference(values))


def test_float_conversion_leaves_the_input_alone() -> None:
    values = np.linspace(0, 1, 60).reshape(4, 5, 3)
    before = values.copy()
    values.setflags(write=False)
    assert load_pixels(values).dtype == np.uint8
    assert np.array_equal(values, before)


@pytest.mark.parametrize(
    "values, found",
    [
        ([0.0, 0.5, 1.5], "values from 0 to 1.5: scale it to 0..1 or pass uint8"),
        ([-0.2, 0.5, 1.5], "values from -0.2 to 1.5: scale it to 0..1 or pass uint8"),
        ([-0.25, 0.5, 1.0], "values from -0.25 to 1: scale it"),
        ([0.0, 128.0, 255.0], "values from 0 to 255: scale it"),
        ([0.0, np.nan, 1.0], "NaN (other values from 0 to 1): replace the NaN or pass uint8"),
        ([np.nan, np.nan], "has NaN: replace the NaN or pass uint8"),
        ([0.0, np.inf, 0.5], "+inf (other values from 0 to 0.5): replace the +inf or pass uint8"),
        ([0.0, -np.inf], "-inf (other values from 0 to 0)"),
        ([np.nan, -np.inf, 2.0], "NaN and -inf (other values from 2 to 2): replace the NaN and -inf, scale it to "
                                 "0..1, or pass uint8"),
    ],
)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_float_arrays_outside_0_to_1_or_not_finite_are_refused(values, found: str, dtype) -> None:
    with pytest.raises(InputImageError) as caught:
        kmcodec.quantize(np.array([values], dtype), 4)
    assert isinstance(caught.value, KMQError)
    message = str(caught.value)
    assert message.startswith("float pixel arrays are taken as 0..1; this one has ")
    assert found in message, message


def test_a_nan_deep_in_a_big_float_image_is_refused() -> None:
    values = np.full((300, 400, 3), 0.5, np.float32)
    values[299, 399, 2] = np.nan
    with pytest.raises(InputImageError, match="NaN"):
        load_pixels(values)
    values[299, 399, 2] = 1.0000001
    with pytest.raises(InputImageError, match="to 1: scale it"):  # printed to 6 digits, refused all the same
        load_pixels(values)
    values[299, 399, 2] = 1.0
    assert load_pixels(values)[299, 399, 2] == 255


@pytest.mark.parametrize("byte_order", ["<", ">"])
def test_uint16_arrays_keep_the_high_byte(byte_order: str) -> None:
    def array(values):
        return np.array([values], f"{byte_order}u2")

    probe = [0, 1, 255, 256, 32768, 65535]
    assert_content_independent(array, probe, [[0], [255], [65535]], [0, 0, 0, 1, 128, 255])


@pytest.mark.parametrize("dtype", [np.int8, np.int16, np.int32, np.int64, np.uint32, np.uint64])
def test_other_integer_arrays_are_8_bit_values_clipped(dtype) -> None:
    info = np.iinfo(dtype)

    def array(values):
        return np.array([values], dtype)

    probe = [v for v in (0, 1, 100, 127, 128, 255, 256, 1000, 65535, -1, -128) if info.min <= v <= info.max]
    expected = [min(max(v, 0), 255) for v in probe]
    others = [[0], [min(255, int(info.max))], [int(info.max)], [int(info.min)]]
    assert_content_independent(array, probe, others, expected)


def test_unsupported_dtypes_are_refused() -> None:
    for values in (np.zeros((2, 2), bool), np.zeros((2, 2), complex), np.zeros((2, 2), object)):
        with pytest.raises(InputImageError, match="unsupported dtype"):
            load_pixels(values)


# --- array shapes -----------------------------------------------------------------------------------------------

SHAPES = "(H, W), (H, W, 1), (H, W, 2) grey+alpha, (H, W, 3) or (H, W, 4)"


@pytest.mark.parametrize("shape", [(4,), (2, 3, 5), (2, 3, 0), (2, 3, 3, 1)])
def test_the_shape_message_lists_every_accepted_shape(shape) -> None:
    with pytest.raises(InputImageError) as caught:
        kmcodec.quantize(np.zeros(shape, np.uint8), 4)
    assert str(caught.value) == f"pixel array must be {SHAPES}, got shape {shape}"


def test_every_shape_the_message_lists_is_accepted() -> None:
    rng = np.random.default_rng(5)
    grey_levels = rng.integers(0, 256, (6, 7), dtype=np.uint8)
    alpha = rng.integers(0, 256, (6, 7), dtype=np.uint8)
    rgb = np.repeat(grey_levels[:, :, None], 3, axis=2)
    rgba = np.concatenate([rgb, alpha[:, :, None]], axis=2)
    cases = [
        (grey_levels, rgb),
        (grey_levels[:, :, None], rgb),
        (np.stack([grey_levels, alpha], axis=2), rgba),
        (rgb, rgb),
        (rgba, rgba),
    ]
    for source, expected in cases:
        assert np.array_equal(kmcodec.quantize(source, LOSSLESS_K).to_array(), expected), source.shape
