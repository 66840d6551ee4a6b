"""pngread.py: plain RGB(A) PNGs read on two threads give Pillow's pixels (and their colour counts); every other
PNG, damaged ones included, is given back to Pillow (None)."""

from __future__ import annotations

import io
import struct
import threading
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

import kmcodec
from kmcodec import fastpath, pngread
from kmcodec.cli import main as cli_main
from kmcodec.prefetch import PicturePrefetch
from kmcodec.quantizer import colour_histogram

from conftest import gnome_background, skimage_image

pytestmark = pytest.mark.skipif(not fastpath.have_c_extension(), reason="the PNG reader needs the C extension")


def chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def filtered_rows(pixels: np.ndarray, filters: list[int]) -> bytes:
    """The scanlines of (H, W, C) uint8 pixels under the given filter type of each row, written from the PNG
    specification (section 9.2), independently of the reader's C code."""
    height, width, channels = pixels.shape
    rows = pixels.reshape(height, width * channels).astype(np.int32)
    out = bytearray()
    for y, kind in enumerate(filters):
        row = rows[y]
        up = rows[y - 1] if y else np.zeros_like(row)
        left = np.concatenate([np.zeros(channels, np.int32), row[:-channels]])
        up_left = np.concatenate([np.zeros(channels, np.int32), up[:-channels]])
        if kind == 0:
            predicted = np.zeros_like(row)
        elif kind == 1:
            predicted = left
        elif kind == 2:
            predicted = up
        elif kind == 3:
            predicted = (left + up) // 2
        else:
            p = left + up - up_left
            pa, pb, pc = np.abs(p - left), np.abs(p - up), np.abs(p - up_left)
            predicted = np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, up, up_left))
        out.append(kind)
        out += ((row - predicted) % 256).astype(np.uint8).tobytes()
    return bytes(out)


def png_file(pixels: np.ndarray, filters: list[int] | None = None, *, extra: list[bytes] = (),
             after_idat: list[bytes] = (), idat_size: int = 8192, stream: bytes | None = None,
             colour_type: int | None = None, depth: int = 8, interlace: int = 0) -> bytes:
    """A PNG of the pixels with chosen filters, ancillary chunks before and after the IDAT chunks, and the zlib
    stream cut into IDAT chunks of idat_size bytes (or `stream` as given)."""
    height, width, channels = pixels.shape
    if filters is None:
        filters = [y % 5 for y in range(height)]
    if colour_type is None:
        colour_type = {3: 2, 4: 6}[channels]
    data = zlib.compress(filtered_rows(pixels, filters), 6) if stream is None else stream
    ihdr = struct.pack(">IIBBBBB", width, height, depth, colour_type, 0, 0, interlace)
    idat = b"".join(chunk(b"IDAT", data[i : i + idat_size]) for i in range(0, len(data), idat_size))
    return (pngread.SIGNATURE + chunk(b"IHDR", ihdr) + b"".join(extra) + idat + b"".join(after_idat)
            + chunk(b"IEND", b""))


def pillow_pixels(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as picture:
        return np.asarray(picture)


def read(tmp_path: Path, data: bytes, max_pixels: int | None = None, name: str = "p.png"):
    path = tmp_path / name
    path.write_bytes(data)
    return pngread.read_png(path, max_pixels)


def as_array(decoded) -> np.ndarray:
    return np.frombuffer(decoded.pixels, np.uint8).reshape(decoded.height, decoded.width, decoded.channels)


def noise(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


@pytest.mark.parametrize("channels", [3, 4])
@pytest.mark.parametrize("shape", [(1, 1), (1, 7), (7, 1), (5, 3), (64, 257)])
def test_every_filter_type_gives_pillows_pixels(tmp_path: Path, shape: tuple[int, int], channels: int) -> None:
    """Each filter type on every row in turn, and each on a whole picture, over noise (every Paeth branch is
    taken, and Average's sums pass 255) and over smooth gradients."""
    height, width = shape
    smooth = (np.add.outer(np.arange(height), np.arange(width))[:, :, None] * np.arange(1, channels + 1)) % 256
    for pixels in (noise((height, width, channels), seed=height * width), smooth.astype(np.uint8)):
        for filters in ([y % 5 for y in range(height)], *([kind] * height for kind in range(5))):
            data = png_file(pixels, filters)
            decoded = read(tmp_path, data)
            assert decoded is not None and (decoded.width, decoded.height, decoded.channels) == (width, height,
                                                                                                 channels)
            assert np.array_equal(as_array(decoded), pillow_pixels(data))
            assert np.array_equal(as_array(decoded), pixels)


def test_real_photos_saved_by_pillow_read_as_pillow_reads_them(tmp_path: Path, china: np.ndarray,
                                                               flower: np.ndarray) -> None:
    pictures = [china, flower, skimage_image("astronaut"), skimage_image("coffee"),
                np.dstack([china, noise(china.shape[:2])])]
    for index, pixels in enumerate(pictures):
        path = tmp_path / f"{index}.png"
        Image.fromarray(pixels).save(path, compress_level=index % 10)
        decoded = pngread.read_png(path, None)
        assert decoded is not None and decoded.keys is None  # below COUNT_MIN_PIXELS: not counted
        assert np.array_equal(as_array(decoded), pillow_pixels(path.read_bytes()))


def test_a_large_rgb_png_comes_with_its_colour_counts(tmp_path: Path) -> None:
    """A 16.8 MP gnome-backgrounds photo, above COUNT_MIN_PIXELS: the counts are the quantizer's histogram."""
    with Image.open(gnome_background()) as picture:
        path = tmp_path / "wood.png"
        picture.convert("RGB").save(path, compress_level=1)
    decoded = pngread.read_png(path, None)
    assert decoded is not None and decoded.width * decoded.height > pngread.COUNT_MIN_PIXELS
    pixels = as_array(decoded)
    assert np.array_equal(pixels, pillow_pixels(path.read_bytes()))
    histogram = colour_histogram(pixels)
    assert np.array_equal(np.frombuffer(decoded.keys, np.uint32), histogram.keys)
    assert np.array_equal(np.frombuffer(decoded.counts, np.int64), histogram.counts)


def test_rgba_pictures_are_not_counted(tmp_path: Path) -> None:
    pixels = noise((1100, 1000, 4))
    decoded = read(tmp_path, png_file(pixels, [1] * 1100))
    assert decoded is not None and decoded.keys is None and np.array_equal(as_array(decoded), pixels)


def test_the_cli_writes_the_same_file_from_the_readers_pixels_and_counts(tmp_path: Path, china: np.ndarray) -> None:
    big = np.tile(china, (3, 2, 1))  # 1.6 MP: counted by the reader
    path = tmp_path / "big.png"
    Image.fromarray(big).save(path)
    prefetch = PicturePrefetch(path, max_pixels=None)
    assert prefetch.result() is None and prefetch.histogram() is not None  # read by pngread, not Pillow
    out = tmp_path / "big.kmq"
    assert cli_main(["encode", str(path), str(out), "-k", "64", "-q"]) == 0
    assert out.read_bytes() == kmcodec.encode(big, 64)


def test_the_api_reads_a_png_path_as_the_cli_does(tmp_path: Path, china: np.ndarray, monkeypatch) -> None:
    """kmcodec.write(path) reads a plain PNG with pngread and hands the quantizer its counts (no second count):
    the file is the CLI's, and the one the same pixels give as an array."""
    from kmcodec import quantizer

    big = np.tile(china, (3, 2, 1))  # 1.6 MP: counted by the reader
    path = tmp_path / "big.png"
    Image.fromarray(big).save(path)
    counted = []
    real_count = quantizer.colour_histogram
    monkeypatch.setattr(quantizer, "colour_histogram", lambda pixels: counted.append(pixels.shape) or real_count(pixels))
    api_file = tmp_path / "api.kmq"
    kmcodec.write(api_file, path, 64)
    assert counted == []  # the reader's counts were used
    cli_file = tmp_path / "cli.kmq"
    assert cli_main(["encode", str(path), str(cli_file), "-k", "64", "-q"]) == 0
    assert api_file.read_bytes() == cli_file.read_bytes() == kmcodec.encode(big, 64)
    assert counted == [big.shape]  # the array was counted by the quantizer
    assert kmcodec.quantize(str(path), 64) == kmcodec.quantize(big, 64)


def test_the_api_keeps_its_pixel_limits_on_a_png_path(tmp_path: Path) -> None:
    """A PNG path above max_pixels, or above Pillow's own limit when max_pixels is not given, is refused as
    before: the reader leaves it to the normal path, which says what is wrong."""
    path = tmp_path / "p.png"
    path.write_bytes(png_file(noise((20, 30, 3))))
    with pytest.raises(kmcodec.KMQError, match="600"):
        kmcodec.quantize(path, 4, max_pixels=599)
    assert kmcodec.quantize(path, 4, max_pixels=600).width == 30
    with pytest.raises(ValueError, match="max_pixels"):
        kmcodec.quantize(path, 4, max_pixels=0)
    Image.MAX_IMAGE_PIXELS, before = 250, Image.MAX_IMAGE_PIXELS
    try:
        with pytest.raises(kmcodec.KMQError):
            kmcodec.quantize(path, 4)
    finally:
        Image.MAX_IMAGE_PIXELS = before


@pytest.mark.skipif(not hasattr(__import__("os"), "mkfifo"), reason="named pipes are POSIX")
def test_a_named_pipe_is_not_opened_by_the_reader(tmp_path: Path) -> None:
    """A FIFO can be read once only, and opening it waits for a writer: the reader leaves it alone at once."""
    import os

    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    done = []
    reader = threading.Thread(target=lambda: done.append(pngread.read_png(fifo, None)), daemon=True)
    reader.start()
    reader.join(timeout=10)
    assert done == [None]


HARMLESS = [chunk(b"gAMA", struct.pack(">I", 45455)), chunk(b"pHYs", bytes(9)), chunk(b"tEXt", b"Comment\0hi"),
            chunk(b"iCCP", b"icc\0\0" + zlib.compress(b"x" * 20)), chunk(b"cHRM", bytes(32)), chunk(b"sRGB", b"\0"),
            chunk(b"bKGD", bytes(6))]


def test_metadata_that_leaves_the_pixels_alone_is_read_past(tmp_path: Path) -> None:
    pixels = noise((9, 11, 3))
    after = [chunk(b"tIME", bytes(7)), chunk(b"tEXt", b"a\0b")]  # the two Pillow reads after the image data too
    data = png_file(pixels, extra=HARMLESS, after_idat=after, idat_size=40)
    decoded = read(tmp_path, data)
    assert decoded is not None and np.array_equal(as_array(decoded), pixels)


def test_a_bad_idat_crc_is_ignored_as_pillow_ignores_it(tmp_path: Path) -> None:
    pixels = noise((9, 11, 3))
    data = bytearray(png_file(pixels))
    end = data.index(b"IEND") - 4
    data[end - 1] ^= 1  # the last byte of the (only) IDAT chunk's CRC
    decoded = read(tmp_path, bytes(data))
    assert decoded is not None and np.array_equal(as_array(decoded), pillow_pixels(bytes(data)))


def _exif_orientation(value: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = value
    return exif.tobytes()


GIVEN_BACK = {
    "grey": dict(colour_type=0),
    "palette": dict(colour_type=3),
    "16-bit": dict(depth=16),
    "interlaced": dict(interlace=1),
    "PLTE": dict(extra=[chunk(b"PLTE", bytes(6))]),
    "tRNS": dict(extra=[chunk(b"tRNS", bytes(6))]),
    "eXIf": dict(extra=[chunk(b"eXIf", _exif_orientation(6))]),
    "XMP": dict(extra=[chunk(b"iTXt", b"XML:com.adobe.xmp\0\0\0\0\0<x tiff:Orientation='6'/>")]),
    "raw EXIF text": dict(extra=[chunk(b"zTXt", b"Raw profile type exif\0\0" + zlib.compress(b"\nexif\n8\n00"))]),
    "APNG": dict(extra=[chunk(b"acTL", struct.pack(">II", 1, 0))]),
    "unknown ancillary": dict(extra=[chunk(b"zzZz", b"")]),
    "compressed text": dict(extra=[chunk(b"zTXt", b"Title\0\0" + zlib.compress(b"t"))]),
    "international text": dict(extra=[chunk(b"iTXt", b"Title\0\0\0\0\0t")]),
    "gAMA cut short": dict(extra=[chunk(b"gAMA", bytes(2))]),
    "pHYs cut short": dict(extra=[chunk(b"pHYs", bytes(8))]),
    "bKGD of a grey image": dict(extra=[chunk(b"bKGD", bytes(2))]),
    "iCCP without a name": dict(extra=[chunk(b"iCCP", b"\0\0" + zlib.compress(b"x"))]),
    "iCCP of another method": dict(extra=[chunk(b"iCCP", b"icc\0\1" + zlib.compress(b"x"))]),
    "iCCP that does not inflate": dict(extra=[chunk(b"iCCP", b"icc\0\0" + bytes(9))]),
    "iCCP over Pillow's limit": dict(extra=[chunk(b"iCCP", b"icc\0\0" + zlib.compress(bytes(2 << 20)))]),
    "gAMA after the image": dict(after_idat=[chunk(b"gAMA", bytes(4))]),
    "EXIF as text": dict(extra=[chunk(b"tEXt", b"exif\0" + _exif_orientation(6))]),
    "EXIF as text after the image": dict(after_idat=[chunk(b"tEXt", b"exif\0" + _exif_orientation(6))]),
    "XMP as text": dict(extra=[chunk(b"tEXt", b"XML:com.adobe.xmp\0<x tiff:Orientation='6'/>")]),
    "over a MiB of text": dict(extra=[chunk(b"tEXt", b"Comment\0" + bytes(1 << 20))]),
    "unknown critical": dict(extra=[chunk(b"ZZZZ", b"")]),
    "split IDAT": dict(after_idat=[chunk(b"tEXt", b"a\0b"), chunk(b"IDAT", b"")]),
}


@pytest.mark.parametrize("case", sorted(GIVEN_BACK))
def test_pngs_that_are_not_plain_are_given_back_to_pillow(tmp_path: Path, case: str) -> None:
    assert read(tmp_path, png_file(noise((6, 5, 3)), **GIVEN_BACK[case])) is None


def _damaged(pixels: np.ndarray) -> dict[str, bytes]:
    rows = filtered_rows(pixels, [4] * pixels.shape[0])
    whole = png_file(pixels, [4] * pixels.shape[0])
    bad_ancillary = bytearray(png_file(pixels, extra=[chunk(b"gAMA", bytes(4))]))
    bad_ancillary[bad_ancillary.index(b"gAMA") + 8] ^= 1
    filter_five = bytearray(rows)
    filter_five[(pixels.shape[1] * 3 + 1) * 3] = 5
    return {
        "cut in IDAT": whole[: len(whole) // 2],
        "cut before IEND": whole[:-12],
        "bytes after IEND": whole + b"\0",
        "IEND with a body": whole[:-12] + chunk(b"IEND", b"\0\0"),
        "bad ancillary CRC": bytes(bad_ancillary),
        "stream cut short": png_file(pixels, stream=zlib.compress(rows)[:-30]),
        "stream without its end": png_file(pixels, stream=zlib.compressobj().compress(rows)),
        "too few rows": png_file(pixels, stream=zlib.compress(rows[: -(pixels.shape[1] * 3 + 1)])),
        "too many rows": png_file(pixels, stream=zlib.compress(rows + rows[: pixels.shape[1] * 3 + 1])),
        "a partial row more": png_file(pixels, stream=zlib.compress(rows + b"\0")),
        "data after the stream": png_file(pixels, stream=zlib.compress(rows) + b"\0\0"),
        "a second stream": png_file(pixels, stream=zlib.compress(rows) + zlib.compress(b"x")),
        "bad Adler-32": png_file(pixels, stream=zlib.compress(rows)[:-1] + b"\0"),
        "not zlib": png_file(pixels, stream=b"\x78\x9c" + bytes(40)),
        "filter type 5": png_file(pixels, stream=zlib.compress(bytes(filter_five))),
        "signature only": pngread.SIGNATURE,
        "empty": b"",
    }


@pytest.mark.parametrize("case", sorted(_damaged(np.zeros((4, 2, 3), np.uint8))))
def test_damaged_pngs_are_given_back_to_pillow(tmp_path: Path, case: str) -> None:
    before = threading.active_count()
    assert read(tmp_path, _damaged(noise((40, 30, 3)))[case]) is None
    assert threading.active_count() == before  # the inflating thread has ended


def test_limits_are_kept_before_anything_is_allocated(tmp_path: Path) -> None:
    pixels = noise((20, 30, 3))
    data = png_file(pixels)
    assert read(tmp_path, data, max_pixels=599) is None
    assert read(tmp_path, data, max_pixels=600) is not None
    # a header declaring 2^31 x 2^31 over a few bytes of stream: refused by the ratio check, not allocated
    huge = pngread.SIGNATURE + chunk(b"IHDR", struct.pack(">IIBBBBB", 1 << 31, 1 << 31, 8, 2, 0, 0, 0))
    huge += chunk(b"IDAT", zlib.compress(bytes(1000))) + chunk(b"IEND", b"")
    assert read(tmp_path, huge) is None


def test_a_stream_that_inflates_past_the_picture_stops_there(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A bomb: a few KB that inflate to 100 MB, under a header of 100 x 100. The inflater gives up after at most
    one piece past the picture's 30,100 bytes."""
    produced = []
    original = pngread._put

    def put(pieces, item, stop):
        produced.append(0 if item is None else len(item))
        return original(pieces, item, stop)

    monkeypatch.setattr(pngread, "_put", put)
    monkeypatch.setattr(pngread, "DEFLATE_MAX_RATIO", 1 << 20)  # let it past the quick ratio check
    data = png_file(noise((100, 100, 3)), stream=zlib.compress(bytes(100 << 20), 9))
    assert read(tmp_path, data) is None
    assert sum(produced) <= 100 * 301 + pngread.PIECE_BYTES


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_a_damaged_png_gives_pillows_pixels_or_none(tmp_path: Path, data) -> None:
    """Any bytes changed, cut or added in a small plain PNG: the reader gives None, or pixels that Pillow
    gives too for the same bytes."""
    pixels = noise((12, 9, data.draw(st.sampled_from([3, 4]))), seed=data.draw(st.integers(0, 3)))
    original = bytearray(png_file(pixels, idat_size=data.draw(st.sampled_from([50, 1000]))))
    for _ in range(data.draw(st.integers(1, 4))):
        where = data.draw(st.integers(0, len(original) - 1))
        how = data.draw(st.sampled_from(["flip", "cut", "insert"]))
        if how == "flip":
            original[where] ^= 1 << data.draw(st.integers(0, 7))
        elif how == "cut":
            del original[where : where + data.draw(st.integers(1, 20))]
        else:
            original[where:where] = data.draw(st.binary(min_size=1, max_size=20))
        if not original:
            break
    damaged = bytes(original)
    decoded = read(tmp_path, damaged)
    if decoded is not None:
        assert np.array_equal(as_array(decoded), pillow_pixels(damaged))


def test_the_differential_fuzzer_runs_clean_and_would_report_a_difference(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """tools/fuzz_png.py, briefly: no finding on the reader as it is; one reader that gets a pixel wrong is
    reported as a mismatch, with the input saved."""
    import importlib.util

    tool = Path(__file__).resolve().parent.parent / "tools" / "fuzz_png.py"
    spec = importlib.util.spec_from_file_location("fuzz_png", tool)
    fuzz_png = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fuzz_png)
    monkeypatch.setattr("sys.argv", ["fuzz_png.py", "--runs", "400", "--seed", "5", "--out", str(tmp_path / "clean")])
    assert fuzz_png.main() == 0 and not (tmp_path / "clean").exists()

    original = pngread.read_png

    def off_by_one(path, max_pixels):
        decoded = original(path, max_pixels)
        if decoded is not None:
            decoded.pixels[0] = (decoded.pixels[0] + 1) % 256
        return decoded

    monkeypatch.setattr(pngread, "read_png", off_by_one)
    monkeypatch.setattr("sys.argv", ["fuzz_png.py", "--runs", "40", "--seed", "5", "--out", str(tmp_path / "broken")])
    assert fuzz_png.main() == 1
    assert list((tmp_path / "broken").glob("mismatch-*.png"))


@pytest.mark.parametrize("piece_bytes", [1, 7, 100])
def test_rows_longer_than_the_inflaters_pieces_are_put_together(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                piece_bytes: int) -> None:
    """A row spread over many pieces (on a real picture: a row of more than PIECE_BYTES) comes out whole."""
    monkeypatch.setattr(pngread, "PIECE_BYTES", piece_bytes)
    for channels in (3, 4):
        pixels = noise((6, 45, channels), seed=piece_bytes)
        decoded = read(tmp_path, png_file(pixels))
        assert decoded is not None and np.array_equal(as_array(decoded), pixels)


def test_a_file_cut_short_while_it_is_read_is_given_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another program truncates the PNG after its header was read: the reader comes up short and gives up (a
    mapped file would have killed the process with SIGBUS here)."""
    path = tmp_path / "shrinking.png"
    path.write_bytes(png_file(noise((300, 200, 3)), idat_size=4096))
    original = pngread._read_head

    def head_then_truncate(handle):
        layout = original(handle)
        with open(path, "r+b") as other:
            other.truncate(2000)
        return layout

    monkeypatch.setattr(pngread, "_read_head", head_then_truncate)
    assert pngread.read_png(path, None) is None
