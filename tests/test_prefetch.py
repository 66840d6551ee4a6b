"""prefetch.py: the input PNG or JPEG decoded on a thread while numpy loads, and every case it leaves to the normal path."""

from __future__ import annotations

import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

import kmcodec
from kmcodec import fastpath, pngread
from kmcodec.cli import main as cli_main
from kmcodec.imageio import load_pixels
from kmcodec.prefetch import PicturePrefetch, _declared_pixels, _jpeg_frame_pixels

ROOT = Path(__file__).resolve().parent.parent
#: Pillow >= 11.2 shares its pixels through Arrow (fastpath.arrow_pixels); older ones are copied, as before.
PILLOW_SHARES_PIXELS = hasattr(Image.Image, "__arrow_c_array__") and fastpath.have_c_extension()


@pytest.fixture()
def china_png(tmp_path: Path, china: np.ndarray) -> Path:
    path = tmp_path / "china.png"
    Image.fromarray(china).save(path)
    return path


@pytest.fixture()
def pillow_reads_pngs(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every PNG goes to Pillow, as one that pngread gives back does (or every PNG without the C extension)."""
    monkeypatch.setattr(pngread, "read_png", lambda path, max_pixels: None)


@pytest.mark.skipif(not fastpath.have_c_extension(), reason="pngread needs the C extension")
def test_a_plain_png_is_read_on_the_thread_by_pngread(china_png: Path, china: np.ndarray) -> None:
    prefetch = PicturePrefetch(china_png, max_pixels=None)
    assert prefetch.result() is None  # no Pillow image: pngread read it
    pixels = prefetch.pixels()
    assert np.array_equal(pixels, china) and not pixels.flags.writeable
    assert prefetch.histogram() is None  # 0.27 MP: the quantizer's sort is faster than a count table


def test_a_png_pngread_gives_back_is_loaded_on_the_thread_by_pillow(china: np.ndarray, tmp_path: Path) -> None:
    tagged = tmp_path / "tagged.png"
    exif = Image.Exif()
    exif[0x0112] = 1  # upright, but an eXIf chunk: pngread leaves EXIF to Pillow
    Image.fromarray(china).save(tagged, exif=exif)
    prefetch = PicturePrefetch(tagged, max_pixels=None)
    picture = prefetch.result()
    assert picture is not None and picture.format == "PNG"
    assert np.array_equal(np.asarray(picture), china) and np.array_equal(prefetch.pixels(), china)
    assert prefetch.histogram() is None


def test_rgb_and_rgba_pngs_come_as_views_of_pillows_pixels(china_png: Path, china: np.ndarray, tmp_path: Path,
                                                           pillow_reads_pngs: None) -> None:
    prefetch = PicturePrefetch(china_png, max_pixels=None)
    pixels = prefetch.pixels()
    assert pixels is not None and np.array_equal(pixels, china) and not pixels.flags.writeable
    if PILLOW_SHARES_PIXELS:
        assert pixels.strides == (4 * china.shape[1], 4, 1)  # Pillow's RGBX rows, not a packed copy
    prefetch.result().close()
    assert np.array_equal(pixels, china)  # the view keeps Pillow's pixels alive after the picture is closed
    rgba = np.dstack([china, (np.arange(china.size // 3) % 256).reshape(china.shape[:2]).astype(np.uint8)])
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    assert np.array_equal(PicturePrefetch(tmp_path / "rgba.png", max_pixels=None).pixels(), rgba)


@pytest.mark.skipif(not hasattr(Image.core, "set_use_block_allocator"), reason="Pillow < 11.2 has no such setting")
def test_prefetch_leaves_pillows_allocator_as_it_found_it(china_png: Path, pillow_reads_pngs: None) -> None:
    before = Image.core.get_use_block_allocator()
    assert PicturePrefetch(china_png, max_pixels=None).pixels() is not None
    assert Image.core.get_use_block_allocator() == before


def test_pixels_pillow_cannot_share_are_copied(china_png: Path, china: np.ndarray, monkeypatch: pytest.MonkeyPatch,
                                               pillow_reads_pngs: None) -> None:
    monkeypatch.setattr(fastpath, "arrow_pixels", lambda picture: None)  # an older Pillow, or rows in several blocks
    pixels = PicturePrefetch(china_png, max_pixels=None).pixels()
    assert pixels is not None and pixels.flags.c_contiguous and np.array_equal(pixels, china)


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


def test_encode_with_prefetch_writes_the_same_bytes_as_the_api(china_png: Path, tmp_path: Path,
                                                                 china: np.ndarray) -> None:
    jpeg = tmp_path / "china.jpg"
    Image.fromarray(china).save(jpeg, quality=90)
    for source in (china_png, jpeg):
        out = tmp_path / f"{source.name}.kmq"
        assert cli_main(["encode", str(source), str(out), "-k", "16", "-q"]) == 0
        assert out.read_bytes() == kmcodec.encode(source, 16)


def test_other_formats_and_pictures_over_the_limit_are_left_to_the_normal_path(tmp_path: Path, china: np.ndarray,
                                                                                 china_png: Path) -> None:
    for suffix in ("gif", "bmp", "webp", "tiff"):
        other = tmp_path / f"china.{suffix}"
        Image.fromarray(china).save(other)
        assert PicturePrefetch(other, max_pixels=None).result() is None
    jpeg = tmp_path / "china.jpg"
    Image.fromarray(china).save(jpeg)
    pixels = china.shape[0] * china.shape[1]
    assert PicturePrefetch(china_png, max_pixels=pixels - 1).result() is None
    assert PicturePrefetch(jpeg, max_pixels=pixels - 1).result() is None
    assert PicturePrefetch(jpeg, max_pixels=pixels).result() is not None


def test_jpegs_are_loaded_on_the_thread_with_the_normal_paths_pixels(tmp_path: Path, china: np.ndarray) -> None:
    """scikit-learn's china.jpg as shipped, a progressive JPEG and a CMYK one (which needs Pillow's conversion,
    so it comes unpacked): the same pixels as imageio's own reading."""
    import sklearn

    shipped = Path(sklearn.__file__).parent / "datasets" / "images" / "china.jpg"
    progressive = tmp_path / "progressive.jpg"
    Image.fromarray(china).save(progressive, progressive=True, quality=80)
    cmyk = tmp_path / "cmyk.jpg"
    Image.fromarray(china).convert("CMYK").save(cmyk)
    for path, packed in ((shipped, True), (progressive, True), (cmyk, False)):
        prefetch = PicturePrefetch(path, max_pixels=None)
        assert prefetch.result() is not None and prefetch.result().format == "JPEG"
        pixels = prefetch.pixels()
        assert (pixels is not None) == packed
        expected = load_pixels(path)
        assert np.array_equal(pixels if packed else load_pixels(prefetch.result()), expected)


def test_encoding_a_turned_jpeg_applies_its_orientation(tmp_path: Path, china: np.ndarray) -> None:
    turned = tmp_path / "turned.jpg"
    exif = Image.Exif()
    exif[0x0112] = 8  # stored turned: 90 degrees counter-clockwise to show
    Image.fromarray(china).save(turned, exif=exif, quality=95)
    prefetch = PicturePrefetch(turned, max_pixels=None)
    assert prefetch.result() is not None and prefetch.pixels() is None
    out = tmp_path / "turned.kmq"
    assert cli_main(["encode", str(turned), str(out), "-k", "8", "-q"]) == 0
    assert out.read_bytes() == kmcodec.encode(turned, 8)
    assert kmcodec.read(out).height == china.shape[1]  # shown upright: the stored width is the height


def _segment(marker: int, body: bytes) -> bytes:
    return bytes([0xFF, marker]) + struct.pack(">H", len(body) + 2) + body


def _frame(marker: int, width: int, height: int) -> bytes:
    return _segment(marker, bytes([8]) + struct.pack(">HH", height, width) + bytes([3]) + bytes(9))


@pytest.mark.parametrize("header, expected", [
    (_frame(0xC0, 640, 427), ("JPEG", 273280)),                                            # baseline
    (_segment(0xE0, b"JFIF\0" + bytes(9)) + _frame(0xC2, 3, 5), ("JPEG", 15)),            # APP0, progressive
    (_segment(0xFE, bytes(65000)) + b"\xff\xff" + _frame(0xC1, 4464, 2), ("JPEG", 8928)),  # long COM, fill bytes
    (b"\xff\xd0" + _frame(0xCF, 1, 1), ("JPEG", 1)),                                       # a stand-alone marker
    (_segment(0xC4, bytes(30)) + _segment(0xDB, bytes(65)) + _frame(0xC0, 9, 9), ("JPEG", 81)),  # DHT, DQT first
    (_frame(0xC0, 640, 0), None),                                                         # height set later (DNL)
    (_segment(0xDA, bytes(10)) + _frame(0xC0, 9, 9), None),                                # a scan before any frame
    (_frame(0xC0, 640, 427)[:6], None),                                                   # cut inside the frame
    (_segment(0xE1, bytes(10))[:3], None),                                                # cut inside a length
    (b"\x00" + _frame(0xC0, 9, 9), None),                                                 # not a marker
    (_segment(0xE0, b"") * 300 + _frame(0xC0, 9, 9), None),                                # too many segments
    (b"\xff" * 100 + _frame(0xC0, 9, 9), None),                                            # too many fill bytes
])
def test_jpeg_headers_give_the_frame_size_or_none(tmp_path: Path, header: bytes, expected) -> None:
    path = tmp_path / "h.jpg"
    path.write_bytes(b"\xff\xd8" + header)
    assert _declared_pixels(path) == expected


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_any_bytes_after_a_jpeg_signature_give_a_size_or_none(tmp_path_factory, tail: bytes) -> None:
    path = tmp_path_factory.mktemp("jpeg") / "x.jpg"
    path.write_bytes(b"\xff\xd8" + tail)
    result = _declared_pixels(path)
    assert result is None or (result[0] == "JPEG" and 0 < result[1] <= 65535 * 65535)


def test_a_broken_png_is_not_prefetched_and_the_cli_still_names_the_problem(china_png: Path, tmp_path: Path,
                                                                             capsys) -> None:
    broken = tmp_path / "broken.png"
    broken.write_bytes(china_png.read_bytes()[:5000])  # valid header, IDAT cut short
    assert PicturePrefetch(broken, max_pixels=None).result() is None
    assert cli_main(["encode", str(broken), str(tmp_path / "out.kmq"), "-k", "8"]) == 1
    error = capsys.readouterr().err
    assert error.startswith("kmcodec: error:") and "broken.png" in error
    assert not (tmp_path / "out.kmq").exists()


def test_a_file_of_fill_bytes_is_given_up_at_once(tmp_path: Path) -> None:
    """The header reader runs on the calling thread before any limit is checked: 8 MB of 0xFF after SOI
    (each a valid fill byte) must not be read byte by byte."""
    path = tmp_path / "fill.jpg"
    path.write_bytes(b"\xff\xd8" + b"\xff" * (8 << 20))
    with open(path, "rb") as handle:
        handle.seek(2)
        assert _jpeg_frame_pixels(handle) is None
        assert handle.tell() < 1000
    assert _declared_pixels(path) is None and PicturePrefetch(path, max_pixels=None).result() is None


def test_a_broken_jpeg_is_not_prefetched_and_the_cli_still_names_the_problem(tmp_path: Path, china: np.ndarray,
                                                                              capsys) -> None:
    whole = tmp_path / "whole.jpg"
    Image.fromarray(china).save(whole)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(whole.read_bytes()[:3000])  # a valid header, the scan cut short
    assert _declared_pixels(broken) == ("JPEG", china.shape[0] * china.shape[1])
    assert PicturePrefetch(broken, max_pixels=None).result() is None
    assert cli_main(["encode", str(broken), str(tmp_path / "out.kmq"), "-k", "8"]) == 1
    error = capsys.readouterr().err
    assert error.startswith("kmcodec: error:") and "broken.jpg" in error
    assert not (tmp_path / "out.kmq").exists()


def test_parsing_arguments_and_import_kmcodec_do_not_load_numpy_or_the_container() -> None:
    """What loads before the input picture's decode starts delays it: numpy, and the container module with
    dataclasses (~7 ms), load after."""
    code = ("import sys, kmcodec, kmcodec.cli; parser = kmcodec.cli.build_parser(); "
            "parser.parse_args(['encode', 'a.png', 'b.kmq', '-k', '8']); "
            "from PIL import Image; assert 'KMQ' in Image.OPEN; "
            "print([m for m in ('numpy', 'dataclasses', 'kmcodec.container') if m in sys.modules])")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_pillow_still_opens_kmq_files_when_the_container_loads_late(tmp_path: Path, china: np.ndarray) -> None:
    path = tmp_path / "china.kmq"
    path.write_bytes(kmcodec.encode(china, 16))
    code = ("import sys, kmcodec; from PIL import Image; "
            f"picture = Image.open({str(path)!r}); picture.load(); "
            "print(picture.format, picture.mode, picture.size, kmcodec.Header.__name__, kmcodec.DEFAULT_MAX_PIXELS)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["KMQ", "P", "(640,", "427)", "Header", str(2**28)]


def test_encode_restores_the_thread_switch_interval(china_png: Path, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    import kmcodec.cli as cli
    from kmcodec import prefetch

    before = sys.getswitchinterval()
    seen = []
    original = prefetch.PicturePrefetch.result

    def result(self):
        seen.append(sys.getswitchinterval())
        return original(self)

    monkeypatch.setattr(prefetch.PicturePrefetch, "result", result)
    assert cli_main(["encode", str(china_png), str(tmp_path / "out.kmq"), "-k", "8", "-q"]) == 0
    assert seen[0] == pytest.approx(cli.PREFETCH_SWITCH_INTERVAL)  # while the picture decodes beside the imports
    assert sys.getswitchinterval() == before
    broken = tmp_path / "broken.png"
    broken.write_bytes(china_png.read_bytes()[:2000])
    assert cli_main(["encode", str(broken), str(tmp_path / "broken.kmq"), "-k", "8", "-q"]) == 1
    assert sys.getswitchinterval() == before
