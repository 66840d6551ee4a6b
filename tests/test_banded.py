"""Coding 4 (spec 5.3): the band table, parallel coding, and the rejection of every malformed table."""

from __future__ import annotations

import dataclasses
import struct
import threading

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kmcodec import api, banded, codings, parallel
from kmcodec.bitpack import label_bits, label_dtype
from kmcodec.container import Header, build_file
from kmcodec.errors import CodingError
from kmcodec.image import KMQImage

from banded_reference import decode_banded
from conftest import assert_decodes_as_the_reference_does, damaged_stream, file_with
from context_reference import StreamError
from test_codings import labels_from_photo

pytestmark = pytest.mark.skipif(codings._ctxcoder is None, reason="kmcodec._ctxcoder not built (python setup.py build_ext --inplace)")


def header_for(labels: np.ndarray, k: int) -> Header:
    height, width = labels.shape
    return Header(width=width, height=height, channels=3, k=k, coding=codings.CONTEXT.id, payload_length=0)


def banded_payload(labels: np.ndarray, k: int, bands: int, workers: int | None = None) -> bytes:
    """A coding-4 payload of these labels with a chosen band count (the reference encoder picks it by size)."""
    height, width = labels.shape
    flat = np.ascontiguousarray(labels.reshape(-1), dtype=label_dtype(label_bits(k)))
    return banded.encode_bands(flat, width, height, lambda band, rows: codings._ctxcoder.encode(band, width, rows, k, codings.BAND_MODEL),
                               bands=bands, workers=workers)


@pytest.mark.parametrize("height, bands", [(10, 3), (7, 7), (100, 64), (65, 2)])
def test_bands_cover_every_row_once_in_order(height: int, bands: int) -> None:
    rows = banded.band_rows(height, bands)
    assert len(rows) == bands
    assert rows[0][0] == 0 and rows[-1][1] == height
    assert all(stop > start for start, stop in rows)
    assert all(a[1] == b[0] for a, b in zip(rows, rows[1:]))


def test_reference_encoder_uses_a_band_per_two_mebipixels() -> None:
    assert banded.band_count_for(1000, 1000) == 1
    assert banded.band_count_for(2048, 2048) == 2
    assert banded.band_count_for(4096, 4096) == 8
    assert banded.band_count_for(100_000, 100_000) == 64
    assert banded.band_count_for(1 << 22, 3) == 3  # never more bands than rows


@pytest.mark.parametrize("k, bands", [(2, 5), (16, 3), (64, 4), (300, 2), (1000, 6)])
def test_reference_decoder_written_from_the_spec_agrees_on_multi_band_payloads(china: np.ndarray, k: int, bands: int) -> None:
    labels = labels_from_photo(china[150:181, 200:247], k)
    payload = banded_payload(labels, k, bands)
    assert struct.unpack(">H", payload[:2])[0] == bands
    assert decode_banded(payload, labels.shape[1], labels.shape[0], k) == labels.reshape(-1).tolist()
    assert np.array_equal(api.decode(file_with(header_for(labels, k), payload)).labels, labels)


def test_every_band_starts_fresh(china: np.ndarray) -> None:
    labels = labels_from_photo(china[0:60, 0:80], 64)
    payload = banded_payload(labels, 64, 3)
    offset = 2 + 4 * 3
    for (start, stop), length in zip(banded.band_rows(60, 3), struct.unpack(">3I", payload[2:14])):
        alone = codings._ctxcoder.encode(np.ascontiguousarray(labels[start:stop]).reshape(-1), 80, stop - start, 64, 4)
        assert payload[offset : offset + length] == alone  # each band is the model-4 stream of its rows alone
        offset += length


def test_output_does_not_depend_on_the_number_of_threads(flower: np.ndarray) -> None:
    labels = labels_from_photo(flower, 64)
    payloads = {workers: banded_payload(labels, 64, 5, workers=workers) for workers in (1, 2, 7)}
    assert payloads[1] == payloads[2] == payloads[7]
    header = dataclasses.replace(header_for(labels, 64), payload_length=len(payloads[1]))
    decoded = [codings.CONTEXT.decode(payloads[1], header, workers=workers) for workers in (1, 2, 7)]
    assert all(np.array_equal(d, labels.reshape(-1)) for d in decoded)


def test_threads_take_the_next_task_not_yet_started() -> None:
    """A thread that is free takes the next task, whoever's "turn" it would be: with two threads, a first task
    that waits for the third finishes (a fixed stride would leave the third to the waiting thread), and every
    task runs once, its result in its place."""
    third_ran = threading.Event()
    runs: list[int] = []

    def task(index: int):
        def run() -> int:
            runs.append(index)
            if index == 0 and not third_ran.wait(timeout=10):
                raise AssertionError("the third task never ran while the first waited")
            if index == 2:
                third_ran.set()
            return index * 10
        return run

    assert parallel.run_in_threads([task(i) for i in range(5)], 2) == [0, 10, 20, 30, 40]
    assert sorted(runs) == [0, 1, 2, 3, 4]


def test_a_failing_task_is_raised_after_the_others_ran() -> None:
    ran: list[int] = []

    def task(index: int):
        def run() -> int:
            ran.append(index)
            if index == 1:
                raise ValueError("task 1 failed")
            return index
        return run

    with pytest.raises(ValueError, match="task 1 failed"):
        parallel.run_in_threads([task(i) for i in range(4)], 2)
    assert sorted(ran) == [0, 1, 2, 3]


def test_a_large_real_photo_is_coded_in_bands_and_round_trips(gnome_4mp_labels) -> None:
    palette, labels = gnome_4mp_labels
    image = KMQImage(palette, labels)
    data = api.encode(image, coding="context")
    payload = data[36 + palette.size : -4]
    assert struct.unpack(">H", payload[:2])[0] == banded.band_count_for(labels.shape[1], labels.shape[0]) == 2
    assert api.decode(data) == image
    single = api.encode(image, coding="context1")
    assert len(data) < 1.01 * len(single)  # two bands cost well under 1 %


@pytest.fixture(scope="module")
def gnome_4mp_labels() -> tuple[np.ndarray, np.ndarray]:
    """A 2048 x 2048 crop of a gnome-backgrounds photo, quantized to 32 colours."""
    from PIL import Image
    from conftest import gnome_background

    with Image.open(gnome_background()) as picture:
        pixels = np.asarray(picture.convert("RGB"))[:2048, :2048]
    image = api.quantize(pixels, 32)
    return image.palette, image.labels


def _table(bands: int, lengths: list[int]) -> bytes:
    return struct.pack(f">H{len(lengths)}I", bands, *lengths)


@pytest.fixture(scope="module")
def three_bands(china: np.ndarray) -> tuple[Header, bytes, np.ndarray]:
    labels = labels_from_photo(china[40:71, 90:140], 16)  # 31 rows: bands of 10, 10 and 11
    return header_for(labels, 16), banded_payload(labels, 16, 3), labels


def _malformed(header: Header, payload: bytes) -> dict[str, bytes]:
    (bands,) = struct.unpack(">H", payload[:2])
    lengths = list(struct.unpack(f">{bands}I", payload[2 : 2 + 4 * bands]))
    streams = payload[2 + 4 * bands :]
    return {
        "empty": b"",
        "one byte": payload[:1],
        "zero bands": _table(0, []) + streams,
        "more bands than rows": _table(header.height + 1, [0] * (header.height + 1)),
        "more than 64 bands": _table(65, [0] * 65),
        "table cut short": payload[: 2 + 4 * bands - 1],
        "lengths too long": _table(bands, [lengths[0] + 1, *lengths[1:]]) + streams,
        "lengths too short": _table(bands, [lengths[0] - 1, *lengths[1:]]) + streams,
        "a band stream of 3 bytes": _table(bands, [3, *lengths[1:]]) + streams[:3] + streams[lengths[0] :],
        "bytes after the last band": payload + b"\x00",
    }


@pytest.mark.parametrize("defect", ["empty", "one byte", "zero bands", "more bands than rows", "more than 64 bands",
                                    "table cut short", "lengths too long", "lengths too short",
                                    "a band stream of 3 bytes", "bytes after the last band"])
def test_malformed_band_tables_are_coding_errors(three_bands, defect: str) -> None:
    header, payload, _ = three_bands
    bad = _malformed(header, payload)[defect]
    with pytest.raises(CodingError):
        api.decode(file_with(header, bad))
    with pytest.raises(StreamError):  # the spec-only reference decoder rejects it too
        decode_banded(bad, header.width, header.height, header.k)


def test_error_names_the_band(three_bands) -> None:
    header, payload, _ = three_bands
    lengths = struct.unpack(">3I", payload[2:14])
    cut = _table(3, [lengths[0], lengths[1], lengths[2] - 1]) + payload[14:-1]  # the last band loses its last byte
    with pytest.raises(CodingError, match="band 2 .rows 20-30.*ends early"):
        api.decode(file_with(header, cut))


def test_band_streams_too_short_for_their_pixels_are_rejected_before_allocating() -> None:
    header = Header(width=40_000, height=4_000, channels=3, k=16, coding=codings.CONTEXT.id, payload_length=0)
    payload = _table(2, [8, 8]) + bytes(16)  # 160 million labels in 16 bytes: impossible
    with pytest.raises(CodingError, match="too short"):
        api.decode(file_with(header, payload), max_pixels=1 << 28)


def test_k1_payload_is_empty_and_anything_else_is_rejected() -> None:
    image = KMQImage(np.array([[9, 9, 9]], np.uint8), np.zeros((5, 6), np.uint8))
    data = api.encode(image, coding="context")
    assert data[24:32] == bytes(8)  # payload_length 0
    assert api.decode(data) == image
    header = Header(width=6, height=5, channels=3, k=1, coding=codings.CONTEXT.id, payload_length=0)
    with pytest.raises(CodingError):
        api.decode(build_file(dataclasses.replace(header, payload_length=2), bytes(3), b"\x00\x01"))


@settings(max_examples=100, deadline=4000, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_damaged_banded_payloads_decode_or_raise_coding(three_bands, data) -> None:
    header, payload, labels = three_bands
    assert_decodes_as_the_reference_does(header, damaged_stream(data, payload), labels.shape, decode_banded)


def test_auto_deflate_probe_samples_large_images_within_ten_percent(gnome_4mp_labels) -> None:
    """Both of auto's level-6 estimates, over PROBE_LABELS and over the second probe's smaller sample, come within
    10 % of deflating every label, and the smaller one really is a sample."""
    import zlib

    _, labels = gnome_4mp_labels
    header = header_for(labels, 32)
    assert labels.shape[0] >= 2 * codings.PROBE_LABELS // labels.shape[1]  # large enough to be sampled
    full = len(zlib.compress(labels.tobytes(), codings.PROBE_LEVEL))
    assert abs(codings.deflate_probe(labels.reshape(-1), header) / full - 1) < 0.10
    sample, scale = codings.probe_sample(labels.reshape(-1), header, codings.SECOND_PROBE_LABELS,
                                         codings.SECOND_PROBE_BLOCKS)
    assert len(sample) <= codings.SECOND_PROBE_LABELS and scale >= labels.size / codings.SECOND_PROBE_LABELS
    assert abs(codings.second_probe_size(labels.reshape(-1), header) / full - 1) < 0.10
