"""Coding 6, context-columns (spec 5.5): the banded context coder on the transposed label image.

The kernel's transpose against numpy; round trips through the API and the codings on real
quantized images and odd shapes, checked against a decoder written from the spec (coding 6's
payload is its model byte and then a coding-4 or coding-5 payload of the transposed image);
every rejection of a malformed payload; auto's choice of orientation; and the CLI and the
Pillow plugin writing and reading coding 6.
"""

from __future__ import annotations

import dataclasses
import io
import json
import struct
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

import kmcodec
from kmcodec import api, banded, codings
from kmcodec.bitpack import label_bits, label_dtype
from kmcodec.cli import main as cli_main
from kmcodec.container import HEADER_SIZE, Header
from kmcodec.errors import CodingError
from kmcodec.image import KMQImage

from conftest import assert_decodes_as_the_reference_does, damaged_stream, file_with, gnome_background, skimage_image
from context_reference import StreamError, decode_columns
from test_codings import labels_from_photo

pytestmark = pytest.mark.skipif(codings._ctxcoder is None, reason="kmcodec._ctxcoder not built (python setup.py build_ext --inplace)")

COLUMNS = codings.CONTEXT_COLUMNS
MODELS = (codings.BAND_MODEL, codings.JOINT_BAND_MODEL)


def header_for(labels: np.ndarray, k: int, coding: int = COLUMNS.id) -> Header:
    height, width = labels.shape
    return Header(width=width, height=height, channels=3, k=k, coding=coding, payload_length=0)


def flat(labels: np.ndarray, k: int) -> np.ndarray:
    return np.ascontiguousarray(labels.reshape(-1), dtype=label_dtype(label_bits(k)))


def columns_payload(labels: np.ndarray, k: int, model: int) -> bytes:
    """Coding 6 with a chosen model (the reference encoder keeps the smaller where it codes both)."""
    return codings._encode_columns(flat(labels, k), header_for(labels, k), model)


def written_by_columns(data: bytes) -> bool:
    """Whether a file's context payload codes the image by columns: coding 6, or coding 7 with orientation 1."""
    if data[10] == COLUMNS.id:
        return True
    if data[10] == codings.CONTEXT3.id:
        return payload_of(data)[0] == codings.BY_COLUMNS
    assert data[10] in (codings.CONTEXT.id, codings.CONTEXT2.id)
    return False


def payload_of(data: bytes) -> bytes:
    """The payload section of a .kmq file (after the header and palette, before the trailer)."""
    channels, k = data[9], struct.unpack(">I", data[20:24])[0]
    return data[HEADER_SIZE + channels * k : -4]


def vertical_labels(height: int, width: int, k: int, noise: float, seed: int = 7) -> np.ndarray:
    """Labels that repeat down the columns: a random label per column, every column stepping by one every 16 rows
    (a shading, as across the stripes of gnome's wood photo), and `noise` of the pixels random. By columns it
    codes 5-12 % smaller than by rows at k = 16 and 2 % noise; its transpose, horizontal structure, the reverse."""
    rng = np.random.default_rng(seed)
    labels = (rng.integers(0, k, width)[None, :] + np.arange(height)[:, None] // 16) % k
    noisy = rng.random((height, width)) < noise
    labels[noisy] = rng.integers(0, k, int(noisy.sum()))
    return labels.astype(label_dtype(label_bits(k)))


# --- the kernel's transpose -------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int16])
@pytest.mark.parametrize("shape", [(1, 1), (1, 13), (13, 1), (7, 9), (8, 8), (9, 7), (17, 33), (64, 3), (100, 257)])
def test_transpose_matches_numpy(dtype, shape) -> None:
    rng = np.random.default_rng(sum(shape))
    info = np.iinfo(dtype)
    src = rng.integers(info.min, info.max, shape, endpoint=True).astype(dtype)
    dst = np.full(shape[::-1], 0x5A, dtype=dtype)  # a sentinel: every item must be written
    assert codings._ctxcoder.transpose(src, dst) is None
    assert np.array_equal(dst, src.T)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_transpose_writes_a_column_strip_of_a_larger_array_and_reads_one(dtype) -> None:
    """Coding 6's decoder writes each band's transposed columns into its strip of the image, the encoder reads
    one: rows of a strip are contiguous but a whole image row apart. Neighbouring columns stay untouched."""
    rng = np.random.default_rng(3)
    top = np.iinfo(dtype).max
    height, width, start, stop = 21, 75, 30, 41
    src = rng.integers(0, top, (stop - start, height), endpoint=True).astype(dtype)
    image = np.full((height, width), top, dtype=dtype)
    codings._ctxcoder.transpose(src, image[:, start:stop])
    assert np.array_equal(image[:, start:stop], src.T)
    assert (image[:, :start] == top).all() and (image[:, stop:] == top).all()

    whole = rng.integers(0, top, (height, width), endpoint=True).astype(dtype)
    band = np.zeros((stop - start, height), dtype=dtype)
    codings._ctxcoder.transpose(whole[:, start:stop], band)
    assert np.array_equal(band, whole[:, start:stop].T)

    wide = np.full((stop - start, height + 10), top, dtype=dtype)  # dst rows further apart than they are long
    codings._ctxcoder.transpose(whole[:, start:stop], wide[:, :height])
    assert np.array_equal(wide[:, :height], whole[:, start:stop].T) and (wide[:, height:] == top).all()


def _bad_transposes() -> dict[str, tuple[object, np.ndarray]]:
    u8 = np.arange(12, dtype=np.uint8).reshape(3, 4)
    return {
        "item size mismatch": (u8, np.zeros((4, 3), np.uint16)),
        "4-byte items": (u8.astype(np.uint32), np.zeros((4, 3), np.uint32)),
        "dst not the reversed shape": (u8, np.zeros((3, 4), np.uint8)),
        "dst one row short": (u8, np.zeros((3, 3), np.uint8)),
        "dst rows not contiguous": (u8, np.zeros((4, 6), np.uint8)[:, ::2]),
        "src rows not contiguous": (np.zeros((3, 8), np.uint8)[:, ::2], np.zeros((4, 3), np.uint8)),
        "src column-major": (np.asfortranarray(u8), np.zeros((4, 3), np.uint8)),
        "src 1-D": (np.arange(4, dtype=np.uint8), np.zeros((4, 1), np.uint8)),
        "src 3-D": (np.zeros((2, 3, 4), np.uint8), np.zeros((4, 3), np.uint8)),
        "dst 1-D": (u8, np.zeros(12, np.uint8)),
        "dst 3-D": (u8, np.zeros((4, 3, 1), np.uint8)),
    }


@pytest.mark.parametrize("case", list(_bad_transposes()))
def test_transpose_rejects_what_it_cannot_transpose_with_type_error(case: str) -> None:
    src, dst = _bad_transposes()[case]
    before = dst.copy()
    with pytest.raises(TypeError, match="dst must have src's item size|must be a 2-D array of 1- or 2-byte items"):
        codings._ctxcoder.transpose(src, dst)
    assert np.array_equal(dst, before)


def test_transpose_refuses_a_read_only_dst() -> None:
    """The buffer protocol refuses it (numpy says ValueError "read-only"): nothing is written behind it."""
    src = np.arange(12, dtype=np.uint8).reshape(3, 4)
    dst = np.zeros((4, 3), np.uint8)
    dst.flags.writeable = False
    with pytest.raises((TypeError, ValueError), match="read-only|writable"):
        codings._ctxcoder.transpose(src, dst)
    assert not dst.any()
    with pytest.raises((TypeError, ValueError, BufferError)):
        codings._ctxcoder.transpose(src, bytes(12))


# --- round trips --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def quantized(china: np.ndarray, flower: np.ndarray) -> dict[str, KMQImage]:
    """Real photos quantized by the codec (crops, for speed), and one turned a quarter so its structure runs the
    other way."""
    coffee = skimage_image("coffee")
    return {
        "china k=16": api.quantize(china[80:280, 100:400], 16),
        "flower k=2": api.quantize(flower[100:250, 200:420], 2),
        "coffee k=64": api.quantize(coffee[100:260, 150:390], 64),
        "china turned k=32": api.quantize(np.ascontiguousarray(np.rot90(china[150:330, 250:430])), 32),
    }


@pytest.mark.parametrize("name", ["china k=16", "flower k=2", "coffee k=64", "china turned k=32"])
def test_api_round_trips_context_columns_on_quantized_photos(quantized, name: str) -> None:
    image = quantized[name]
    data = api.encode(image, coding="context-columns")
    assert data[10] == COLUMNS.id
    payload = payload_of(data)
    by_model = {model: columns_payload(image.labels, image.k, model) for model in MODELS}
    assert payload in by_model.values() and payload[0] in MODELS
    assert len(payload) == min(map(len, by_model.values()))  # a small image: the smaller model is kept
    decoded = api.decode(data)
    assert decoded == image
    assert np.array_equal(decoded.to_array(), image.to_array())


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("k", [2, 16, 64, 256, 300, 1000, 65536])
def test_each_model_round_trips_through_the_codings_and_is_the_row_coding_of_the_transpose(
        china: np.ndarray, model: int, k: int) -> None:
    """Spec 5.5: after the model byte, the payload IS coding 4 (model 4) or 5 (model 5) of the transposed image."""
    labels = labels_from_photo(china[120:190, 230:330], k)  # 70 x 100, uint16 labels above k = 256
    header = header_for(labels, k)
    payload = columns_payload(labels, k, model)
    assert payload[0] == model
    transposed = np.ascontiguousarray(labels.T)
    row_coding = codings.ROW_CODING_OF_MODEL[model]
    assert payload[1:] == row_coding.encode(flat(transposed, k), header_for(transposed, k, row_coding.id))
    decoded = COLUMNS.decode(payload, dataclasses.replace(header, payload_length=len(payload)))
    assert decoded.dtype == label_dtype(label_bits(k))
    assert np.array_equal(decoded.reshape(labels.shape), labels)


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("k, shape", [(2, (23, 31)), (16, (40, 37)), (64, (19, 44)), (300, (21, 26))])
def test_reference_decoder_written_from_the_spec_agrees(china: np.ndarray, model: int, k: int, shape) -> None:
    height, width = shape
    labels = labels_from_photo(china[200 : 200 + height, 300 : 300 + width], k)
    payload = columns_payload(labels, k, model)
    assert decode_columns(payload, width, height, k) == labels.reshape(-1).tolist()
    with pytest.raises(StreamError):
        decode_columns(payload[:-1], width, height, k)


@pytest.mark.parametrize("k", [2, 5, 16, 300])
@pytest.mark.parametrize("shape", [(1, 1), (1, 57), (57, 1), (2, 3), (3, 200), (200, 3), (13, 8)])
def test_odd_shapes_round_trip_with_both_models(shape, k: int) -> None:
    rng = np.random.default_rng(k * 1000 + shape[0])
    labels = rng.integers(0, k, shape).astype(label_dtype(label_bits(k)))
    labels[:, : shape[1] // 2] = labels[:1, : shape[1] // 2]  # some columns constant, some noise
    header = header_for(labels, k)
    for model in MODELS:
        payload = columns_payload(labels, k, model)
        assert payload[0] == model
        assert struct.unpack(">H", payload[1:3])[0] == 1  # one band: the width of T is the height
        decoded = COLUMNS.decode(payload, dataclasses.replace(header, payload_length=len(payload)))
        assert np.array_equal(decoded.reshape(shape), labels)
    image = KMQImage(rng.integers(0, 256, (k, 3), dtype=np.uint8), labels)
    data = api.encode(image, coding="context-columns")
    assert data[10] == COLUMNS.id
    assert api.decode(data) == image


def test_k1_payload_is_empty_and_decodes_to_zeros() -> None:
    image = KMQImage(np.array([[9, 9, 9]], np.uint8), np.zeros((5, 6), np.uint8))
    data = api.encode(image, coding="context-columns")
    assert data[10] == COLUMNS.id and data[24:32] == bytes(8)  # payload_length 0
    assert api.decode(data) == image
    for model in MODELS:
        assert columns_payload(image.labels, 1, model) == b""


def test_k1_decodes_to_zeros_whatever_memory_it_gets() -> None:
    header = Header(width=300, height=200, channels=3, k=1, coding=COLUMNS.id, payload_length=0)
    for _ in range(3):
        junk = np.full(header.pixel_count, 7, np.uint8)  # freed memory the decoder's array may be given
        del junk
        decoded = COLUMNS.decode(b"", header)
        assert decoded.shape == (header.pixel_count,) and not decoded.any()


@pytest.fixture()
def small_bands(monkeypatch: pytest.MonkeyPatch) -> None:
    """Bands of 64 pixels instead of 2 MiP, so that a small image gets as many bands as the reference encoder
    gives a large one (and more than its width would allow)."""
    monkeypatch.setattr(banded, "PIXELS_PER_BAND", 64)


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("shape", [(200, 5), (50, 40), (30, 100)])
def test_bands_of_columns_are_capped_by_the_width_and_each_is_its_columns_alone(small_bands, china: np.ndarray,
                                                                                model: int, shape) -> None:
    """B = max(1, min(64, width, floor(n / PIXELS_PER_BAND))): a 5-wide image gets 5 bands although its pixels
    would want 15; band i holds columns floor(i * width / B) to floor((i + 1) * width / B) - 1, coded alone."""
    height, width = shape
    k = 16
    labels = labels_from_photo(china[100 : 100 + height, 200 : 200 + width], k)
    payload = columns_payload(labels, k, model)
    bands = struct.unpack(">H", payload[1:3])[0]
    assert bands == min(64, width, height * width // 64) == banded.band_count_for(height, width)
    lengths = struct.unpack(f">{bands}I", payload[3 : 3 + 4 * bands])
    offset = 3 + 4 * bands
    for (start, stop), length in zip(banded.band_rows(width, bands), lengths):
        alone = codings._ctxcoder.encode(np.ascontiguousarray(labels[:, start:stop].T), height, stop - start, k, model)
        assert payload[offset : offset + length] == alone
        offset += length
    assert offset == len(payload)
    header = dataclasses.replace(header_for(labels, k), payload_length=len(payload))
    for workers in (1, 2, 7):
        assert np.array_equal(COLUMNS.decode(payload, header, workers=workers).reshape(shape), labels)
    if height * width <= 2000:
        assert decode_columns(payload, width, height, k) == labels.reshape(-1).tolist()


def test_encoder_output_does_not_depend_on_the_number_of_threads(small_bands, monkeypatch, flower: np.ndarray) -> None:
    labels = labels_from_photo(flower[:120, :90], 64)
    payloads = set()
    for cores in (1, 2, 5):
        monkeypatch.setattr(banded, "available_cores", lambda cores=cores: cores)
        payloads.add(columns_payload(labels, 64, codings.JOINT_BAND_MODEL))
    assert len(payloads) == 1
    assert struct.unpack(">H", next(iter(payloads))[1:3])[0] == 64  # 90 columns, 10800 labels: the 64-band cap


# --- malformed payloads ------------------------------------------------------------------------------------------


def _table(bands: int, lengths: list[int]) -> bytes:
    return struct.pack(f">H{len(lengths)}I", bands, *lengths)


@pytest.fixture(scope="module")
def three_bands(china: np.ndarray) -> tuple[Header, bytes, np.ndarray]:
    """A tall 12 x 40 image (more rows than columns: a band count bounded by the height alone would pass where the
    width must refuse it) coded by columns in 3 bands, of columns 0-3, 4-7 and 8-11."""
    labels = labels_from_photo(china[40:80, 90:102], 16)
    transposed = np.ascontiguousarray(labels.T)
    rest = banded.encode_bands(flat(transposed, 16), 40, 12,
                               lambda band, rows: codings._ctxcoder.encode(band, 40, rows, 16, codings.BAND_MODEL),
                               bands=3)
    payload = bytes([codings.BAND_MODEL]) + rest
    header = header_for(labels, 16)
    assert np.array_equal(api.decode(file_with(header, payload)).labels, labels)
    return header, payload, labels


def _malformed(header: Header, payload: bytes) -> dict[str, bytes]:
    model, rest = payload[:1], payload[1:]
    (bands,) = struct.unpack(">H", rest[:2])
    lengths = list(struct.unpack(f">{bands}I", rest[2 : 2 + 4 * bands]))
    streams = rest[2 + 4 * bands :]
    return {
        "empty": b"",
        "model 0": b"\x00" + rest,
        "model 3": b"\x03" + rest,
        "model 6": b"\x06" + rest,
        "model 255": b"\xff" + rest,
        "the model byte alone": model,
        "one byte of band count": model + rest[:1],
        "zero bands": model + _table(0, []) + streams,
        "more bands than columns": model + _table(header.width + 1, [0] * (header.width + 1)),
        "more than 64 bands": model + _table(65, [0] * 65),
        "table cut short": model + rest[: 2 + 4 * bands - 1],
        "lengths too long": model + _table(bands, [lengths[0] + 1, *lengths[1:]]) + streams,
        "lengths too short": model + _table(bands, [lengths[0] - 1, *lengths[1:]]) + streams,
        "a band stream of 3 bytes": model + _table(bands, [3, *lengths[1:]]) + streams[:3] + streams[lengths[0]:],
        "the last band cut short": model + _table(bands, [*lengths[:-1], lengths[-1] - 1]) + streams[:-1],
        "bytes after the last band": payload + b"\x00",
    }


MALFORMED = ["empty", "model 0", "model 3", "model 6", "model 255", "the model byte alone", "one byte of band count",
             "zero bands", "more bands than columns", "more than 64 bands", "table cut short", "lengths too long",
             "lengths too short", "a band stream of 3 bytes", "the last band cut short", "bytes after the last band"]


@pytest.mark.parametrize("defect", MALFORMED)
def test_malformed_payloads_are_coding_errors(three_bands, defect: str) -> None:
    header, payload, _ = three_bands
    bad = _malformed(header, payload)[defect]
    if defect == "more than 64 bands":  # needs more than 64 columns to be about the 64 and not the width
        header = dataclasses.replace(header, width=70, height=3)
    with pytest.raises(CodingError):
        api.decode(file_with(header, bad))
    with pytest.raises(StreamError):  # the spec-only reference decoder rejects it too
        decode_columns(bad, header.width, header.height, header.k)


@pytest.mark.parametrize("defect, message", [
    ("empty", r"^payload: a context-columns payload is empty; it starts with its model byte \(4 or 5\)$"),
    ("model 3", r"^payload: model 3 at payload offset 0 is not 4 or 5$"),
    ("model 255", r"^payload: model 255 at payload offset 0 is not 4 or 5$"),
    ("zero bands", r"band count 0 at payload offset 1 is not between 1 and 12 .*the width 12"),
    ("more bands than columns", r"band count 13 at payload offset 1 is not between 1 and 12 .*the width 12"),
    ("lengths too long", r"band table declares \d+ bytes of streams"),
    ("a band stream of 3 bytes", r"^payload: band 0 \(columns 0-3\): .*"),
    ("the last band cut short", r"^payload: band 2 \(columns 8-11\): .*ends early"),
    ("bytes after the last band", r"band table declares \d+ bytes of streams"),
])
def test_rejections_say_what_is_wrong_and_where(three_bands, defect: str, message: str) -> None:
    header, payload, _ = three_bands
    with pytest.raises(CodingError, match=message) as caught:
        COLUMNS.decode(_malformed(header, payload)[defect], header)
    assert "rows" not in str(caught.value)  # coding 6's bands are bands of columns
    with pytest.raises(CodingError, match=message):  # decode() passes the coding's message on as it is
        api.decode(file_with(header, _malformed(header, payload)[defect]))


def test_more_than_64_bands_is_refused_on_a_wide_image() -> None:
    header = Header(width=70, height=3, channels=3, k=16, coding=COLUMNS.id, payload_length=0)
    with pytest.raises(CodingError, match="band count 65 at payload offset 1 is not between 1 and 64"):
        COLUMNS.decode(b"\x05" + _table(65, [0] * 65), header)


def test_k1_payload_that_is_not_empty_is_rejected() -> None:
    header = Header(width=6, height=5, channels=3, k=1, coding=COLUMNS.id, payload_length=0)
    for payload in (b"\x04", b"\x05\x00\x01\x00\x00\x00\x00"):
        with pytest.raises(CodingError, match="k = 1 context-columns payload must be empty"):
            api.decode(file_with(header, payload))


def test_band_streams_too_short_for_their_columns_are_rejected_before_allocating() -> None:
    header = Header(width=40_000, height=4_000, channels=3, k=16, coding=COLUMNS.id, payload_length=0)
    payload = b"\x04" + _table(2, [8, 8]) + bytes(16)  # 160 million labels in 16 bytes: impossible
    with pytest.raises(CodingError, match=r"band 0 \(columns 0-19999\) has a 8-byte stream, too short"):
        api.decode(file_with(header, payload), max_pixels=1 << 28)


def test_a_band_that_codes_more_labels_than_its_columns_hold_is_rejected() -> None:
    big = Header(width=1000, height=1000, channels=3, k=16, coding=COLUMNS.id, payload_length=0)
    payload = codings._encode_columns(np.zeros(big.pixel_count, np.uint8), big, codings.BAND_MODEL)
    small = dataclasses.replace(big, width=10, height=10)
    with pytest.raises(CodingError, match=r"band 0 \(columns 0-9\).*left over"):
        api.decode(file_with(small, payload))


@pytest.mark.parametrize("defect", ["the model byte alone", "table cut short"])
def test_length_messages_count_the_model_byte(three_bands, defect: str) -> None:
    """The byte counts in a message are those of the coding-6 payload, whose band table starts at offset 1:
    the model byte alone is a payload of 1 byte (not 0) with no band count; a 3-band table ends at offset 15."""
    header, payload, _ = three_bands
    bad = _malformed(header, payload)[defect]
    with pytest.raises(CodingError) as caught:
        COLUMNS.decode(bad, header)
    message = str(caught.value)
    if defect == "the model byte alone":
        assert "payload of 1 byte" in message, message
    else:
        assert f"needs {1 + 2 + 4 * 3} bytes" in message and f"has {len(bad)}" in message, message


@settings(max_examples=60, deadline=4000, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_damaged_payloads_decode_or_raise_coding_as_the_reference_does(three_bands, data) -> None:
    header, payload, labels = three_bands
    assert_decodes_as_the_reference_does(header, damaged_stream(data, payload), labels.shape, decode_columns)


# --- auto ---------------------------------------------------------------------------------------------------------


def explicit_payload_sizes(image: KMQImage) -> dict[tuple[int, int | None], int]:
    """The payload size of every coding auto may write, keyed by (coding id, model): rows with models 4 and 5,
    columns with models 4 and 5, deflate, lzma and raw."""
    sizes = {(coding.id, None): len(payload_of(api.encode(image, coding=coding.name)))
             for coding in (codings.RAW, codings.DEFLATE, codings.LZMA, codings.CONTEXT, codings.CONTEXT2)}
    for model in MODELS:
        sizes[(COLUMNS.id, model)] = len(columns_payload(image.labels, image.k, model))
    return sizes


@pytest.mark.parametrize("name", ["china k=16", "flower k=2", "coffee k=64", "china turned k=32"])
def test_auto_on_small_photos_is_the_smallest_of_every_coding(quantized, name: str) -> None:
    image = quantized[name]
    assert image.labels.size <= codings.AUTO_BOTH_CONTEXTS_MAX_LABELS
    sizes = explicit_payload_sizes(image)
    data = api.encode(image)
    payload = payload_of(data)
    assert len(payload) == min(sizes.values()), sizes
    (best_id, _), _ = min(sizes.items(), key=lambda item: (item[1], item[0][0]))  # ties to the lower coding id
    assert data[10] == best_id, sizes
    assert api.decode(data) == image


def test_auto_finds_columns_on_a_real_photo_turned_a_quarter(quantized) -> None:
    """Coding 6 of an image is coding 4/5 of its transpose plus one byte: whichever orientation wins on a photo,
    auto on the photo's transpose writes the other one, one byte apart (where the two orientations differ by more
    than two bytes, as they do on any photo)."""
    image = quantized["china k=16"]
    turned = KMQImage(image.palette, np.ascontiguousarray(image.labels.T))
    data, turned_data = api.encode(image), api.encode(turned)
    assert (data[10] == COLUMNS.id) != (turned_data[10] == COLUMNS.id)
    assert abs(len(payload_of(data)) - len(payload_of(turned_data))) == 1
    assert api.decode(turned_data) == turned


@pytest.mark.parametrize("shape", [(96, 160), (768, 768)])
def test_auto_codes_vertical_structure_by_columns_and_horizontal_by_rows(shape) -> None:
    """On both sides of AUTO_BOTH_CONTEXTS_MAX_LABELS: small images code both orientations, large ones
    (768 x 768 = 589,824 labels) let prefers_columns pick one from a centred window."""
    k = 16
    vertical = vertical_labels(*shape, k, noise=0.02)
    palette = np.random.default_rng(0).integers(0, 256, (k, 3), dtype=np.uint8)
    large = vertical.size > codings.AUTO_BOTH_CONTEXTS_MAX_LABELS
    assert large == (shape == (768, 768))
    for labels, by_columns in ((vertical, True), (np.ascontiguousarray(vertical.T), False)):
        image = KMQImage(palette, labels)
        header = header_for(labels, k)
        data = api.encode(image)
        assert written_by_columns(data) == by_columns
        if large:
            (model,) = codings.context3_models(flat(labels, k), header)
            assert model == codings.CLIMB_MODEL  # k = 16: model 6 on large images
            assert data[10] == codings.CONTEXT3.id and payload_of(data)[1] == model
            assert codings.prefers_columns(flat(labels, k), header, model) == by_columns
        assert api.decode(data) == image


@pytest.mark.parametrize("centre_by_columns", [True, False])
def test_prefers_columns_judges_the_centre_of_the_image(centre_by_columns: bool) -> None:
    """The window is centred: vertical structure in the middle 384 x 384 of a 768 x 768 image and horizontal
    around it make auto code by columns (the window is the middle 192 x 192), and the other way round by rows."""
    k = 16
    vertical = vertical_labels(768, 768, k, noise=0.02)
    inside, outside = (vertical, vertical.T) if centre_by_columns else (vertical.T, vertical)
    labels = np.ascontiguousarray(outside)
    labels[192:576, 192:576] = inside[192:576, 192:576]
    header = header_for(labels, k)
    assert codings.prefers_columns(flat(labels, k), header, codings.CLIMB_MODEL) == centre_by_columns
    data = api.encode(KMQImage(np.zeros((k, 3), np.uint8), labels))
    assert written_by_columns(data) == centre_by_columns


@pytest.fixture(scope="module")
def wood_1mp() -> np.ndarray:
    """gnome's wood photo (vertical stripes) reduced to 1024 x 1024: over 2^19 pixels."""
    with Image.open(gnome_background("wood-l.webp")) as picture:
        return np.asarray(picture.convert("RGB").reduce(4))


@pytest.mark.parametrize("k", [16, 64, 256])
def test_auto_on_a_large_photo_follows_prefers_columns_both_ways(wood_1mp: np.ndarray, k: int) -> None:
    """Over 2^19 pixels auto codes one model (6 up to 6 label bits, else 4, or 7 where escapes abound) in coding 7, in the orientation
    prefers_columns picks, and writes exactly that payload (in coding 4 or 6 when it is model 4 in one band, which
    they hold in fewer bytes). The window is square here (1024^2 / 16 = 256^2 labels), so on the transposed image
    prefers_columns sees the window's orientations swapped and must answer the other way."""
    labels = api.quantize(wood_1mp, k).labels if k == 16 else labels_from_photo(wood_1mp, k)
    palette = np.random.default_rng(k).integers(0, 256, (k, 3), dtype=np.uint8)
    choices = []
    for grid in (labels, np.ascontiguousarray(labels.T)):
        header = header_for(grid, k)
        assert header.pixel_count > codings.AUTO_BOTH_CONTEXTS_MAX_LABELS
        (model,) = codings.context3_models(flat(grid, k), header)
        escapes = codings.escape_share(flat(grid, k), header) >= codings.ESCAPE_FIRST_MIN_SHARE
        assert model == (codings.CLIMB_MODEL if k <= 64 else codings.ESCAPE_FIRST_MODEL if escapes else codings.BAND_MODEL)
        assert escapes == (k == 256)  # luma at 256 levels: over a quarter of labels none of their neighbours'
        prefers = codings.prefers_columns(flat(grid, k), header, model)
        image = KMQImage(palette, grid)
        data = api.encode(image)
        coding, payload = codings.shortest_form(codings._encode_context3(flat(grid, k), header, model, prefers), header)
        assert (data[10], payload_of(data)) == (coding.id, payload)
        # 1 MP: one band, which codings 4 and 6 hold for model 4; models 6 and 7 stay coding 7
        assert coding is (COLUMNS if prefers else codings.CONTEXT) if model == codings.BAND_MODEL else codings.CONTEXT3
        assert written_by_columns(data) == prefers
        explicit = payload_of(api.encode(image, coding="context-columns"))
        assert explicit[0] == (codings.JOINT_BAND_MODEL if k <= 64 else codings.BAND_MODEL)  # the label-width rule
        choices.append(prefers)
    assert choices[0] != choices[1]


# --- the command line and Pillow ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def photo_png(tmp_path_factory: pytest.TempPathFactory, china: np.ndarray) -> Path:
    path = tmp_path_factory.mktemp("columns") / "china-crop.png"
    Image.fromarray(china[100:220, 150:310]).save(path)
    return path


def test_cli_encodes_context_columns_and_info_and_decode_read_it(photo_png: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "c.kmq"
    assert cli_main(["encode", str(photo_png), str(out), "-k", "8", "--coding", "context-columns", "-q"]) == 0
    data = out.read_bytes()
    assert data[10] == COLUMNS.id
    assert data == kmcodec.encode(photo_png, 8, coding="context-columns")  # the CLI's defaults are the API's
    capsys.readouterr()
    assert cli_main(["info", str(out)]) == 0
    assert "format:         KMQ version 1, coding 6 (context-columns)" in capsys.readouterr().out.splitlines()
    assert cli_main(["info", str(out), "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert (record["coding"], record["coding_id"]) == ("context-columns", 6)
    png = tmp_path / "c.png"
    assert cli_main(["decode", str(out), str(png)]) == 0
    with Image.open(png) as decoded:
        assert np.array_equal(np.asarray(decoded.convert("RGB")), kmcodec.read(out).to_array())
    assert kmcodec.read(out) == kmcodec.quantize(photo_png, 8)


def test_pillow_opens_a_coding_6_file(quantized, tmp_path: Path) -> None:
    image = quantized["coffee k=64"]
    path = tmp_path / "c.kmq"
    kmcodec.write(path, image, coding="context-columns")
    assert path.read_bytes()[10] == COLUMNS.id
    with Image.open(path) as picture:
        assert picture.format == "KMQ" and picture.mode == "P" and picture.info["kmq_coding"] == COLUMNS.id
        assert np.array_equal(np.asarray(picture), image.labels)
        assert np.array_equal(np.asarray(picture.convert("RGB")), image.to_array())
    with Image.open(path) as picture:
        picture.verify()


def test_pillow_opens_a_coding_6_file_of_more_than_256_colours(china: np.ndarray) -> None:
    labels = labels_from_photo(china[60:120, 80:170], 1000)
    image = KMQImage(np.random.default_rng(2).integers(0, 256, (1000, 4), dtype=np.uint8), labels)
    data = api.encode(image, coding="context-columns")
    with Image.open(io.BytesIO(data)) as picture:
        assert picture.mode == "RGBA"
        assert np.array_equal(np.asarray(picture), image.to_array())


def test_pillow_saves_with_coding_context_columns(china: np.ndarray) -> None:
    crop = Image.fromarray(china[150:230, 250:370])
    buffer = io.BytesIO()
    crop.save(buffer, format="KMQ", colors=16, coding="context-columns")
    assert buffer.getvalue()[10] == COLUMNS.id
    assert kmcodec.decode(buffer.getvalue()) == kmcodec.quantize(crop, 16)
    palette_image = crop.quantize(24)
    buffer = io.BytesIO()
    palette_image.save(buffer, format="KMQ", coding="context-columns")
    assert buffer.getvalue()[10] == COLUMNS.id
    with Image.open(io.BytesIO(buffer.getvalue())) as reopened:
        assert np.array_equal(np.asarray(reopened), np.asarray(palette_image))
