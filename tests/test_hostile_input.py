"""Hostile .kmq input: every malformed file ends in a KMQError naming what and where, fast and small.

The Hypothesis fuzz test mutates valid files of every registered coding
(kmcodec.codings.CODINGS, so codings added later are covered without edits).
"""

from __future__ import annotations

import io
import random
import struct
import time
import tracemalloc
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fuzzing
from kmcodec import api
from kmcodec.codings import CODINGS, Coding
from kmcodec.container import HEADER_SIZE, SIGNATURE, Header, build_file
from kmcodec.errors import (
    CodingError,
    HeaderError,
    KMQError,
    LabelError,
    LimitError,
    TruncatedError,
)

#: The fuzz test's pixel limit: mutated headers may declare anything, the decoder must refuse above this.
FUZZ_MAX_PIXELS = 1 << 16


class Seeds(list):
    """The seed files, with a short repr so a failing example prints readably."""

    def __repr__(self) -> str:
        return f"<{len(self)} seed files: {', '.join(name for name, _ in self)}>"


@pytest.fixture(scope="module")
def seeds(china) -> Seeds:
    files = Seeds(fuzzing.seed_files(china))
    for name, data in files:  # the seeds themselves must be valid, or the fuzzing proves nothing
        api.decode(data)
    return files


def decode_bounded(data: bytes) -> None:
    """Decode hostile bytes: only a KMQError may escape, within the time and memory bounds of the issue."""
    tracemalloc.reset_peak()
    before, _ = tracemalloc.get_traced_memory()
    started = time.perf_counter()
    try:
        image = api.decode(data, max_pixels=FUZZ_MAX_PIXELS)
    except KMQError as exc:
        assert str(exc), "an error must say what is wrong"
        pixels = 0
    else:
        pixels = image.width * image.height
        assert pixels <= FUZZ_MAX_PIXELS
    elapsed = time.perf_counter() - started
    _, peak = tracemalloc.get_traced_memory()
    # one second per MB of input and of decoded image (a compressing coding may expand a small input),
    # plus a fixed allowance for a tiny input
    work = fuzzing.work_bytes(data, FUZZ_MAX_PIXELS)
    assert elapsed < 0.25 + work / 1e6, f"decode took {elapsed:.3f} s for {len(data)} bytes, {pixels} pixels"
    # the declared image (labels, a copy, a mask) and a few copies of the input, never more
    bound = 1_000_000 + 8 * len(data) + 8 * max(pixels, FUZZ_MAX_PIXELS)
    assert peak - before < bound, (
        f"decoding {len(data)} bytes (coding {data[10] if len(data) > 10 else '?'}) allocated {peak - before} "
        f"bytes, over the bound of {bound} for the input and the declared image"
    )


@settings(max_examples=1000, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_mutated_files_of_every_coding_raise_only_kmq_errors(seeds, data) -> None:
    name, original = seeds[data.draw(st.integers(0, len(seeds) - 1), label="seed")]
    kind = data.draw(st.sampled_from(fuzzing.MUTATIONS), label="mutation")
    rng = random.Random(data.draw(st.integers(0, 2**32 - 1), label="rng"))
    what, mutated = fuzzing.mutate(original, rng, kind)
    tracemalloc.start()
    try:
        decode_bounded(mutated)
    finally:
        tracemalloc.stop()


def test_fuzz_covers_every_registered_coding(seeds) -> None:
    coded = {data[10] for _, data in seeds}
    assert coded == set(CODINGS)


def test_header_field_edits_reach_each_error_kind(seeds) -> None:
    """The mutations are not all stopped at the CRC: header edits with a fixed CRC reach the field checks."""
    rng = random.Random(1)
    kinds = set()
    for _ in range(3000):
        _, original = rng.choice(seeds)
        _, mutated = fuzzing.mutate(original, rng)
        try:
            api.decode(mutated, max_pixels=FUZZ_MAX_PIXELS)
        except KMQError as exc:
            kinds.add(exc.kind)
    assert {"signature", "version", "checksum", "header", "coding", "limit", "label", "truncated", "trailing"} <= kinds


def _header_bytes(width: int, height: int, k: int, payload_length: int, coding: int = 0, channels: int = 3) -> bytes:
    fields = SIGNATURE + struct.pack(">BBBBIIIQ", 1, channels, coding, (k - 1).bit_length(), width, height, k,
                                     payload_length)
    return fields + struct.pack(">I", zlib.crc32(fields))


class CountingStream(io.BytesIO):
    """A stream that records how many bytes the decoder asked for in total."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.requested = 0

    def read(self, size: int | None = -1) -> bytes:
        self.requested += size if size and size > 0 else 0
        return super().read(size)


@pytest.mark.parametrize("width, height", [(2**32 - 1, 2**32 - 1), (16385, 16384), (2**28 + 1, 1)])
def test_more_pixels_than_the_limit_is_refused_before_any_allocation(width: int, height: int) -> None:
    payload = (width * height * 8 + 7) // 8
    data = _header_bytes(width, height, 256, payload) + b"\x00" * 4096
    stream = CountingStream(data)
    tracemalloc.start()
    try:
        with pytest.raises(LimitError, match=r"offset 12\) exceeds the limit of 268435456 pixels"):
            api.decode(stream)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 64_000
    assert stream.requested == HEADER_SIZE  # nothing after the header was even read


def test_the_limit_is_configurable_both_ways(china) -> None:
    data = api.encode(api.quantize(china[:100, :100], 4))
    with pytest.raises(LimitError, match="10000 pixels"):
        api.decode(data, max_pixels=9999)
    assert api.decode(data, max_pixels=10000).width == 100
    # a header above the default limit, but allowed by the caller: fails on the missing body, not the limit
    big = _header_bytes(20000, 20000, 1, 0) + b"\xff\x00\x00"  # k = 1: no payload; the trailer is missing
    with pytest.raises(LimitError):
        api.decode(big)
    with pytest.raises(TruncatedError, match="trailer"):
        api.decode(big, max_pixels=20000 * 20000)


def test_a_short_stream_declaring_a_huge_payload_fails_without_allocating_it() -> None:
    # 15000 x 15000 at 8 bits: a 225 MB payload is declared, 100 bytes follow
    data = _header_bytes(15000, 15000, 256, 15000 * 15000) + bytes(100)
    tracemalloc.start()
    try:
        with pytest.raises(TruncatedError, match="palette|payload"):
            api.decode(data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1_000_000


def test_an_impossible_payload_length_is_refused_before_reading_it() -> None:
    data = _header_bytes(4, 4, 16, 2**64 - 1) + bytes(48)
    with pytest.raises(HeaderError, match=r"payload_length is 18446744073709551615 at offset 24.* is 8 bytes"):
        api.decode(data)


def test_messages_name_the_section_and_offset(china) -> None:
    good = bytearray(api.encode(api.quantize(china[:20, :30], 8)))
    flipped = bytearray(good)
    flipped[60] ^= 0x10
    with pytest.raises(KMQError, match=r"trailer: CRC-32 mismatch at offset \d+"):
        api.decode(bytes(flipped))
    with pytest.raises(TruncatedError, match=r"payload: file ends at offset 65, \d+ bytes short"):
        api.decode(bytes(good[:65]))
    with pytest.raises(KMQError, match=r"header: channels is 7 at offset 9"):
        edited = bytearray(good)
        edited[9] = 7
        fuzzing.fix_header_crc(edited)
        api.decode(bytes(edited))


# --- the safety net around codings: a coding that misbehaves on hostile data still ends in a KMQError ---


def _register(monkeypatch, decode) -> bytes:
    coding = Coding(250, "misbehaving", lambda labels, header: b"\x01\x02", decode, lambda header: None)
    monkeypatch.setitem(CODINGS, coding.id, coding)
    header = Header(width=3, height=2, channels=3, k=3, coding=250, payload_length=2)
    return build_file(header, bytes(9), b"\x01\x02")


def test_a_coding_that_raises_a_foreign_exception_becomes_a_coding_error(monkeypatch) -> None:
    def decode(payload, header):
        return zlib.decompress(payload)

    data = _register(monkeypatch, decode)
    expected = r"payload at offset 45: misbehaving payload cannot be decoded \(error"
    with pytest.raises(CodingError, match=expected) as info:
        api.decode(data)
    assert isinstance(info.value.__cause__, zlib.error)


def test_a_coding_that_returns_the_wrong_count_or_range_is_caught(monkeypatch) -> None:
    data = _register(monkeypatch, lambda payload, header: np.zeros(5, np.uint8))
    with pytest.raises(CodingError, match="decodes to 5 labels, the header declares 3x2 = 6"):
        api.decode(data)
    data = _register(monkeypatch, lambda payload, header: np.array([0, 1, 2, 3, 0, 0], np.uint8))
    with pytest.raises(LabelError, match="pixel 3 has label 3, not in 0..2"):
        api.decode(data)


def test_an_unknown_coding_is_unsupported_not_corrupt() -> None:
    data = _header_bytes(2, 2, 2, 1, coding=200) + bytes(6 + 1 + 4)
    with pytest.raises(CodingError, match="unsupported coding 200 at offset 10"):
        api.decode(data)
