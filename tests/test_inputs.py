"""Every input mode and file format the encoder accepts, and EXIF orientation, on crops of real photos.

The crops have fewer colours than the k asked for, so the quantizer must store exactly the input's colours:
the decoded pixels then equal Pillow's own conversion of the input, exactly.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

import kmcodec

from conftest import skimage_image

LOSSLESS_K = 65536


@pytest.fixture(scope="module")
def crop(china: np.ndarray) -> Image.Image:
    """A 64x48 RGB crop of china.jpg (at most 3072 colours)."""
    return Image.fromarray(china[200:248, 300:364])


def round_trip(source, *, k: int = LOSSLESS_K) -> np.ndarray:
    """quantize -> encode -> decode, returning the decoded pixels (and checking the file's size formula)."""
    image = kmcodec.quantize(source, k)
    data = kmcodec.encode(image, coding="raw")
    bits = (image.k - 1).bit_length()
    assert len(data) == 40 + image.k * image.channels + (image.width * image.height * bits + 7) // 8
    decoded = kmcodec.decode(data)
    assert decoded == image
    return decoded.to_array()


def with_alpha(rgb: Image.Image) -> Image.Image:
    """The image with a horizontal alpha ramp from 0 to 255."""
    alpha = np.tile(np.linspace(0, 255, rgb.width).astype(np.uint8), (rgb.height, 1))
    out = rgb.convert("RGBA")
    out.putalpha(Image.fromarray(alpha))
    return out


def test_rgb(crop: Image.Image) -> None:
    assert np.array_equal(round_trip(crop), np.asarray(crop))


def test_rgba_keeps_alpha_as_a_fourth_channel(crop: Image.Image) -> None:
    rgba = with_alpha(crop)
    pixels = round_trip(rgba)
    assert pixels.shape == (48, 64, 4)
    assert np.array_equal(pixels, np.asarray(rgba))


def test_fully_opaque_rgba_is_stored_as_rgb(crop: Image.Image) -> None:
    pixels = round_trip(crop.convert("RGBA"))
    assert pixels.shape == (48, 64, 3)
    assert np.array_equal(pixels, np.asarray(crop))


def test_an_opaque_rgba_array_is_read_in_place_as_rgb(china: np.ndarray) -> None:
    from kmcodec.imageio import load_pixels

    rgba = np.dstack([china, np.full(china.shape[:2], 255, dtype=np.uint8)])
    pixels = load_pixels(rgba)
    assert pixels.shape == china.shape and np.shares_memory(pixels, rgba)  # a view of 4-byte pixels, not a copy
    assert np.array_equal(pixels, china)
    assert kmcodec.encode(rgba, 16) == kmcodec.encode(china, 16)
    strided = load_pixels(china[:, ::2])  # any other layout is still packed
    assert strided.flags.c_contiguous and np.array_equal(strided, china[:, ::2])


def test_decoded_rgb_is_read_in_pillows_memory_when_pillow_shares_it(china: np.ndarray, tmp_path: Path) -> None:
    from kmcodec import fastpath
    from kmcodec.imageio import load_pixels

    path = tmp_path / "china.png"
    Image.fromarray(china).save(path)
    paletted = tmp_path / "paletted.png"
    Image.fromarray(china).quantize(64).save(paletted)
    for source in (path, paletted):
        pixels = load_pixels(source)
        with Image.open(source) as expected:
            assert np.array_equal(pixels, np.asarray(expected.convert("RGB")))
        if fastpath.have_c_extension() and hasattr(Image.Image, "__arrow_c_array__"):
            assert pixels.strides == (4 * china.shape[1], 4, 1)  # Pillow's RGBX rows, not a packed copy


def test_greyscale_l(crop: Image.Image) -> None:
    grey = crop.convert("L")
    pixels = round_trip(grey)
    assert pixels.shape == (48, 64, 3)
    assert np.array_equal(pixels, np.asarray(grey.convert("RGB")))
    assert np.array_equal(pixels[:, :, 0], np.asarray(grey))


def test_greyscale_with_alpha_la(crop: Image.Image) -> None:
    la = with_alpha(crop).convert("LA")
    pixels = round_trip(la)
    assert np.array_equal(pixels, np.asarray(la.convert("RGBA")))
    assert np.array_equal(pixels[:, :, 3], np.asarray(la)[:, :, 1])


def test_palette_p_without_transparency(crop: Image.Image) -> None:
    palette_image = crop.quantize(37)
    assert palette_image.mode == "P" and "transparency" not in palette_image.info
    pixels = round_trip(palette_image)
    assert np.array_equal(pixels, np.asarray(palette_image.convert("RGB")))


def test_palette_p_with_transparency_becomes_rgba(crop: Image.Image) -> None:
    palette_image = crop.quantize(37)
    palette_image.info["transparency"] = 0
    pixels = round_trip(palette_image)
    assert pixels.shape[2] == 4
    indices = np.asarray(palette_image)
    assert np.array_equal(pixels[:, :, 3] == 0, indices == 0)
    assert np.array_equal(pixels, np.asarray(palette_image.convert("RGBA")))


def test_sixteen_bit_greyscale_i16() -> None:
    camera = skimage_image("camera")[100:164, 100:164].astype(np.uint16) * 257 + 3
    image = Image.fromarray(camera)
    assert image.mode.startswith("I;16")
    pixels = round_trip(image)
    assert np.array_equal(pixels[:, :, 0], (camera >> 8).astype(np.uint8))
    assert np.array_equal(pixels[:, :, 0], pixels[:, :, 2])


def test_cmyk(crop: Image.Image) -> None:
    cmyk = crop.convert("CMYK")
    assert np.array_equal(round_trip(cmyk), np.asarray(cmyk.convert("RGB")))


def test_bilevel_1(crop: Image.Image) -> None:
    bilevel = crop.convert("1")
    image = kmcodec.quantize(bilevel, 16)
    assert image.k == 2 and image.label_bits == 1
    assert np.array_equal(round_trip(bilevel), np.asarray(bilevel.convert("RGB")))


@pytest.mark.parametrize("extension, options", [
    (".png", {}), (".jpg", {"quality": 90}), (".webp", {"quality": 80}), (".webp", {"lossless": True}),
    (".gif", {}), (".tif", {}), (".bmp", {}),
])
def test_every_file_format(extension: str, options: dict, crop: Image.Image, tmp_path: Path) -> None:
    path = tmp_path / f"crop{extension}"
    crop.save(path, **options)
    with Image.open(path) as reread:
        expected = np.asarray(reread.convert("RGB"))
    assert np.array_equal(round_trip(path), expected)
    assert np.array_equal(round_trip(path.read_bytes()), expected)


def test_gif_with_transparency(crop: Image.Image, tmp_path: Path) -> None:
    path = tmp_path / "crop.gif"
    crop.quantize(20).save(path, transparency=3)
    with Image.open(path) as reread:
        expected = np.asarray(reread.convert("RGBA"))
    pixels = round_trip(path)
    assert pixels.shape[2] == 4 and (pixels[:, :, 3] == 0).any()
    assert np.array_equal(pixels, expected)


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_exif_orientation_is_honoured(orientation: int, crop: Image.Image, tmp_path: Path) -> None:
    path = tmp_path / f"rotated-{orientation}.jpg"
    exif = Image.Exif()
    exif[0x0112] = orientation
    crop.save(path, exif=exif, quality=95)
    with Image.open(path) as stored:
        upright = np.asarray(ImageOps.exif_transpose(stored).convert("RGB"))
        as_stored = np.asarray(stored.convert("RGB"))
    pixels = round_trip(path)
    assert pixels.shape[:2] == ((48, 64) if orientation == 3 else (64, 48))
    assert np.array_equal(pixels, upright)
    assert pixels.shape != as_stored.shape or not np.array_equal(pixels, as_stored)
