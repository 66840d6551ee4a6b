"""Decoded images written as pictures (picture.py): what each format cannot hold is refused up front, whatever
Pillow raises while writing is an OutputFormatError, and a failed write leaves no file behind."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import kmcodec
from kmcodec.errors import OutputFormatError
from kmcodec.picture import JPEG_MAX_DIMENSION, picture_format, save_picture

VECTORS = Path(__file__).resolve().parent.parent / "spec" / "vectors"
#: 70000x1 pixels: too wide for GIF, TGA, PCX, SGI and AVIF (16-bit sizes or encoder limits) and for JPEG.
WIDE = VECTORS / "ok-k0001-b0-rgb-70000x1.kmq"


def written(path: Path, mode: str) -> np.ndarray:
    with Image.open(path) as picture:
        return np.asarray(picture.convert(mode))


@pytest.mark.parametrize("extension", [".gif", ".tga", ".pcx", ".sgi"])
def test_any_pillow_failure_is_an_output_format_error_and_leaves_nothing(extension: str, tmp_path: Path) -> None:
    """Pillow's writers raise OverflowError (GIF, TGA, PCX) or struct.error (SGI) on a 70000-pixel side: each
    becomes one OutputFormatError naming the file and the format (AVIF is refused before, see below)."""
    image_format = picture_format(extension)
    target = tmp_path / f"wide{extension}"
    with pytest.raises(OutputFormatError) as caught:
        save_picture(kmcodec.read(WIDE), target, image_format, overwrite=False)
    assert str(caught.value).startswith(f"{target}: cannot write {image_format}: ")
    assert "70000x1" in str(caught.value)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("raised", [MemoryError, KeyboardInterrupt])
def test_memory_error_and_interrupt_propagate_as_themselves(raised: type, tmp_path: Path, monkeypatch) -> None:
    def failing_save(self, fp, format=None, **params) -> None:
        fp.write(b"partial")
        raise raised()

    monkeypatch.setattr(Image.Image, "save", failing_save)
    with pytest.raises(raised):
        save_picture(kmcodec.read(VECTORS / "ok-k0016-b4-rgb-13x1.kmq"), tmp_path / "x.png", "PNG", overwrite=False)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("extension", [".jpg", ".mpo", ".pdf"])
def test_jpeg_coding_refuses_sides_over_65500_pixels_before_libjpeg_prints(
    extension: str, tmp_path: Path, capfd: pytest.CaptureFixture
) -> None:
    """libjpeg writes "Maximum supported image dimension is 65500 pixels" to stderr itself: refuse first."""
    image_format = picture_format(extension)
    palette = np.array([[40, 90, 160]], dtype=np.uint8)
    wide = kmcodec.KMQImage(palette, np.zeros((1, JPEG_MAX_DIMENSION + 1), dtype=np.uint8))
    tall = kmcodec.KMQImage(palette, np.zeros((JPEG_MAX_DIMENSION + 1, 1), dtype=np.uint8))
    for image in (wide, tall):
        with pytest.raises(OutputFormatError, match=f"cannot write {image_format}: .*at most 65500 pixels a side"):
            save_picture(image, tmp_path / f"x{extension}", image_format, overwrite=False)
    assert list(tmp_path.iterdir()) == []
    assert capfd.readouterr().err == ""
    widest = kmcodec.KMQImage(palette, np.zeros((1, JPEG_MAX_DIMENSION), dtype=np.uint8))
    assert save_picture(widest, tmp_path / f"x{extension}", image_format, overwrite=False) > 0
    if image_format != "PDF":
        with Image.open(tmp_path / f"x{extension}") as picture:
            assert picture.size == (JPEG_MAX_DIMENSION, 1)


def test_gif_refuses_more_than_256_colours_and_keeps_256_exactly(tmp_path: Path) -> None:
    too_many = kmcodec.read(VECTORS / "ok-k0257-b9-rgb-19x21.kmq")
    with pytest.raises(OutputFormatError, match="GIF stores at most 256 colours; this image has k = 257"):
        save_picture(too_many, tmp_path / "x.gif", "GIF", overwrite=False)
    assert list(tmp_path.iterdir()) == []
    full = kmcodec.read(VECTORS / "ok-k0256-b8-rgb-every-label-once-16x16.kmq")
    save_picture(full, tmp_path / "x.gif", "GIF", overwrite=False)
    assert np.array_equal(written(tmp_path / "x.gif", "RGB"), full.to_array())


@pytest.mark.parametrize("k", [64, 256])
def test_gif_keeps_every_colour_of_an_image_with_binary_alpha(k: int, china: np.ndarray, tmp_path: Path) -> None:
    """Pillow re-quantizes an RGBA image for GIF (about a third of the opaque pixels changed at k = 64);
    the palette written as it is keeps them all, with every alpha-0 entry on GIF's one transparent index."""
    crop = china[100:180, 200:320]
    alpha = np.where(crop.sum(axis=2) > 400, 0, 255).astype(np.uint8)[:, :, None]
    image = kmcodec.quantize(np.concatenate([crop, alpha], axis=2), k)
    assert image.channels == 4 and (image.palette[:, 3] == 0).sum() > 1 and image.k > 32
    save_picture(image, tmp_path / "x.gif", "GIF", overwrite=False)
    rgba, expected = written(tmp_path / "x.gif", "RGBA"), image.to_array()
    assert np.array_equal(rgba[:, :, 3], expected[:, :, 3])
    opaque = expected[:, :, 3] == 255
    assert np.array_equal(rgba[opaque], expected[opaque])


@pytest.fixture(scope="module")
def china_k64(china: np.ndarray) -> kmcodec.KMQImage:
    """A 160x120 crop of china.jpg at k = 64."""
    return kmcodec.quantize(china[100:220, 200:360], 64)


def test_ico_is_written_at_the_images_own_size(china_k64: kmcodec.KMQImage, tmp_path: Path) -> None:
    """Pillow's default ICO sizes (16x16 up to the image) would shrink a 160x120 image to 64x48."""
    target = tmp_path / "x.ico"
    save_picture(china_k64, target, picture_format(".ico"), overwrite=False)
    assert np.array_equal(written(target, "RGB"), china_k64.to_array())


def test_ico_refuses_a_side_over_256_and_icns_is_refused(china: np.ndarray, tmp_path: Path) -> None:
    big = kmcodec.quantize(china[:100, :300], 4)
    with pytest.raises(OutputFormatError, match="ICO holds at most 256x256 pixels, this image is 300x100"):
        save_picture(big, tmp_path / "x.ico", picture_format(".ico"), overwrite=False)
    if "ICNS" in Image.SAVE:
        with pytest.raises(OutputFormatError, match="ICNS stores square icons of fixed sizes"):
            save_picture(big, tmp_path / "x.icns", picture_format(".icns"), overwrite=False)
    assert list(tmp_path.iterdir()) == []


def test_dib_refuses_alpha_as_bmp_does(china_k64: kmcodec.KMQImage, tmp_path: Path) -> None:
    palette = np.concatenate([china_k64.palette, np.full((china_k64.k, 1), 255, np.uint8)], axis=1)
    palette[0, 3] = 0
    rgba = kmcodec.KMQImage(palette, china_k64.labels)
    with pytest.raises(OutputFormatError, match="DIB cannot store alpha"):
        save_picture(rgba, tmp_path / "x.dib", "DIB", overwrite=False)


def test_jpeg_is_written_at_its_most_faithful(china_k64: kmcodec.KMQImage, tmp_path: Path) -> None:
    """Quality 95 without chroma subsampling: far closer to the stored pixels than Pillow's default (75, 4:2:0)."""
    target = tmp_path / "x.jpg"
    save_picture(china_k64, target, picture_format(".jpg"), overwrite=False)
    stored = china_k64.to_array().astype(np.int64)

    def psnr(pixels: np.ndarray) -> float:
        return float(10 * np.log10(255**2 / np.mean((pixels.astype(np.int64) - stored) ** 2)))

    default = tmp_path / "default.jpg"
    china_k64.to_pil().save(default)
    faithful, usual = psnr(written(target, "RGB")), psnr(written(default, "RGB"))
    assert faithful > usual + 4, (faithful, usual)


@pytest.mark.skipif(not hasattr(__import__("os"), "mkfifo"), reason="named pipes are POSIX")
@pytest.mark.parametrize("extension", [".png", ".gif", ".tif", ".ico"])
def test_a_picture_written_into_a_named_pipe_arrives_whole(china_k64: kmcodec.KMQImage, tmp_path: Path,
                                                            extension: str) -> None:
    """Pillow's writers tell() and seek (TIFF, ICO go back to fill in offsets): into a pipe the picture is made
    in memory first, then written."""
    import os
    import threading

    fifo = tmp_path / f"pipe{extension}"
    os.mkfifo(fifo)
    received: list[bytes] = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_bytes()))
    reader.start()
    size = save_picture(china_k64, fifo, picture_format(extension), overwrite=True)
    reader.join(timeout=30)
    assert size == len(received[0])
    regular = tmp_path / f"regular{extension}"
    assert save_picture(china_k64, regular, picture_format(extension), overwrite=False) == regular.stat().st_size
    copy = tmp_path / f"copy{extension}"
    copy.write_bytes(received[0])
    assert np.array_equal(written(copy, "RGB"), china_k64.to_array())


@pytest.mark.skipif(not Path("/dev/null").exists(), reason="needs /dev/null")
@pytest.mark.parametrize("extension", [".png", ".tif"])
def test_a_picture_written_into_dev_null_reports_the_size_written(china_k64: kmcodec.KMQImage, tmp_path: Path,
                                                                extension: str) -> None:
    """/dev/null seeks, but its end is always 0: the size returned is that of the picture written."""
    regular = tmp_path / f"regular{extension}"
    expected = save_picture(china_k64, regular, picture_format(extension), overwrite=False)
    assert expected == regular.stat().st_size > 0
    assert save_picture(china_k64, Path("/dev/null"), picture_format(extension), overwrite=True) == expected


def test_avif_past_what_its_readers_open_is_refused(tmp_path: Path) -> None:
    if "AVIF" not in Image.SAVE:
        pytest.skip("this Pillow cannot write AVIF")
    wide = kmcodec.KMQImage(np.zeros((1, 3), np.uint8), np.zeros((1, 32769), np.uint8))
    with pytest.raises(OutputFormatError, match="AVIF readers .libavif. open at most 32768 pixels a side"):
        save_picture(wide, tmp_path / "x.avif", "AVIF", overwrite=False)
    assert list(tmp_path.iterdir()) == []
