"""Multi-block xz streams of the lzma coding (spec 5.1): the encoder's streams are standard xz, and the parallel
fast path accepts and rejects exactly what liblzma's sequential decoder does, with the same labels."""

from __future__ import annotations

import dataclasses
import functools
import lzma
import shutil
import struct
import subprocess
import sys
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kmcodec import api, codings, xzblocks
from kmcodec.container import Header, build_file
from kmcodec.errors import KMQError
from kmcodec.image import KMQImage

from conftest import sklearn_image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))

K = 16


@functools.lru_cache(maxsize=None)
def photo_label_bytes(k: int = K, size: int = 15000) -> bytes:
    """Label bytes of a real photo: china.jpg's luma in k levels, row-major, the first `size` of them."""
    rgb = sklearn_image("china.jpg").astype(np.int64)
    luma = (299 * rgb[..., 0] + 587 * rgb[..., 1] + 114 * rgb[..., 2]) // 1000
    return ((luma * k) >> 8).astype(np.uint8).reshape(-1)[:size].tobytes()


def sequential_only(payload: bytes, size: int) -> bytes:
    """The labels as liblzma's one-pass decoder gives them (the path every stream took before blocks)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(xzblocks, "decompress_blocks", lambda *args, **kwargs: None)
        return codings.LZMA.decode(payload, lzma_header(size, len(payload))).tobytes()


def lzma_header(size: int, payload_length: int) -> Header:
    return Header(width=size, height=1, channels=3, k=K, coding=codings.LZMA.id, payload_length=payload_length)


def decode_outcome(payload: bytes, size: int, fast: bool) -> tuple:
    """What api.decode makes of a file with this lzma payload: ('ok', labels) or (error class, kind, message)."""
    data = build_file(lzma_header(size, len(payload)), bytes(3 * K), payload)
    with pytest.MonkeyPatch.context() as patch:
        if not fast:
            patch.setattr(xzblocks, "decompress_blocks", lambda *args, **kwargs: None)
        try:
            return ("ok", api.decode(data).labels.tobytes())
        except KMQError as exc:
            return (type(exc).__name__, exc.kind, str(exc))


# --- an xz writer of its own, built from the .xz format 1.0.4 text, whose every field a test can falsify ---


def vli(value: int, extra: int = 0) -> bytes:
    """A variable-length integer, with `extra` redundant 0x80 continuation bytes (non-minimal) when asked."""
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    if extra:
        out += bytes([value | 0x80]) + b"\x80" * (extra - 1)
        value = 0
    out.append(value)
    return bytes(out)


def crc(data: bytes, flip: int = 0) -> bytes:
    return struct.pack("<I", zlib.crc32(data) ^ flip)


@dataclass
class BlockParts:
    """One block: its LZMA2 data and every header field, correct unless a test changes it."""

    data: bytes
    size: int
    check: int
    props: int
    flags: int = 0xC0
    compressed_delta: int = 0
    uncompressed_delta: int = 0
    filter_bytes: bytes | None = None
    header_padding_extra: int = 0  # extra zero 4-byte words of header padding (valid)
    header_padding_byte: int = 0
    non_minimal_size: int = 0
    header_crc_flip: int = 0
    data_padding_byte: int = 0
    check_flip: int = 0

    def record(self) -> tuple[int, int]:
        return len(self.header()) + len(self.data) + 4, self.size

    def header(self) -> bytes:
        fields = bytes([self.flags]) + vli(len(self.data) + self.compressed_delta, self.non_minimal_size)
        fields += vli(self.size + self.uncompressed_delta)
        fields += self.filter_bytes if self.filter_bytes is not None else bytes([0x21, 1, self.props])
        words = -(-(1 + len(fields) + 4) // 4) + self.header_padding_extra
        padding = bytes(4 * words - 5 - len(fields))
        if self.header_padding_byte and padding:
            padding = padding[:-1] + bytes([self.header_padding_byte])
        head = bytes([(words - 1) & 0xFF]) + fields + padding
        return head + crc(head, self.header_crc_flip)

    def serialize(self) -> bytes:
        padding = bytearray(-len(self.data) % 4)
        if padding and self.data_padding_byte:
            padding[0] = self.data_padding_byte
        return self.header() + self.data + bytes(padding) + struct.pack("<I", self.check ^ self.check_flip)


@dataclass
class StreamParts:
    """A whole stream: stream flags, blocks, index and footer, each field correct unless a test changes it."""

    blocks: list[BlockParts]
    flags: bytes = b"\x00\x01"
    footer_flags: bytes | None = None
    records: list[tuple[int, int]] | None = None
    count_delta: int = 0
    index_padding_byte: int = 0
    backward_delta: int = 0
    crc_flips: dict[str, int] = field(default_factory=dict)
    trailing: bytes = b""

    def serialize(self) -> bytes:
        records = self.records if self.records is not None else [block.record() for block in self.blocks]
        index = b"\x00" + vli(max(0, len(records) + self.count_delta))
        index += b"".join(vli(unpadded) + vli(size) for unpadded, size in records)
        padding = bytearray(-len(index) % 4)
        if padding and self.index_padding_byte:
            padding[-1] = self.index_padding_byte
        index += bytes(padding)
        index += crc(index, self.crc_flips.get("index", 0))
        backward = struct.pack("<I", (len(index) // 4 - 1 + self.backward_delta) & 0xFFFFFFFF)
        footer_flags = self.footer_flags if self.footer_flags is not None else self.flags
        footer = crc(backward + footer_flags, self.crc_flips.get("footer", 0)) + backward + footer_flags + b"YZ"
        head = b"\xfd7zXZ\x00" + self.flags + crc(self.flags, self.crc_flips.get("header", 0))
        return head + b"".join(block.serialize() for block in self.blocks) + index + footer + self.trailing


def smallest_props(size: int) -> int:
    return next(p for p in range(41) if (2 | (p & 1)) << (p // 2 + 11) >= max(size, 4096))


@functools.lru_cache(maxsize=None)
def photo_blocks(pieces: int, piece_bytes: int) -> tuple[tuple[bytes, int, int, int], ...]:
    """(LZMA2 data, size, CRC-32, dictionary props) of each block of real labels, coded by Python's lzma module."""
    labels = photo_label_bytes(size=pieces * piece_bytes)
    blocks = []
    for start in range(0, len(labels), piece_bytes):
        piece = labels[start : start + piece_bytes]
        props = smallest_props(len(piece))
        filters = [{"id": lzma.FILTER_LZMA2, "preset": 6, "dict_size": (2 | (props & 1)) << (props // 2 + 11)}]
        blocks.append((lzma.compress(piece, format=lzma.FORMAT_RAW, filters=filters), len(piece), zlib.crc32(piece), props))
    return tuple(blocks)


def photo_stream(pieces: int = 3, piece_bytes: int = 5000) -> tuple[StreamParts, bytes]:
    """A valid multi-block stream of real labels (fresh parts a test may change), and the labels."""
    return StreamParts([BlockParts(*block) for block in photo_blocks(pieces, piece_bytes)]), photo_label_bytes(size=pieces * piece_bytes)


@st.composite
def damaged_streams(draw) -> tuple[bytes, int]:
    """A real multi-block stream with one field falsified (CRCs recomputed so the damage reaches the checks behind
    them), or a few bytes flipped, cut, inserted or appended; returns it and the label count declared with it."""
    parts, labels = photo_stream(draw(st.integers(2, 4)), draw(st.sampled_from([3000, 5000, 9000])))
    blocks = parts.blocks
    which = draw(st.integers(0, len(blocks) - 1))
    block = blocks[which]
    size = len(labels)
    mutation = draw(st.sampled_from([
        "none", "compressed", "uncompressed", "uncompressed_and_index", "props", "flags", "filter", "header_padding",
        "header_padding_byte", "non_minimal", "header_crc", "data_padding", "check", "data_bit", "swap", "drop",
        "drop_record", "record", "count", "index_padding", "backward", "stream_flags", "footer_flags", "crc",
        "trailing", "declared_size", "bytes"]))
    small = st.integers(-3, 3).filter(bool)
    if mutation == "compressed":
        block.compressed_delta = draw(small)
    elif mutation == "uncompressed":
        block.uncompressed_delta = draw(small)
    elif mutation == "uncompressed_and_index":
        delta = draw(small)
        block.uncompressed_delta = delta
        parts.records = [b.record() for b in blocks]
        parts.records[which] = (parts.records[which][0], block.size + delta)
    elif mutation == "props":
        block.props = draw(st.integers(0, 255))
    elif mutation == "flags":
        block.flags = draw(st.integers(0, 255))
    elif mutation == "filter":
        block.filter_bytes = draw(st.sampled_from([b"\x21\x01", b"\x21\x02\x10\x00", b"\x03\x01\x00\x21\x01\x10",
                                                   b"\xa1\x00\x01\x10", b"\x21\x81\x00\x10", bytes([0x21, 1, 16, 0])]))
    elif mutation == "header_padding":
        block.header_padding_extra = draw(st.integers(1, 3))
    elif mutation == "header_padding_byte":
        block.header_padding_extra = 1
        block.header_padding_byte = draw(st.integers(1, 255))
    elif mutation == "non_minimal":
        block.non_minimal_size = draw(st.integers(1, 3))
    elif mutation == "header_crc":
        block.header_crc_flip = 1 << draw(st.integers(0, 31))
    elif mutation == "data_padding":
        block.data_padding_byte = draw(st.integers(1, 255))
    elif mutation == "check":
        block.check_flip = 1 << draw(st.integers(0, 31))
    elif mutation == "data_bit":
        position = draw(st.integers(0, len(block.data) - 1))
        data = bytearray(block.data)
        data[position] ^= 1 << draw(st.integers(0, 7))
        block.data = bytes(data)
    elif mutation == "swap":
        other = (which + 1) % len(blocks)
        blocks[which], blocks[other] = blocks[other], blocks[which]
    elif mutation == "drop":
        del blocks[which]
    elif mutation == "drop_record":
        parts.records = [b.record() for b in blocks]
        del parts.records[which]
    elif mutation == "record":
        parts.records = [b.record() for b in blocks]
        unpadded, uncompressed = parts.records[which]
        parts.records[which] = (unpadded + draw(small), uncompressed) if draw(st.booleans()) else (unpadded, uncompressed + draw(small))
    elif mutation == "count":
        parts.count_delta = draw(small)
    elif mutation == "index_padding":
        parts.index_padding_byte = draw(st.integers(1, 255))
    elif mutation == "backward":
        parts.backward_delta = draw(small)
    elif mutation == "stream_flags":
        parts.flags = bytes([draw(st.sampled_from([0, 1, 0x80])), draw(st.sampled_from([0, 1, 4, 10, 2, 0x11]))])
    elif mutation == "footer_flags":
        parts.footer_flags = bytes([0, draw(st.sampled_from([0, 4, 10, 0x21]))])
    elif mutation == "crc":
        parts.crc_flips[draw(st.sampled_from(["header", "index", "footer"]))] = 1 << draw(st.integers(0, 31))
    elif mutation == "trailing":
        parts.trailing = draw(st.sampled_from([b"\x00" * 4, b"\x00", b"YZ", b"\xfd7zXZ\x00"]))
    elif mutation == "declared_size":
        size += draw(small)
    payload = parts.serialize()
    if mutation == "bytes":
        damaged = bytearray(payload)
        for _ in range(draw(st.integers(1, 3))):
            action = draw(st.sampled_from(["flip", "cut", "insert", "delete"]))
            position = draw(st.integers(0, len(damaged) - 1))
            if action == "flip":
                damaged[position] ^= 1 << draw(st.integers(0, 7))
            elif action == "cut":
                del damaged[position:]
            elif action == "insert":
                damaged.insert(position, draw(st.integers(0, 255)))
            else:
                del damaged[position]
            if not damaged:
                damaged = bytearray(b"\x00")
        payload = bytes(damaged)
    return payload, max(size, 1)


@settings(max_examples=600, deadline=None)
@given(damaged_streams())
def test_fast_path_and_sequential_decoder_agree_on_damaged_multi_block_streams(stream) -> None:
    payload, size = stream
    fast = xzblocks.decompress_blocks(payload, size)
    if fast is not None:  # what the fast path takes, liblzma takes too, with the same bytes
        assert sequential_only(payload, size) == fast.tobytes()
    assert decode_outcome(payload, size, fast=True) == decode_outcome(payload, size, fast=False)


def test_fast_path_takes_valid_variants_liblzma_takes_and_declines_the_rest() -> None:
    parts, labels = photo_stream(3, 5000)
    valid = {
        "as written": parts,
        "blocks swapped": dataclasses.replace(parts, blocks=[parts.blocks[1], parts.blocks[0], parts.blocks[2]]),
        "longer header padding": dataclasses.replace(parts, blocks=[dataclasses.replace(parts.blocks[0], header_padding_extra=2), *parts.blocks[1:]]),
        "64 MiB dictionary": dataclasses.replace(parts, blocks=[dataclasses.replace(b, props=smallest_props(1 << 26)) for b in parts.blocks]),
    }
    for name, variant in valid.items():
        payload = variant.serialize()
        fast = xzblocks.decompress_blocks(payload, len(labels))
        assert fast is not None, name
        assert fast.tobytes() == sequential_only(payload, len(labels)) == lzma.decompress(payload), name
    declined = {
        "one block": StreamParts(parts.blocks[:1]),
        "128 MiB dictionary": dataclasses.replace(parts, blocks=[dataclasses.replace(b, props=smallest_props(1 << 27)) for b in parts.blocks]),
    }
    for name, variant in declined.items():
        payload = variant.serialize()
        size = sum(block.size for block in variant.blocks)
        assert xzblocks.decompress_blocks(payload, size) is None, name
        assert sequential_only(payload, size) == lzma.decompress(payload), name  # liblzma still reads it


def test_encoder_writes_standard_xz_that_python_and_the_xz_tool_read(tmp_path: Path) -> None:
    labels = photo_label_bytes(size=100_000)
    payload = xzblocks.compress(labels, block_bytes=16384)
    assert lzma.decompress(payload, format=lzma.FORMAT_XZ) == labels
    blocks = xzblocks.parse_blocks(payload, len(labels))
    assert blocks is not None and len(blocks) == 6
    assert xzblocks.decompress_blocks(payload, len(labels)).tobytes() == labels
    assert xzblocks.decompress_blocks(payload, len(labels), workers=1).tobytes() == labels
    xz = shutil.which("xz")
    if xz is None:
        pytest.skip("the xz command is not installed: only Python's lzma module checked the stream")
    (tmp_path / "labels.xz").write_bytes(payload)
    assert subprocess.run([xz, "-t", str(tmp_path / "labels.xz")]).returncode == 0
    assert subprocess.run([xz, "-dc", str(tmp_path / "labels.xz")], capture_output=True, check=True).stdout == labels
    listing = subprocess.run([xz, "--robot", "-lvv", str(tmp_path / "labels.xz")], capture_output=True, text=True, check=True)
    block_lines = [line.split("\t") for line in listing.stdout.splitlines() if line.startswith("block\t")]
    assert len(block_lines) == 6  # columns 9 and 12: the check type, and "cu" = both sizes in the block header
    assert all(line[9] == "CRC32" and line[12] == "cu" for line in block_lines), block_lines
    threaded = subprocess.run([xz, "-T2", "--block-size=20000", "-C", "crc32", "-c"], input=labels, capture_output=True,
                              check=True).stdout
    assert xzblocks.decompress_blocks(threaded, len(labels)).tobytes() == labels  # xz -T writes what the fast path takes
    crc64 = subprocess.run([xz, "-T2", "--block-size=20000", "-C", "crc64", "-c"], input=labels, capture_output=True,
                           check=True).stdout
    assert xzblocks.decompress_blocks(crc64, len(labels)) is None  # a check the fast path does not verify: liblzma's
    assert sequential_only(crc64, len(labels)) == labels


def test_blocks_are_at_least_a_mebibyte_and_at_most_eight() -> None:
    mib = 1 << 20
    assert xzblocks.split_points(mib + mib // 2) == [(0, mib + mib // 2)]
    assert xzblocks.split_points(4 * mib) == [(i * mib, (i + 1) * mib) for i in range(4)]
    for size in (2 * mib - 1, 2 * mib, 7 * mib + 12345, 100 * mib + 1):
        points = xzblocks.split_points(size)
        assert points[0][0] == 0 and points[-1][1] == size
        assert all(end == start for (_, end), (start, _) in zip(points, points[1:]))
        assert 1 <= len(points) <= xzblocks.MAX_BLOCKS
        assert all(end - start >= mib for start, end in points) or len(points) == 1
    assert xzblocks.split_points(0) == []


def test_api_round_trips_a_photo_through_blocks_and_both_decoders_agree(monkeypatch) -> None:
    pixels = sklearn_image("flower.jpg")
    rng = np.random.default_rng(5)
    luma = pixels.astype(np.int64) @ np.array([299, 587, 114]) // 1000
    for k, channels in ((64, 3), (300, 4)):  # one byte per label, and two
        labels = ((luma * k) >> 8) if k <= 256 else ((luma * 256 + pixels[..., 0]) * k >> 16)
        image = KMQImage(rng.integers(0, 256, (k, channels), dtype=np.uint8), labels.astype(np.uint16 if k > 256 else np.uint8))
        monkeypatch.setattr(xzblocks, "BLOCK_BYTES", 1 << 15)
        data = api.encode(image, coding="lzma")
        header = api.read_header(data)
        payload = data[36 + k * channels : -4]
        blocks = xzblocks.parse_blocks(payload, header.pixel_count * (1 if k <= 256 else 2))
        assert blocks is not None and len(blocks) == xzblocks.MAX_BLOCKS
        assert api.decode(data) == image
        assert decode_outcome_for(data, fast=False) == decode_outcome_for(data, fast=True)


def decode_outcome_for(data: bytes, fast: bool) -> bytes:
    with pytest.MonkeyPatch.context() as patch:
        if not fast:
            patch.setattr(xzblocks, "decompress_blocks", lambda *args, **kwargs: None)
        return api.decode(data).to_array().tobytes()


def test_blocks_that_hold_more_labels_than_declared_are_rejected_before_decoding() -> None:
    labels = photo_label_bytes(size=40_000)
    payload = xzblocks.compress(labels, block_bytes=8192)
    for size in (len(labels) // 2, len(labels) - 1, len(labels) + 1):
        assert xzblocks.parse_blocks(payload, size) is None
        outcome = decode_outcome(payload, size, fast=True)
        assert outcome[1] == "coding" and ("more than" in outcome[2] or "holds 40000 bytes" in outcome[2]), outcome
        assert outcome == decode_outcome(payload, size, fast=False)


def test_multi_block_vectors_decode_as_declared_on_both_paths() -> None:
    from xz_vectors import xz_vectors

    for vector in xz_vectors():
        header = api.read_header(vector["data"])
        payload = vector["data"][36 + header.k * header.channels : -4]
        size = header.pixel_count * (1 if header.k <= 256 else 2)
        outcomes = []
        for fast in (True, False):
            with pytest.MonkeyPatch.context() as patch:
                if not fast:
                    patch.setattr(xzblocks, "decompress_blocks", lambda *args, **kwargs: None)
                try:
                    outcomes.append(api.decode(vector["data"]).to_array().tobytes())
                except KMQError as exc:
                    outcomes.append(exc.kind)
        assert outcomes[0] == outcomes[1] == vector.get("pixels", vector.get("error")), vector["name"]
        if "pixels" in vector:  # the valid ones are what the fast path is for
            assert xzblocks.parse_blocks(payload, size) is not None, vector["name"]
