"""The API's arguments: wrong types and text-mode files are refused with one clear message instead of failing
deep inside, and numbers are never silently truncated or taken from a bool."""

from __future__ import annotations

import codecs
import io
import tempfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import kmcodec
from kmcodec.quantizer import QuantizeOptionError


@pytest.fixture(scope="module")
def pixels(china: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(china[::16, ::16])


@pytest.fixture(scope="module")
def png(tmp_path_factory: pytest.TempPathFactory, pixels: np.ndarray) -> Path:
    path = tmp_path_factory.mktemp("arguments") / "china.png"
    Image.fromarray(pixels).save(path)
    return path


@pytest.mark.parametrize("option, value", [
    ("k", True), ("k", "16"), ("k", 16.0), ("k", 16.7),
    ("seed", True), ("seed", np.True_), ("seed", 1.9), ("seed", "3"),
    ("speed", True), ("speed", 4.0),
    ("rdo", True), ("rdo", "0.1"), ("dither", "1"),
])
def test_options_of_the_wrong_type_are_refused_not_truncated(pixels: np.ndarray, option: str, value: object) -> None:
    options = {"k": 8, option: value}
    with pytest.raises(QuantizeOptionError, match=option if option != "dither" else "dither strength"):
        kmcodec.quantize(pixels, **options)


def test_numpy_integers_and_a_dither_flag_are_fine(pixels: np.ndarray) -> None:
    image = kmcodec.quantize(pixels, np.uint16(8), seed=np.int64(3), speed=np.int8(4))
    assert image == kmcodec.quantize(pixels, 8, seed=3, speed=4)
    assert kmcodec.quantize(pixels, 8, dither=True) == kmcodec.quantize(pixels, 8, dither=1.0)


@pytest.mark.parametrize("value", [True, 0, -5, 2.5])
def test_max_pixels_must_be_a_positive_integer(png: Path, value: object) -> None:
    with pytest.raises(ValueError, match="max_pixels must be a positive integer"):
        kmcodec.quantize(png, 8, max_pixels=value)


@pytest.mark.parametrize("source, hint", [(None, "NoneType"), (5, "int"), ([1, 2], "list")])
def test_what_is_not_an_image_source_is_a_type_error(source: object, hint: str) -> None:
    with pytest.raises(TypeError, match=f"cannot read an image from a {hint}: give a path, bytes"):
        kmcodec.quantize(source, 4)  # type: ignore[arg-type]


def test_a_kmq_image_given_to_quantize_says_what_to_do(pixels: np.ndarray) -> None:
    with pytest.raises(TypeError, match="a KMQImage is already quantized: encode.. or write.. it"):
        kmcodec.quantize(kmcodec.quantize(pixels, 4), 4)  # type: ignore[arg-type]


def test_text_mode_files_are_refused_however_they_are_wrapped(png: Path, pixels: np.ndarray, tmp_path: Path) -> None:
    with open(png, encoding="latin-1") as text, pytest.raises(TypeError, match="needs a binary file .*china.png"):
        kmcodec.quantize(text, 4)
    image = kmcodec.quantize(pixels, 4)
    writers = [tempfile.NamedTemporaryFile("w"), tempfile.SpooledTemporaryFile(mode="w"),
               codecs.open(str(tmp_path / "c.kmq"), "w", encoding="utf-8")]
    for writer in writers:
        with writer, pytest.raises(TypeError, match=r"write\(\) needs a binary file"):
            kmcodec.write(writer, image)
    with open(png, "rb") as binary:
        assert kmcodec.quantize(binary, 4) == kmcodec.quantize(png, 4)


@pytest.mark.parametrize("option", [{"colors": 16.7}, {"colors": True}, {"colors": "16"}, {"seed": 1.9}])
def test_pillow_save_refuses_what_it_used_to_truncate(pixels: np.ndarray, option: dict) -> None:
    with pytest.raises(QuantizeOptionError):
        Image.fromarray(pixels).save(io.BytesIO(), format="KMQ", **option)


def test_pillow_save_takes_transparency_as_png_and_gif_do(pixels: np.ndarray) -> None:
    """save(..., transparency=i) makes entry i transparent, as for PNG, instead of being ignored."""
    indexed = Image.fromarray(pixels).quantize(8)
    stored = io.BytesIO()
    indexed.save(stored, format="KMQ", transparency=2)
    png = io.BytesIO()
    indexed.save(png, format="PNG", transparency=2)
    stored.seek(0)
    png.seek(0)
    assert np.array_equal(kmcodec.read(stored).to_array(), np.asarray(Image.open(png).convert("RGBA")))
