"""Coding 6 (context-columns, spec 5.5) against the pure-Python decoder written from the spec.

tests/context_reference.py's decode_columns reads the model byte, the band table with the
transposed dimensions (at most `width` bands, band i holding columns floor(i*width/B) up to
floor((i+1)*width/B)), decodes every band of the transposed image T with model 4 or 5 and
transposes it back. Here it must agree with the compiled path (kmcodec.codings) on small
label images of both models, many label widths and shapes, single- and multi-band payloads,
and it must reject what the spec rejects, as the compiled decoder does. Small images only:
the reference decoder takes tens of microseconds a label.
"""

from __future__ import annotations

import dataclasses
import struct
from pathlib import Path

import numpy as np
import pytest

from kmcodec import api, banded, codings
from kmcodec.bitpack import label_bits, label_dtype
from kmcodec.container import Header, build_file
from kmcodec.errors import CodingError, KMQError
from kmcodec.image import KMQImage

from context_reference import StreamError, decode_columns, decode_context
from test_codings import labels_from_photo

pytestmark = pytest.mark.skipif(codings._ctxcoder is None, reason="kmcodec._ctxcoder not built (python setup.py build_ext --inplace)")

MODELS = (codings.BAND_MODEL, codings.JOINT_BAND_MODEL)


def header_for(labels: np.ndarray, k: int) -> Header:
    height, width = labels.shape
    return Header(width=width, height=height, channels=3, k=k, coding=codings.CONTEXT_COLUMNS.id, payload_length=0)


def photo_labels(china: np.ndarray, k: int, width: int, height: int, top: int = 200, left: int = 260) -> np.ndarray:
    """A width x height crop of the photo as labels < k, with the label width's dtype (uint16 for k > 256)."""
    labels = labels_from_photo(china[top : top + height, left : left + width], k)
    assert labels.shape == (height, width) and len(np.unique(labels)) > 1  # something to code
    return labels


def columns_payload(labels: np.ndarray, k: int, model: int, bands: int) -> bytes:
    """A coding-6 payload with a chosen band count, built as codings._encode_columns builds it (the reference
    encoder uses one band below 2 MiP): the model byte, then the bands of columns of the transposed image."""
    height, width = labels.shape
    grid = np.ascontiguousarray(labels, dtype=label_dtype(label_bits(k)))

    def code_columns(start: int, stop: int) -> bytes:
        band = np.empty((stop - start, height), dtype=grid.dtype)
        codings._ctxcoder.transpose(grid[:, start:stop], band)
        return codings._ctxcoder.encode(band, height, stop - start, k, model)

    return bytes([model]) + banded.encode_band_streams(height, width, code_columns, bands=bands, workers=2)


def file_with(header: Header, payload: bytes) -> bytes:
    return build_file(dataclasses.replace(header, payload_length=len(payload)), bytes(3 * header.k), payload)


def row_payload(labels: np.ndarray, k: int, model: int, bands: int | None = None) -> bytes:
    """The coding-4 (model 4) or coding-5 (model 5) payload of a label image, by rows, with the kernel."""
    height, width = labels.shape
    flat = np.ascontiguousarray(labels.reshape(-1), dtype=label_dtype(label_bits(k)))
    return banded.encode_bands(flat, width, height, lambda band, rows: codings._ctxcoder.encode(band, width, rows, k, model),
                               bands=bands, workers=1)


#: (k, width, height): every label width the brief asks for, 1-bit to 10-bit (k = 1000 is uint16), square and
#: not, one row, one column, and width < height (the transposed image is wider than it is high).
SHAPES = [
    (2, 31, 17),
    (16, 23, 40),   # width < height
    (17, 1, 60),    # one column: T is one row of 60 labels
    (64, 60, 1),    # one row: T is one column of 60 labels
    (256, 29, 33),
    (1000, 21, 27),  # 10-bit labels in uint16, deep tree nodes
]


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("k, width, height", SHAPES)
def test_reference_decodes_the_kernels_coding_6_payloads(china: np.ndarray, k: int, width: int, height: int,
                                                          model: int) -> None:
    labels = photo_labels(china, k, width, height)
    header = header_for(labels, k)
    flat = labels.reshape(-1)
    payload = codings._encode_columns(flat, header, model)
    assert payload[0] == model
    assert struct.unpack(">H", payload[1:3])[0] == 1  # the reference encoder's band count for a small image
    assert decode_columns(payload, width, height, k) == flat.tolist()
    decoded = codings.CONTEXT_COLUMNS.decode(payload, header)
    assert decoded.dtype == label_dtype(label_bits(k)) and np.array_equal(decoded, flat)
    # the rest of the payload is the coding-4/5 payload of the transposed image, byte for byte (spec 5.5)
    assert payload[1:] == row_payload(np.ascontiguousarray(labels.T), k, model)


@pytest.mark.parametrize("k, width, height", [(16, 23, 40), (1000, 21, 27), (64, 33, 5)])
def test_the_model_byte_decides_how_the_bands_are_read(china: np.ndarray, k: int, width: int, height: int) -> None:
    """A coding-6 payload read with the other model gives other labels or a rejection, in both decoders alike:
    the model byte is not decorative. (Not on a one-row or one-column image: where W = N = NW = NE every
    context of both models is W's, and the two models code alike.)"""
    labels = photo_labels(china, k, width, height)
    header = header_for(labels, k)
    for model, other in ((4, 5), (5, 4)):
        payload = codings._encode_columns(labels.reshape(-1), header, model)
        swapped = bytes([other]) + payload[1:]
        try:
            reference = decode_columns(swapped, width, height, k)
        except StreamError:
            with pytest.raises(CodingError):
                codings.CONTEXT_COLUMNS.decode(swapped, header)
        else:
            assert reference != labels.reshape(-1).tolist()
            assert codings.CONTEXT_COLUMNS.decode(swapped, header).tolist() == reference


@pytest.mark.parametrize("k, width, height", [(16, 40, 23), (256, 33, 29)])
def test_columns_and_rows_are_different_payloads_of_the_same_labels(china: np.ndarray, k: int, width: int,
                                                                    height: int) -> None:
    """The rest of a coding-6 payload is not the row coding's: read as coding 4/5 of the image (the dimensions
    not transposed) it does not give the labels, while read as coding 6 it does."""
    labels = photo_labels(china, k, width, height)
    header = header_for(labels, k)
    for model in MODELS:
        payload = codings._encode_columns(labels.reshape(-1), header, model)
        assert payload[1:] != row_payload(labels, k, model)
        try:
            by_rows = decode_context(payload[7:], width, height, k, model=model)  # one band: the stream after the table
        except StreamError:
            by_rows = None
        assert by_rows != labels.reshape(-1).tolist()
        assert decode_columns(payload, width, height, k) == labels.reshape(-1).tolist()


def test_api_encode_of_context_columns_is_read_by_the_reference(china: np.ndarray) -> None:
    """A whole .kmq file of coding 6 as kmcodec writes it (the model auto would weigh, the smaller payload)."""
    for k, width, height in ((16, 37, 21), (300, 19, 24)):
        labels = photo_labels(china, k, width, height, top=100, left=150)
        palette = np.arange(3 * k, dtype=np.int64).reshape(k, 3) % 256
        image = KMQImage(palette.astype(np.uint8), labels)
        data = api.encode(image, coding="context-columns")
        assert data[10] == codings.CONTEXT_COLUMNS.id
        length = struct.unpack(">Q", data[24:32])[0]
        payload = data[36 + 3 * k : 36 + 3 * k + length]
        assert payload[0] in MODELS
        assert decode_columns(payload, width, height, k) == labels.reshape(-1).tolist()
        assert api.decode(data) == image


#: (k, width, height, bands): B > 1 up to B = width (every band one column of the image, one row of T), on
#: width < height (where B = width is far below the height), one row, one column's worth of bands, and B = 64.
MULTI_BAND = [
    (2, 5, 30, 5),       # B = width < height: five bands of one column each
    (16, 23, 40, 3),     # bands of 7, 8 and 8 columns
    (17, 37, 9, 4),
    (64, 60, 1, 60),     # one row: 60 bands of one label each
    (64, 9, 9, 9),
    (256, 70, 6, 64),    # the most bands: 64 of 70 columns, some of two columns
    (1000, 13, 11, 2),   # uint16
]


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("k, width, height, bands", MULTI_BAND)
def test_reference_decodes_multi_band_payloads(china: np.ndarray, k: int, width: int, height: int, bands: int,
                                               model: int) -> None:
    labels = photo_labels(china, k, width, height)
    header = header_for(labels, k)
    payload = columns_payload(labels, k, model, bands)
    assert payload[0] == model and struct.unpack(">H", payload[1:3])[0] == bands
    assert decode_columns(payload, width, height, k) == labels.reshape(-1).tolist()
    assert np.array_equal(codings.CONTEXT_COLUMNS.decode(payload, header), labels.reshape(-1))
    assert np.array_equal(api.decode(file_with(header, payload)).labels, labels)


def test_each_band_is_its_columns_transposed_and_coded_alone(china: np.ndarray) -> None:
    """Band i codes columns floor(i*width/B) to floor((i+1)*width/B) - 1 of the image, transposed, with fresh
    models (spec 5.5): the columns floor(i*31/4), here 0-6, 7-14, 15-22, 23-30."""
    k, width, height, bands = 16, 31, 12, 4
    labels = photo_labels(china, k, width, height)
    for model in MODELS:
        payload = columns_payload(labels, k, model, bands)
        lengths = struct.unpack(f">{bands}I", payload[3 : 3 + 4 * bands])
        offset = 3 + 4 * bands
        edges = [0, 7, 15, 23, 31]
        for (start, stop), length in zip(zip(edges, edges[1:]), lengths):
            columns = np.ascontiguousarray(labels[:, start:stop].T)
            assert payload[offset : offset + length] == codings._ctxcoder.encode(columns, height, stop - start, k, model)
            offset += length
        assert offset == len(payload)


def test_k_1_payload_is_empty() -> None:
    labels = np.zeros((5, 7), np.uint8)
    header = header_for(labels, 1)
    for model in MODELS:
        assert codings._encode_columns(labels.reshape(-1), header, model) == b""
    assert codings.CONTEXT_COLUMNS.encode(labels.reshape(-1), header) == b""
    assert decode_columns(b"", 7, 5, 1) == [0] * 35
    assert codings.CONTEXT_COLUMNS.decode(b"", header).tolist() == [0] * 35


def _table(bands: int, lengths: list[int]) -> bytes:
    return struct.pack(f">H{len(lengths)}I", bands, *lengths)


@pytest.fixture(scope="module")
def three_bands(china: np.ndarray) -> dict[str, object]:
    """A 10 x 30 image (width < height) at k = 16, coded by columns in 3 bands with model 5."""
    labels = photo_labels(china, 16, 10, 30)
    return {"labels": labels, "header": header_for(labels, 16), "payload": columns_payload(labels, 16, 5, 3)}


def _malformed(sample: dict[str, object]) -> dict[str, tuple[Header, bytes]]:
    """One-defect coding-6 payloads (spec 5.5 and the rules of 5.3 it takes over, with T's dimensions)."""
    header, payload, labels = sample["header"], sample["payload"], sample["labels"]
    model, rest = payload[0], payload[1:]
    lengths = list(struct.unpack(">3I", rest[2:14]))
    streams = rest[14:]
    first, second = streams[: lengths[0]], streams[lengths[0] : lengths[0] + lengths[1]]
    last = streams[lengths[0] + lengths[1] :]
    k1 = dataclasses.replace(header, k=1)
    by_rows = row_payload(labels, 16, 5, bands=header.width + 1)  # valid coding 5 by rows: 11 bands <= 30 rows
    wide = dataclasses.replace(header, width=70)
    return {
        "k = 1, one byte": (k1, b"\x04"),
        "k = 1, model byte and a stream": (k1, bytes([4]) + _table(1, [4]) + bytes(4)),
        "k = 16, empty": (header, b""),
        "model byte 0": (header, b"\x00" + rest),
        "model byte 3": (header, b"\x03" + rest),
        "model byte 6": (header, b"\x06" + rest),
        "model byte 255": (header, b"\xff" + rest),
        "model byte only": (header, bytes([model])),
        "model byte and one byte": (header, bytes([model]) + rest[:1]),
        "zero bands": (header, bytes([model]) + _table(0, [])),  # no table, no streams: only B is wrong
        "zero bands before the streams": (header, bytes([model]) + _table(0, []) + streams),
        "more bands than columns, fewer than rows": (header, bytes([5]) + by_rows),
        "more than 64 bands": (wide, bytes([model]) + _table(65, [4] * 65) + bytes(4 * 65)),
        "table cut short": (header, payload[:14]),
        "lengths too long": (header, bytes([model]) + _table(3, [lengths[0], lengths[1] + 1, lengths[2]]) + streams),
        "lengths too short": (header, bytes([model]) + _table(3, [lengths[0], lengths[1] - 1, lengths[2]]) + streams),
        "last band stream ends early": (header, bytes([model]) + _table(3, [*lengths[:2], lengths[2] - 1]) + streams[:-1]),
        "a band stream of 3 bytes": (header, bytes([model]) + _table(3, [lengths[0], 3, lengths[2]]) + first + second[:3] + last),
        "a byte left over in a band": (header, bytes([model]) + _table(3, [lengths[0] + 1, *lengths[1:]]) + first + b"\x00"
                                       + second + last),
        "a byte after the last band": (header, payload + b"\x00"),
    }


MALFORMED = ["k = 1, one byte", "k = 1, model byte and a stream", "k = 16, empty", "model byte 0", "model byte 3",
             "model byte 6", "model byte 255", "model byte only", "model byte and one byte", "zero bands",
             "zero bands before the streams",
             "more bands than columns, fewer than rows", "more than 64 bands", "table cut short", "lengths too long",
             "lengths too short", "last band stream ends early", "a band stream of 3 bytes", "a byte left over in a band",
             "a byte after the last band"]


def test_the_malformed_list_is_complete(three_bands) -> None:
    assert sorted(_malformed(three_bands)) == sorted(MALFORMED)


def test_the_three_band_sample_is_valid(three_bands) -> None:
    header, payload, labels = three_bands["header"], three_bands["payload"], three_bands["labels"]
    assert decode_columns(payload, header.width, header.height, header.k) == labels.reshape(-1).tolist()
    assert np.array_equal(api.decode(file_with(header, payload)).labels, labels)


@pytest.mark.parametrize("defect", MALFORMED)
def test_malformed_payloads_are_rejected_by_both_decoders(three_bands, defect: str) -> None:
    header, bad = _malformed(three_bands)[defect]
    with pytest.raises(StreamError):
        decode_columns(bad, header.width, header.height, header.k)
    with pytest.raises(CodingError):
        codings.CONTEXT_COLUMNS.decode(bad, header)
    with pytest.raises(CodingError):
        api.decode(file_with(header, bad))


def test_the_band_count_is_bounded_by_the_width_not_the_height(three_bands) -> None:
    """The payload after the model byte of 'more bands than columns' is a valid coding-5 payload of the image by
    rows (11 bands of 30 rows): it is rejected only because coding 6 bounds B by the width."""
    header, labels = three_bands["header"], three_bands["labels"]
    bad = _malformed(three_bands)["more bands than columns, fewer than rows"][1]
    assert struct.unpack(">H", bad[1:3])[0] == header.width + 1 <= header.height
    rows_header = dataclasses.replace(header, coding=codings.CONTEXT2.id)
    assert np.array_equal(codings.CONTEXT2.decode(bad[1:], rows_header), labels.reshape(-1))
    # and with B = width it is a valid coding-6 payload
    full = columns_payload(labels, 16, 5, header.width)
    assert decode_columns(full, header.width, header.height, 16) == labels.reshape(-1).tolist()


def test_every_single_bit_flip_is_judged_alike_by_both_decoders(china: np.ndarray) -> None:
    """Flip each bit of a small two-band payload in turn: the reference and the kernel both reject it, or both
    decode the same labels (every label < k)."""
    k, width, height = 5, 6, 4
    labels = photo_labels(china, k, width, height, top=210, left=270)
    header = header_for(labels, k)
    payload = columns_payload(labels, k, 4, 2)
    outcomes = set()
    for position in range(len(payload)):
        for bit in range(8):
            damaged = bytearray(payload)
            damaged[position] ^= 1 << bit
            try:
                reference = decode_columns(bytes(damaged), width, height, k)
            except StreamError:
                reference = None
            try:
                kernel = codings.CONTEXT_COLUMNS.decode(bytes(damaged), header).tolist()
            except KMQError as exc:
                assert isinstance(exc, CodingError), exc
                kernel = None
            assert reference == kernel, (position, bit)
            outcomes.add(reference is None)
            if reference is not None:
                assert max(reference) < k
    assert outcomes == {True, False}  # some flips are rejected, some decode


VECTORS = Path(__file__).resolve().parent.parent / "spec" / "vectors"
COLUMN_VECTORS = sorted(path.name for path in VECTORS.glob("*-context-columns-*.kmq"))


def test_the_suite_has_coding_6_vectors_of_both_models_and_every_defect() -> None:
    names = set(COLUMN_VECTORS)
    assert {"ok-context-columns-k0001-rgb-9x7.kmq", "bad-context-columns-k0001-nonempty.kmq",
            "bad-context-columns-empty-k0016.kmq", "bad-context-columns-band-count-over-width.kmq"} <= names
    assert {f"bad-context-columns-model-byte-{byte}.kmq" for byte in (0, 3, 6, 255)} <= names
    assert any("-model4-" in name for name in names) and any("-model5-" in name for name in names)


@pytest.mark.parametrize("name", [n for n in COLUMN_VECTORS if n.startswith("bad-")])
def test_the_reference_rejects_every_corrupt_coding_6_vector(name: str) -> None:
    """The corrupt vectors are built with kmcodec's encoder; the spec-only decoder must reject each of them too
    (the valid ones it decodes in test_conformance.py)."""
    data = (VECTORS / name).read_bytes()
    assert data[10] == codings.CONTEXT_COLUMNS.id
    width, height, k, length = struct.unpack(">IIIQ", data[12:32])
    start = 36 + k * data[9]
    payload = data[start : start + length]
    assert len(data) == start + length + 4
    with pytest.raises(StreamError):
        decode_columns(payload, width, height, k)
    if name.startswith("bad-context-columns-model-byte-") and len(payload) > 1:  # only the model byte is wrong
        for model in MODELS:
            assert len(decode_columns(bytes([model]) + payload[1:], width, height, k)) == width * height
