"""prefetch.py: the input PNG decoded on a thread while numpy loads, and every case it leaves to the normal path."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import kmcodec
from kmcodec.cli import main as cli_main
from kmcodec.prefetch import PicturePrefetch

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture()
def china_png(tmp_path: Path, china: np.ndarray) -> Path:
    path = tmp_path / "china.png"
    Image.fromarray(china).save(path)
    return path


def test_a_png_is_loaded_on_the_thread(china_png: Path, china: np.ndarray) -> None:
    picture = PicturePrefetch(china_png, max_pixels=None).result()
    assert picture is not None and picture.format == "PNG"
    assert np.array_equal(np.asarray(picture), china)


def test_rgb_and_rgba_pngs_come_packed_without_a_copy(china_png: Path, china: np.ndarray, tmp_path: Path) -> None:
    pixels = PicturePrefetch(china_png, max_pixels=None).pixels()
    assert pixels is not None and np.array_equal(pixels, china) and not pixels.flags.writeable
    rgba = np.dstack([china, (np.arange(china.size // 3) % 256).reshape(china.shape[:2]).astype(np.uint8)])
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    assert np.array_equal(PicturePrefetch(tmp_path / "rgba.png", max_pixels=None).pixels(), rgba)


def test_pictures_that_need_pillows_conversions_are_not_packed(china: np.ndarray, tmp_path: Path) -> None:
    turned = tmp_path / "turned.png"
    exif = Image.Exif()
    exif[0x0112] = 6  # stored turned: the normal path applies the orientation
    Image.fromarray(china).save(turned, exif=exif)
    grey = tmp_path / "grey.png"
    Image.fromarray(china[:, :, 0]).save(grey)
    for path in (turned, grey):
        prefetch = PicturePrefetch(path, max_pixels=None)
        assert prefetch.result() is not None and prefetch.pixels() is None
    out = tmp_path / "turned.kmq"
    assert cli_main(["encode", str(turned), str(out), "-k", "8", "-q"]) == 0
    assert out.read_bytes() == kmcodec.encode(np.rot90(china, -1), 8)  # orientation 6: turned 90 degrees clockwise


def test_encode_with_prefetch_writes_the_same_bytes_as_the_api(china_png: Path, tmp_path: Path) -> None:
    out = tmp_path / "china.kmq"
    assert cli_main(["encode", str(china_png), str(out), "-k", "16", "-q"]) == 0
    assert out.read_bytes() == kmcodec.encode(china_png, 16)


def test_other_formats_and_pictures_over_the_limit_are_left_to_the_normal_path(tmp_path: Path, china: np.ndarray,
                                                                                 china_png: Path) -> None:
    jpeg = tmp_path / "china.jpg"
    Image.fromarray(china).save(jpeg)
    assert PicturePrefetch(jpeg, max_pixels=None).result() is None
    assert PicturePrefetch(china_png, max_pixels=china.shape[0] * china.shape[1] - 1).result() is None


def test_a_broken_png_is_not_prefetched_and_the_cli_still_names_the_problem(china_png: Path, tmp_path: Path,
                                                                             capsys) -> None:
    broken = tmp_path / "broken.png"
    broken.write_bytes(china_png.read_bytes()[:5000])  # valid header, IDAT cut short
    assert PicturePrefetch(broken, max_pixels=None).result() is None
    assert cli_main(["encode", str(broken), str(tmp_path / "out.kmq"), "-k", "8"]) == 1
    error = capsys.readouterr().err
    assert error.startswith("kmcodec: error:") and "broken.png" in error
    assert not (tmp_path / "out.kmq").exists()


def test_parsing_arguments_and_import_kmcodec_do_not_load_numpy() -> None:
    code = ("import sys, kmcodec, kmcodec.cli; parser = kmcodec.cli.build_parser(); "
            "parser.parse_args(['encode', 'a.png', 'b.kmq', '-k', '8']); "
            "from PIL import Image; assert 'KMQ' in Image.OPEN; print('numpy' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"
