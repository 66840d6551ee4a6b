"""The Pillow plugin: Image.open and Image.save for .kmq after `import kmcodec`."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, UnidentifiedImageError

import kmcodec

VECTORS = Path(__file__).resolve().parent.parent / "spec" / "vectors"


@pytest.fixture(scope="module")
def crop(china: np.ndarray) -> Image.Image:
    return Image.fromarray(china[150:230, 250:370])


@pytest.mark.parametrize("vector", ["ok-example-3x2-rgb-k3.kmq", "ok-k0256-b8-rgb-every-label-once-16x16.kmq",
                                    "ok-k0017-b5-rgb-5x7.kmq", "ok-k0003-b2-rgba-all-opaque-3x5.kmq"])
def test_open_gives_mode_p_with_the_palette(vector: str) -> None:
    api_image = kmcodec.read(VECTORS / vector)
    with Image.open(VECTORS / vector) as image:
        assert image.format == "KMQ" and image.mode == "P"
        assert image.size == (api_image.width, api_image.height)
        image.load()
        assert np.array_equal(np.asarray(image), api_image.labels)
        palette = np.frombuffer(image.palette.tobytes(), dtype=np.uint8).reshape(-1, 3)[: api_image.k]
        assert np.array_equal(palette, api_image.palette[:, :3])
        mode = api_image.mode
        assert np.array_equal(np.asarray(image.convert(mode)), api_image.to_array())


def test_open_keeps_transparency() -> None:
    path = VECTORS / "ok-k0004-b2-rgba-transparent-colours-4x2.kmq"
    api_image = kmcodec.read(path)
    with Image.open(path) as image:
        assert image.mode == "P"
        assert image.info["transparency"] == api_image.palette[:, 3].tobytes()
        rgba = np.asarray(image.convert("RGBA"))
    assert np.array_equal(rgba, api_image.to_array())


@pytest.mark.parametrize("vector, mode", [("ok-k0257-b9-rgb-19x21.kmq", "RGB"), ("ok-k65536-b16-rgba-23x29.kmq", "RGBA")])
def test_more_than_256_colours_open_as_rgb_or_rgba(vector: str, mode: str) -> None:
    with Image.open(VECTORS / vector) as image:
        assert image.mode == mode
        assert np.array_equal(np.asarray(image), kmcodec.read(VECTORS / vector).to_array())


def test_save_with_colors_quantizes(crop: Image.Image, tmp_path: Path) -> None:
    path = tmp_path / "crop.kmq"
    crop.save(path, colors=16, coding="raw")
    image = kmcodec.read(path)
    assert (image.width, image.height, image.k, image.channels) == (120, 80, 16, 3)
    assert path.stat().st_size == 40 + 16 * 3 + 120 * 80 * 4 // 8
    assert image == kmcodec.quantize(crop, 16)  # the same quantizer and default seed as the API
    with Image.open(path) as reopened:
        assert np.array_equal(np.asarray(reopened.convert("RGB")), image.to_array())


def test_save_with_rdo_smooths_like_the_api(crop: Image.Image, tmp_path: Path) -> None:
    path = tmp_path / "rdo.kmq"
    crop.save(path, colors=16, rdo=0.3)
    assert path.read_bytes() == kmcodec.encode(kmcodec.quantize(crop, 16, rdo=0.3))
    assert kmcodec.read(path) != kmcodec.quantize(crop, 16)
    with pytest.raises(kmcodec.KMQError, match="rdo= needs colors="):
        crop.quantize(24).save(tmp_path / "p.kmq", rdo=0.3)
    assert not (tmp_path / "p.kmq").exists()  # Pillow removes the file it created


def test_saving_a_p_image_keeps_its_palette_and_indices(crop: Image.Image, tmp_path: Path) -> None:
    palette_image = crop.quantize(24)
    path = tmp_path / "p.kmq"
    palette_image.save(path)
    image = kmcodec.read(path)
    used = int(np.asarray(palette_image).max()) + 1
    pillow_palette = np.frombuffer(palette_image.palette.tobytes(), dtype=np.uint8).reshape(-1, 3)
    assert np.array_equal(image.palette, pillow_palette[:used])
    assert np.array_equal(image.labels, np.asarray(palette_image))
    assert np.array_equal(image.to_array(), np.asarray(palette_image.convert("RGB")))


def test_saving_a_p_image_with_transparency_keeps_alpha(crop: Image.Image) -> None:
    palette_image = crop.quantize(12)
    palette_image.info["transparency"] = 2
    buffer = io.BytesIO()
    palette_image.save(buffer, format="KMQ")
    image = kmcodec.decode(buffer.getvalue())
    assert image.channels == 4
    assert np.array_equal(image.to_array(), np.asarray(palette_image.convert("RGBA")))


@pytest.mark.parametrize("garbage", [b"", b"not an image at all", b"\x89KMQ\r\n\x1a\n" + b"\x00" * 10,
                                     b"\x89KMQ\r\n\x1a\n\x02" + b"\x00" * 40])
def test_garbage_raises_unidentified_image_error(garbage: bytes) -> None:
    with pytest.raises(UnidentifiedImageError):
        Image.open(io.BytesIO(garbage))


def test_damaged_payload_fails_on_load_not_silently() -> None:
    with Image.open(VECTORS / "bad-flipbit-payload.kmq") as image:
        with pytest.raises(OSError, match="CRC"):
            image.load()


MANIFEST = json.loads((VECTORS / "manifest.json").read_text())


@pytest.mark.parametrize("name", sorted(MANIFEST))
def test_every_conformance_vector_through_pillow(name: str) -> None:
    """Valid vectors open to the manifest's pixels; corrupt ones fail at open (UnidentifiedImageError) or at
    load (OSError), never with another exception. Trailing bytes are the one exception: the plugin reads
    one image from a stream and, as Pillow's other plugins do, ignores what follows (spec section 7 step 8)."""
    entry = MANIFEST[name]
    data = (VECTORS / name).read_bytes()
    if "error" not in entry:
        with Image.open(io.BytesIO(data)) as image:
            pixels = image.convert("RGBA" if entry["channels"] == 4 else "RGB").tobytes()
        assert hashlib.sha256(pixels).hexdigest() == entry["pixels_sha256"]
        return
    if entry["error"] == "trailing":
        with Image.open(io.BytesIO(data)) as image:
            image.load()
        return
    try:
        image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        return
    with image, pytest.raises(OSError, match="broken KMQ file"):
        image.load()


def test_open_works_on_a_pillow_without_tile_named_tuples(monkeypatch: pytest.MonkeyPatch, china: np.ndarray) -> None:
    """Pillow 10 (pyproject allows >= 10.1) has no ImageFile._Tile: tiles are plain tuples there."""
    from PIL import ImageFile

    data = kmcodec.encode(china, 16)
    with Image.open(io.BytesIO(data)) as expected:
        expected.load()
    monkeypatch.delattr(ImageFile, "_Tile", raising=False)  # Pillow 10 never had it
    with Image.open(io.BytesIO(data)) as picture:
        assert picture.tile == [("kmq", (0, 0, 640, 427), 0, None)]
        picture.load()
        assert picture.mode == "P" and np.array_equal(np.asarray(picture), np.asarray(expected))


@pytest.mark.parametrize("colors", [0, -3])
def test_save_refuses_colors_zero_as_it_refuses_negative_colors(crop: Image.Image, colors: int) -> None:
    """Only an absent colors= means the default, 256; colors=0 is not a request for it."""
    buffer = io.BytesIO()
    with pytest.raises(kmcodec.KMQError, match=f"k must be an integer 1 to 65536, got {colors}"):
        crop.save(buffer, format="KMQ", colors=colors)
    assert buffer.getvalue() == b""


@pytest.mark.parametrize("name", ["ok-example-3x2-rgb-k3.kmq", "ok-k0257-b9-rgb-19x21.kmq", "ok-context-k0064-rgba-64x48.kmq"])
def test_verify_passes_a_valid_file_which_then_reopens(name: str) -> None:
    image = Image.open(VECTORS / name)
    image.verify()
    assert image.fp is None  # Pillow's contract: verify closes the file; reopen the image to use it
    with Image.open(VECTORS / name) as reopened:
        pixels = reopened.convert(kmcodec.read(VECTORS / name).mode)
    assert np.array_equal(np.asarray(pixels), kmcodec.read(VECTORS / name).to_array())


@pytest.mark.parametrize("name, detail", [
    ("bad-flipbit-payload.kmq", "trailer: CRC-32 mismatch"),
    ("bad-checksum-trailer.kmq", "trailer: CRC-32 mismatch"),
    ("bad-truncated-in-payload.kmq", "payload: file ends at offset"),
    ("bad-truncated-in-trailer.kmq", "trailer: file ends at offset"),
    ("bad-header-payload-length-plus-1.kmq", "header: payload_length is 7"),
])
def test_verify_finds_damage_that_open_lets_through(name: str, detail: str) -> None:
    with Image.open(VECTORS / name) as image:
        with pytest.raises(SyntaxError, match=f"broken KMQ file: {detail}"):
            image.verify()


def test_verify_checks_what_the_container_reader_checks_on_every_conformance_vector() -> None:
    """verify() reads the whole container but decodes no labels, as PngImagePlugin checks chunk CRCs without
    inflating: it refuses every damaged file that opens; what passes it yet fails at load is a file whose CRCs
    are right and whose labels are not (an encoder's fault, not damage), or trailing bytes, which load ignores."""
    passed_but_bad = set()
    for name, entry in MANIFEST.items():
        try:
            image = Image.open(io.BytesIO((VECTORS / name).read_bytes()))
        except UnidentifiedImageError:
            assert "error" in entry, name
            continue
        try:
            image.verify()
        except SyntaxError as exc:
            assert "error" in entry and str(exc).startswith("broken KMQ file: "), name
            assert entry["error"] in ("checksum", "truncated", "header", "coding"), name
        else:
            if "error" in entry:
                passed_but_bad.add(entry["error"])
                assert entry["error"] in ("coding", "label", "padding", "trailing"), name
    assert passed_but_bad == {"coding", "label", "padding", "trailing"}


def test_one_fully_transparent_entry_opens_as_an_index_and_saves_to_gif(china: np.ndarray, tmp_path: Path) -> None:
    """As PngImagePlugin does: info["transparency"] is an int when exactly one entry has alpha 0 and the others
    255 (so GIF, which takes an index, can save it), and the alpha bytes otherwise."""
    rgb = kmcodec.quantize(china[100:160, 200:290], 24)
    hidden = int(np.bincount(rgb.labels.reshape(-1)).argmax())  # the most used colour becomes transparent
    alpha = np.full((rgb.k, 1), 255, dtype=np.uint8)
    alpha[hidden] = 0
    image = kmcodec.KMQImage(np.concatenate([rgb.palette, alpha], axis=1), rgb.labels)
    kmcodec.write(tmp_path / "p.kmq", image)
    with Image.open(tmp_path / "p.kmq") as opened:
        assert opened.info["transparency"] == hidden and isinstance(opened.info["transparency"], int)
        opened.save(tmp_path / "p.gif")
    with Image.open(tmp_path / "p.gif") as gif:
        assert np.array_equal(np.asarray(gif.convert("RGBA")), image.to_array())
    alpha[(hidden + 1) % rgb.k] = 254  # one entry not fully opaque: every entry's alpha, as bytes
    partial = kmcodec.KMQImage(np.concatenate([rgb.palette, alpha], axis=1), rgb.labels)
    kmcodec.write(tmp_path / "partial.kmq", partial)
    with Image.open(tmp_path / "partial.kmq") as opened:
        assert opened.info["transparency"] == alpha.tobytes()
