"""Bad encoder inputs and unwritable outputs: one clear error line, exit code 1, nothing written."""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import sklearn_image_path
from kmcodec import api, cli
from kmcodec.errors import InputImageError

ROOT = Path(__file__).resolve().parent.parent


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    code = cli.main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_error_line(code: int, err: str, *fragments: str) -> None:
    assert code == 1
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("kmcodec: error: ")
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def listing(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


@pytest.fixture()
def china_png_bytes(china) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(china[100:164, 200:296]).save(buffer, format="PNG")
    return buffer.getvalue()


def set_png_size(png: bytes, width: int, height: int) -> bytes:
    """Edit a PNG's IHDR size and fix its CRC, so only the declared size is wrong."""
    data = bytearray(png)
    struct.pack_into(">II", data, 16, width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def corrupt_cases(png: bytes) -> dict[str, tuple[bytes, str]]:
    jpeg = sklearn_image_path("china.jpg").read_bytes()
    idat = png.find(b"IDAT")
    flipped = bytearray(png)
    flipped[idat + 20] ^= 0xFF
    dht = jpeg.find(b"\xff\xc4")
    broken_jpeg = bytearray(jpeg)
    broken_jpeg[dht + 4 : dht + 30] = b"\xff" * 26
    return {
        "truncated.png": (png[: len(png) // 2], "truncated"),
        "corrupt.png": (bytes(flipped), "cannot read image"),
        "truncated.jpg": (jpeg[:5000], "truncated"),
        "corrupt.jpg": (bytes(broken_jpeg), "cannot read image"),
        "empty.png": (b"", "not an image format"),
        "text.png": (b"this is not an image\n" * 10, "not an image format"),
        "zero-width.png": (set_png_size(png, 0, 64), "not an image format"),
    }


@pytest.mark.parametrize(
    "name", ["truncated.png", "corrupt.png", "truncated.jpg", "corrupt.jpg", "empty.png", "text.png", "zero-width.png"]
)
def test_corrupt_inputs_fail_with_one_line_and_write_nothing(tmp_path, capsys, china_png_bytes, name) -> None:
    data, expected = corrupt_cases(china_png_bytes)[name]
    source = tmp_path / name
    source.write_bytes(data)
    before = listing(tmp_path)
    code, out, err = run_cli(capsys, "encode", source, tmp_path / "out.kmq", "-k", "8")
    assert_one_error_line(code, err, str(source), expected)
    assert listing(tmp_path) == before


@pytest.mark.parametrize("name", ["truncated.png", "corrupt.png", "empty.png", "text.png", "zero-width.png"])
def test_corrupt_png_paths_given_to_the_api_raise_and_write_nothing(tmp_path, china_png_bytes, name) -> None:
    """The API reads a PNG path with pngread first (as the CLI does); a damaged file goes on to Pillow, whose
    error is the one raised, and the output is never created."""
    from kmcodec import KMQError

    data, expected = corrupt_cases(china_png_bytes)[name]
    source = tmp_path / name
    source.write_bytes(data)
    before = listing(tmp_path)
    with pytest.raises(KMQError, match=expected):
        api.write(tmp_path / "out.kmq", source, 8)
    with pytest.raises(KMQError, match=expected):
        api.quantize(str(source), 8)
    assert listing(tmp_path) == before


def test_a_decompression_bomb_is_refused_before_decoding(tmp_path, capsys, china_png_bytes) -> None:
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(set_png_size(china_png_bytes, 100_000, 100_000))
    code, _, err = run_cli(capsys, "encode", bomb, tmp_path / "out.kmq", "-k", "8")
    assert_one_error_line(code, err, "decompression bomb", "10000000000 pixels", "--max-pixels")
    assert not (tmp_path / "out.kmq").exists()
    # a real image above an explicit, lower limit is refused the same way, and accepted at its own size
    photo = tmp_path / "photo.png"
    photo.write_bytes(china_png_bytes)
    code, _, err = run_cli(capsys, "encode", photo, tmp_path / "out.kmq", "-k", "8", "--max-pixels", "6143")
    assert_one_error_line(code, err, "96x64 = 6144 pixels exceeds the limit of 6143")
    code, _, err = run_cli(capsys, "encode", photo, tmp_path / "out.kmq", "-k", "8", "--max-pixels", "6144", "-q")
    assert code == 0 and err == ""
    assert api.read(tmp_path / "out.kmq").width == 96


def test_max_pixels_above_pillows_own_limit_admits_a_big_trusted_image(monkeypatch) -> None:
    # Pillow refuses outright at 2 x MAX_IMAGE_PIXELS; an explicit larger max_pixels lifts that for one open
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    small, big = io.BytesIO(), io.BytesIO()
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(small, format="PNG")  # Pillow only warns up to 2x
    Image.fromarray(np.zeros((50, 50, 3), np.uint8)).save(big, format="PNG")  # Pillow raises above 2x
    with pytest.raises(InputImageError, match="1600 pixels exceeds the limit of 1000 pixels .Pillow's MAX_IMAGE"):
        api.quantize(small.getvalue(), 2)
    with pytest.raises(InputImageError, match="decompression bomb .Image size .2500 pixels. exceeds limit of 2000"):
        api.quantize(big.getvalue(), 2)
    assert api.quantize(big.getvalue(), 2, max_pixels=2500).width == 50
    assert Image.MAX_IMAGE_PIXELS == 1000  # restored


def test_zero_sized_arrays_are_refused() -> None:
    with pytest.raises(InputImageError, match="no pixels"):
        api.quantize(np.zeros((0, 5, 3), np.uint8), 4)


def test_sixteen_bit_images_encode_with_their_8_bit_colours(tmp_path, capsys) -> None:
    from skimage import data as samples

    grey = samples.camera().astype(np.uint16) * 257  # a real 16-bit greyscale image
    path = tmp_path / "camera16.png"
    Image.fromarray(grey).save(path)
    assert Image.open(path).mode.startswith("I")
    code, _, err = run_cli(capsys, "encode", path, tmp_path / "camera.kmq", "-k", "256", "-q")
    assert code == 0, err
    decoded = api.read(tmp_path / "camera.kmq").to_array()
    assert np.array_equal(decoded[:, :, 0], samples.camera())  # 256 grey levels, all kept exactly


def test_cmyk_jpeg_encodes_close_to_the_rgb_original(tmp_path, capsys, china) -> None:
    china = china[150:278, 250:442]  # a crop keeps the k-means step short
    path = tmp_path / "china-cmyk.jpg"
    Image.fromarray(china).convert("CMYK").save(path, quality=95)
    assert Image.open(path).mode == "CMYK"
    code, _, err = run_cli(capsys, "encode", path, tmp_path / "cmyk.kmq", "-k", "16", "-q")
    assert code == 0, err
    decoded = api.read(tmp_path / "cmyk.kmq").to_array().astype(np.float64)
    psnr = 10 * np.log10(255.0**2 / np.mean((decoded - china) ** 2))
    assert psnr > 25, psnr


def test_missing_and_directory_inputs(tmp_path, capsys) -> None:
    code, _, err = run_cli(capsys, "encode", tmp_path / "nope.png", tmp_path / "out.kmq", "-k", "4")
    assert_one_error_line(code, err, "nope.png", "no such file")
    code, _, err = run_cli(capsys, "encode", tmp_path, tmp_path / "out.kmq", "-k", "4")
    assert_one_error_line(code, err, "is a directory")
    code, _, err = run_cli(capsys, "decode", tmp_path / "nope.kmq", tmp_path / "out.png")
    assert_one_error_line(code, err, "nope.kmq", "No such file")
    code, _, err = run_cli(capsys, "info", tmp_path)
    assert_one_error_line(code, err, str(tmp_path), "Is a directory")
    assert listing(tmp_path) == []


@contextlib.contextmanager
def read_only_directory(path: Path):
    """A directory nobody can create files in: chmod for a normal user, the immutable flag for root."""
    path.mkdir()
    if os.geteuid() == 0:
        if shutil.which("chattr") is None or subprocess.run(["chattr", "+i", str(path)]).returncode != 0:
            pytest.skip("running as root without chattr +i: cannot make a directory read-only")
        try:
            yield path
        finally:
            subprocess.run(["chattr", "-i", str(path)], check=True)
    else:
        path.chmod(0o555)
        try:
            yield path
        finally:
            path.chmod(0o755)


@pytest.fixture()
def small_kmq(tmp_path, china) -> Path:
    path = tmp_path / "small.kmq"
    api.write(path, api.quantize(china[:40, :60], 4))
    return path


def test_unwritable_outputs(tmp_path, capsys, small_kmq) -> None:
    source = tmp_path / "in.png"
    api.read(small_kmq).to_pil().save(source)
    with read_only_directory(tmp_path / "locked") as locked:
        code, _, err = run_cli(capsys, "encode", source, locked / "out.kmq", "-k", "4")
        assert_one_error_line(code, err, "locked/out.kmq", "not writable")
        code, _, err = run_cli(capsys, "decode", small_kmq, locked / "out.png")
        assert_one_error_line(code, err, "locked/out.png", "not writable")
        assert listing(locked) == []
    code, _, err = run_cli(capsys, "encode", source, tmp_path / "missing" / "out.kmq", "-k", "4")
    assert_one_error_line(code, err, "missing/out.kmq", "does not exist")
    code, _, err = run_cli(capsys, "decode", small_kmq, tmp_path)
    assert_one_error_line(code, err)
    assert not (tmp_path / "missing").exists()


def test_atomic_output_reports_the_target_when_the_directory_refuses(tmp_path) -> None:
    from kmcodec.atomic import atomic_output

    with read_only_directory(tmp_path / "locked") as locked:
        with pytest.raises(OSError) as info:
            with atomic_output(locked / "x.kmq") as handle:
                handle.write(b"data")
        assert info.value.filename == str(locked / "x.kmq")
        assert listing(locked) == []


def test_existing_outputs_need_force(tmp_path, capsys, small_kmq) -> None:
    target = tmp_path / "out.png"
    target.write_bytes(b"precious")
    code, _, err = run_cli(capsys, "decode", small_kmq, target)
    assert_one_error_line(code, err, "output exists", "--force")
    assert target.read_bytes() == b"precious"
    code, _, err = run_cli(capsys, "decode", small_kmq, target, "--force", "-q")
    assert code == 0, err
    assert Image.open(target).size == (60, 40)
    assert sorted(listing(tmp_path)) == ["out.png", "small.kmq"]


def test_the_real_cli_process_prints_no_traceback(tmp_path) -> None:
    bad = tmp_path / "bad.kmq"
    bad.write_bytes(b"\x89KMQ\r\n\x1a\n\x01" + bytes(40))
    result = subprocess.run(
        [sys.executable, "-m", "kmcodec", "info", str(bad)], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 1
    assert result.stderr.startswith("kmcodec: error: ") and "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1


def test_a_raised_max_pixels_leaves_pillows_limit_alone_for_other_threads(monkeypatch, tmp_path) -> None:
    """Pillow's limit is one module-wide number: lifting it for kmcodec's open would lift it for every thread's
    Image.open. The lifted open must admit the big image without ever touching it."""
    from PIL import PngImagePlugin

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    seen: list[object] = []
    load = PngImagePlugin.PngImageFile.load

    def watched_load(self):
        seen.append(Image.MAX_IMAGE_PIXELS)  # what another thread's Image.open would see right now
        return load(self)

    monkeypatch.setattr(PngImagePlugin.PngImageFile, "load", watched_load)
    pixels = np.arange(50 * 50 * 3, dtype=np.uint8).reshape(50, 50, 3)
    path = tmp_path / "big.png"
    Image.fromarray(pixels).save(path)
    data = path.read_bytes()

    class Unseekable(io.RawIOBase):
        def __init__(self) -> None:
            self.stream = io.BytesIO(data)

        def readable(self) -> bool:
            return True

        def readinto(self, buffer) -> int:
            chunk = self.stream.read(len(buffer))
            buffer[: len(chunk)] = chunk
            return len(chunk)

    for source in (path, data, io.BytesIO(data), Unseekable()):
        assert np.array_equal(api.quantize(source, 256, max_pixels=2500).to_array(), pixels)
    assert seen and set(seen) == {1000}
    if Path("/proc/self/fd").is_dir():  # the file opened for the image is closed with it
        assert not any(Path(fd).resolve() == path.resolve() for fd in Path("/proc/self/fd").iterdir())
    with pytest.raises(InputImageError, match="not an image format Pillow can read"):
        api.quantize(b"this is not an image at all", 2, max_pixels=2500)
