"""The compact codings (spec 5.1-5.2): round trips on real images, auto, corrupt payloads, bounded decoding."""

from __future__ import annotations

import dataclasses
import io
import sys
import zlib
import lzma
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from kmcodec import api, codings
from kmcodec.bitpack import label_bits, label_dtype
from kmcodec.cli import main as cli_main
from kmcodec.container import Header, build_file
from kmcodec.errors import CodingError, KMQError, LabelError
from kmcodec.image import KMQImage

from conftest import damaged_stream, skimage_image
from context_reference import StreamError, decode_context

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))

pytestmark = pytest.mark.skipif(codings._ctxcoder is None, reason="kmcodec._ctxcoder not built (python setup.py build_ext --inplace)")

CODED = ("deflate", "lzma", "context1", "context", "context2")
ALL = ("raw", *CODED)


def labels_from_photo(pixels: np.ndarray, k: int) -> np.ndarray:
    """Real-image labels for any k: the pixel's 24-bit colour (k > 256) or luma (k <= 256) scaled to 0..k-1."""
    rgb = pixels[..., :3].astype(np.int64)
    if k > 256:
        key = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
        labels = (key * k) >> 24
    else:
        luma = (299 * rgb[..., 0] + 587 * rgb[..., 1] + 114 * rgb[..., 2]) // 1000
        labels = (luma * k) >> 8
    return labels.astype(label_dtype(label_bits(k)))


def photo_image(pixels: np.ndarray, k: int, channels: int) -> KMQImage:
    rng = np.random.default_rng(k)
    palette = rng.integers(0, 256, (k, channels), dtype=np.uint8)
    return KMQImage(palette, labels_from_photo(pixels, k))


def coded_file(header: Header, palette: bytes, payload: bytes) -> bytes:
    """A file with these contents and correct CRCs (so only the payload can be wrong)."""
    return build_file(dataclasses.replace(header, payload_length=len(payload)), palette, payload)


@pytest.mark.parametrize("k", [1, 2, 3, 5, 9, 17, 64, 65, 256, 257, 1500, 4097, 20000, 65536])
@pytest.mark.parametrize("channels", [3, 4])
def test_every_coding_round_trips_every_label_width(china: np.ndarray, k: int, channels: int) -> None:
    crop = china[100:180, 200:330]
    image = photo_image(crop, k, channels)
    sizes = {}
    for coding in (*ALL, "context-columns", "context3"):  # auto weighs codings 6 and 7 too (spec 5.5, 5.6)
        data = api.encode(image, coding=coding)
        assert data[10] == codings.CODINGS_BY_NAME[coding].id
        assert api.decode(data) == image
        sizes[coding] = len(data)
    auto = api.encode(image)
    assert len(auto) == min(size for coding, size in sizes.items() if coding != "context1")  # auto never writes coding 3
    assert api.decode(auto) == image


@pytest.mark.parametrize("source", ["china", "flower", "astronaut", "coffee"])
@pytest.mark.parametrize("k", [16, 3000])
def test_full_size_photos_round_trip_and_context_is_smallest(source: str, k: int, china, flower) -> None:
    pixels = {"china": china, "flower": flower}.get(source)
    if pixels is None:
        pixels = skimage_image(source)
    image = photo_image(pixels, k, 3)
    sizes = {}
    for coding in ALL:
        data = api.encode(image, coding=coding)
        assert api.decode(data) == image
        sizes[coding] = len(data)
    banded = min(sizes["context"], sizes["context2"])
    assert banded == min(size for coding, size in sizes.items() if coding != "context1"), sizes
    assert sizes["context"] < sizes["context1"]  # one band, but model 4 beats model 3 by more than the 6-byte table
    if k == 16:
        assert sizes["context2"] < sizes["context"]  # model 5's joint contexts, exact at this k


@pytest.mark.parametrize("tiles, expected", [(8, "lzma"), (12, "deflate")])
def test_auto_takes_a_dictionary_coding_where_exact_repeats_beat_context(tiles: int, expected: str) -> None:
    # A tiled random pattern: LZ77 finds every repeat, the context model sees noise. Above AUTO_LZMA_MAX_LABELS
    # (12 x 12 tiles of 64 x 64) auto must still find deflate through its probe; below it lzma wins.
    rng = np.random.default_rng(5)
    image = KMQImage(rng.integers(0, 256, (256, 3), dtype=np.uint8),
                     np.tile(rng.integers(0, 256, (64, 64), dtype=np.uint8), (tiles, tiles)))
    assert (image.labels.size > codings.AUTO_LZMA_MAX_LABELS) == (expected == "deflate")
    data = api.encode(image)
    assert data[10] == codings.CODINGS_BY_NAME[expected].id
    assert len(data) < 0.5 * len(api.encode(image, coding="context"))
    assert api.decode(data) == image


@pytest.mark.parametrize("k", [8, 64, 256])
def test_auto_on_a_small_photo_is_the_smallest_coding_it_weighs(china: np.ndarray, k: int) -> None:
    """Up to AUTO_LZMA_MAX_LABELS auto codes deflate and lzma beside the context codings when the first probe
    passes (it does on china): the file is the smallest of raw, deflate, lzma, context, context2,
    context-columns (which on an image this small keeps the smaller of its two models, as auto does) and context3
    (whose models 6 and 7 no other coding holds)."""
    image = api.quantize(china, k)
    assert image.labels.size <= codings.AUTO_LZMA_MAX_LABELS
    sizes = {coding: len(api.encode(image, coding=coding))
             for coding in ("raw", "deflate", "lzma", "context", "context2", "context-columns", "context3")}
    data = api.encode(image)
    assert len(data) == min(sizes.values()), sizes
    assert api.decode(data) == image


def test_quantized_photo_auto_beats_png8_after_optimize(flower: np.ndarray) -> None:
    image = api.quantize(flower, 16)
    data = api.encode(image)
    assert api.decode(data) == image
    png = io.BytesIO()
    image.to_pil_palette().save(png, format="PNG", optimize=True)
    model_of_row_coding = {coding.id: model for model, coding in codings.ROW_CODING_OF_MODEL.items()}
    model_byte = 36 + image.k * image.channels  # the payload starts after the header and the palette
    model = data[model_byte] if data[10] == codings.CONTEXT_COLUMNS.id else model_of_row_coding[data[10]]
    assert model == codings.JOINT_BAND_MODEL  # model 5, by rows (coding 5) or by columns (coding 6's model byte)
    assert len(data) < 0.7 * len(png.getvalue())


@pytest.mark.parametrize("k, shape", [(2, (23, 31)), (16, (40, 37)), (64, (33, 50)), (256, (30, 41)),
                                      (300, (21, 26)), (1000, (19, 23))])
def test_reference_decoder_written_from_the_spec_agrees_with_the_kernel(china: np.ndarray, k: int, shape) -> None:
    height, width = shape
    labels = labels_from_photo(china[200 : 200 + height, 300 : 300 + width], k)
    header = Header(width=width, height=height, channels=3, k=k, coding=3, payload_length=0)
    payload = codings.CONTEXT1.encode(labels.reshape(-1), header)
    assert decode_context(payload, width, height, k) == labels.reshape(-1).tolist()
    with pytest.raises(StreamError):
        decode_context(payload[:-1], width, height, k)
    with pytest.raises(StreamError):
        decode_context(payload + b"\x00", width, height, k)


@pytest.fixture(scope="module")
def context_sample(china: np.ndarray) -> tuple[Header, bytes, bytes, np.ndarray]:
    labels = labels_from_photo(china[50:90, 60:120], 64)
    height, width = labels.shape
    palette = np.random.default_rng(1).integers(0, 256, (64, 3), dtype=np.uint8).tobytes()
    header = Header(width=width, height=height, channels=3, k=64, coding=3, payload_length=0)
    return header, palette, codings.CONTEXT1.encode(labels.reshape(-1), header), labels


@settings(max_examples=150, deadline=2000, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_flipped_or_truncated_context_payloads_decode_or_raise_coding(context_sample, data) -> None:
    header, palette, payload, labels = context_sample
    damaged = damaged_stream(data, payload)
    try:
        image = api.decode(coded_file(header, palette, damaged))
    except KMQError as exc:
        assert isinstance(exc, CodingError), exc
    else:
        assert image.labels.shape == labels.shape
        assert int(image.labels.max()) < header.k


def deflate_outcome(payload: bytes, header: Header, inflater) -> np.ndarray | type:
    """What coding 1's decoder makes of `payload` with this inflate module: the labels, or the error's class."""
    chosen = codings.strict_inflate
    codings.strict_inflate = lambda: inflater
    try:
        return codings.DEFLATE.decode(payload, header)
    except KMQError as exc:
        return type(exc)
    finally:
        codings.strict_inflate = chosen


@pytest.fixture(scope="module")
def deflate_sample(china: np.ndarray) -> tuple[Header, bytes, np.ndarray]:
    labels = labels_from_photo(china[100:160, 200:300], 16)
    header = Header(width=100, height=60, channels=3, k=16, coding=1, payload_length=0)
    return header, codings.DEFLATE.encode(labels.reshape(-1), header), labels


def test_deflate_inflates_with_isal_where_isal_reports_the_bytes_after_a_stream() -> None:
    """Coding 1 inflates with ISA-L (2-2.5x zlib's speed on 16.8 MP of labels) from python-isal 1.9 on; before
    1.9 its unused_data stays empty after most streams, so a payload with bytes after its stream would pass, and
    zlib's inflate does the job there (the oldest versions' run, isal 1.6.1)."""
    isal = pytest.importorskip("isal")
    version = tuple(int(part) for part in isal.__version__.split(".")[:2])
    assert (codings.strict_inflate().__name__ == "isal.isal_zlib") == (version >= (1, 9))


@pytest.mark.parametrize("pixels", [1, 7, 100, 2560, 100_000])
def test_deflate_rejects_bytes_after_the_stream_at_every_size(china: np.ndarray, pixels: int) -> None:
    """The inflater coding 1 chose reports what follows the stream whatever its length (python-isal before 1.9
    did so only for some lengths)."""
    labels = labels_from_photo(china, 16).reshape(-1)[:pixels]
    header = Header(width=pixels, height=1, channels=3, k=16, coding=1, payload_length=0)
    payload = codings.DEFLATE.encode(labels, header)
    assert np.array_equal(codings.DEFLATE.decode(payload, header), labels)
    for tail in (b"\0", b"XY", payload):
        with pytest.raises(CodingError, match="left over"):
            codings.DEFLATE.decode(payload + tail, header)


def test_deflate_checks_the_adler32_and_rejects_bytes_after_the_stream(deflate_sample) -> None:
    """With the inflater coding 1 chose: a stream whose Adler-32 alone is wrong (every label byte came out) and a
    stream followed by one byte both fail, as the spec requires."""
    header, payload, labels = deflate_sample
    assert np.array_equal(codings.DEFLATE.decode(payload, header), labels.reshape(-1))
    wrong_check = payload[:-4] + (int.from_bytes(payload[-4:], "big") ^ 1).to_bytes(4, "big")
    with pytest.raises(CodingError, match="cannot be decoded"):
        codings.DEFLATE.decode(wrong_check, header)
    with pytest.raises(CodingError, match="left over"):
        codings.DEFLATE.decode(payload + b"\0", header)


@settings(max_examples=300, deadline=2000, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_the_chosen_inflater_and_zlib_accept_and_reject_the_same_deflate_payloads(deflate_sample, data) -> None:
    """The inflater coding 1 decodes with (ISA-L's, where it reports trailing bytes) against zlib's on damaged
    streams: the same labels, or errors of the same class, for every payload (so the choice changes no verdict)."""
    header, payload, _ = deflate_sample
    damaged = damaged_stream(data, payload)
    chosen, by_zlib = deflate_outcome(damaged, header, codings.strict_inflate()), deflate_outcome(damaged, header, zlib)
    if isinstance(by_zlib, np.ndarray):
        assert isinstance(chosen, np.ndarray) and np.array_equal(chosen, by_zlib)
    else:
        assert chosen is by_zlib


@pytest.mark.parametrize("coding", CODED)
def test_payload_that_expands_past_the_declared_labels_is_rejected_without_expanding(coding: str) -> None:
    header = Header(width=10, height=10, channels=3, k=16, coding=codings.CODINGS_BY_NAME[coding].id, payload_length=0)
    zeros = bytes(1 << 26)  # 64 MiB of labels for a 100-pixel image: decoding them all would take seconds
    if coding == "deflate":
        payload = zlib.compress(zeros, 1)
    elif coding == "lzma":
        payload = lzma.compress(zeros[: 1 << 24], format=lzma.FORMAT_XZ, preset=0)
    else:  # a stream (or band streams) coding 16 million labels
        big = Header(width=4000, height=4000, channels=3, k=16, coding=header.coding, payload_length=0)
        payload = codings.CODINGS_BY_NAME[coding].encode(np.zeros(16_000_000, dtype=np.uint8), big)
    with pytest.raises(CodingError, match="more than|left over"):
        api.decode(coded_file(header, bytes(48), payload))


@pytest.mark.parametrize("coding", ["deflate", "lzma"])
def test_standard_library_codings_reject_a_label_of_k(coding: str) -> None:
    header = Header(width=8, height=4, channels=3, k=16, coding=codings.CODINGS_BY_NAME[coding].id, payload_length=0)
    labels = bytearray(range(16)) * 2
    labels[5] = 16
    payload = zlib.compress(bytes(labels)) if coding == "deflate" else lzma.compress(bytes(labels))
    with pytest.raises(LabelError):
        api.decode(coded_file(header, bytes(48), payload))


def test_missing_kernel_says_how_to_get_it(monkeypatch, context_sample) -> None:
    header, palette, payload, _ = context_sample
    monkeypatch.setattr(codings, "_ctxcoder", None)
    with pytest.raises(CodingError, match="pip install"):
        api.decode(coded_file(header, palette, payload))
    image = KMQImage(np.zeros((2, 3), np.uint8) + [[0, 0, 0], [255, 255, 255]], np.eye(4, dtype=np.uint8))
    assert api.decode(api.encode(image)) == image  # auto still works without the kernel


def test_coded_conformance_vectors_decode_as_declared() -> None:
    from coded_vectors import coded_vectors

    vectors = coded_vectors()
    names = [v["name"] for v in vectors]
    assert len(names) == len(set(names))
    for vector in vectors:
        if "error" in vector:
            with pytest.raises(KMQError) as caught:
                api.decode(vector["data"])
            assert caught.value.kind == vector["error"], vector["name"]
        else:
            image = api.decode(vector["data"])
            assert (image.width, image.height, image.channels) == (vector["width"], vector["height"], vector["channels"])
            assert image.to_array().tobytes() == vector["pixels"], vector["name"]


def test_cli_coding_option_and_info(tmp_path: Path, china: np.ndarray, capsys) -> None:
    china_path = tmp_path / "china-crop.png"
    Image.fromarray(china[100:200, 100:250]).save(china_path)
    out = tmp_path / "c.kmq"
    assert cli_main(["encode", str(china_path), str(out), "-k", "8", "--coding", "deflate", "-q"]) == 0
    assert out.read_bytes()[10] == codings.DEFLATE.id
    assert cli_main(["info", str(out)]) == 0
    assert "(deflate)" in capsys.readouterr().out
    auto = tmp_path / "a.kmq"
    assert cli_main(["encode", str(china_path), str(auto), "-k", "8", "-q"]) == 0
    assert auto.read_bytes()[10] == codings.CONTEXT2.id
    assert api.read(auto) == api.read(out)
    with pytest.raises(SystemExit) as usage:
        cli_main(["encode", str(china_path), str(tmp_path / "x.kmq"), "-k", "8", "--coding", "zip"])
    assert usage.value.code == 2


def test_pillow_save_option_coding(flower: np.ndarray) -> None:
    image = photo_image(flower, 32, 3)
    picture = image.to_pil_palette()
    for coding, coding_id in (("raw", 0), ("lzma", 2), ("context1", 3), ("context", 4), (None, 5)):
        buffer = io.BytesIO()
        options = {} if coding is None else {"coding": coding}
        picture.save(buffer, format="KMQ", **options)
        assert buffer.getvalue()[10] == coding_id
        reopened = Image.open(io.BytesIO(buffer.getvalue()))
        assert np.array_equal(np.asarray(reopened), image.labels)


def test_context_payload_too_short_for_the_declared_pixels_is_rejected_before_allocating() -> None:
    header = Header(width=40000, height=4000, channels=3, k=16, coding=3, payload_length=0)
    with pytest.raises(CodingError, match="cannot hold"):
        api.decode(coded_file(header, bytes(48), b"\x00" * 64), max_pixels=1 << 28)
    flat = Header(width=4000, height=4000, channels=3, k=16, coding=3, payload_length=0)
    cheapest = codings.CONTEXT1.encode(np.zeros(16_000_000, dtype=np.uint8), flat)  # one colour: the cheapest stream
    assert len(cheapest) >= flat.pixel_count // codings.CONTEXT_MIN_PIXELS_PER_BYTE
    assert int(api.decode(coded_file(flat, bytes(48), cheapest)).labels.max()) == 0


def test_the_light_names_module_lists_every_registered_coding_by_id() -> None:
    from kmcodec import names

    assert names.CODING_NAMES == tuple(coding.name for _, coding in sorted(codings.CODINGS.items()))
    assert tuple(codings.CODINGS) == tuple(range(len(names.CODING_NAMES)))
