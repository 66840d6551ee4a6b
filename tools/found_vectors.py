#!/usr/bin/env python3
"""Corrupt .kmq files of the kinds the fuzzing campaigns (tests/test_hostile_input.py, tools/fuzz.py) produce.

`found_vectors()` returns one dict per file: name (`bad-fuzz-...kmq`), data,
description and error (the error kind of spec section 9). Each file has exactly
one defect, so every conforming decoder rejects it with that kind whatever order
it checks things in; every other CRC and length in it is right. The files are
built here from fixed palettes and labels with struct and zlib, without the
reference codec, so they test it rather than mirror it. The campaigns found no
crash or hang in the reference decoder; these are the shapes of damage they
exercised most (the first input of each error kind and section, made minimal).

    python tools/found_vectors.py DIR   # write the files to DIR and list them
"""

from __future__ import annotations

import struct
import sys
import zlib
from pathlib import Path

SIGNATURE = b"\x89KMQ\r\n\x1a\n"
RED, GREEN, BLUE, WHITE, BLACK = b"\xff\x00\x00", b"\x00\xff\x00", b"\x00\x00\xff", b"\xff\xff\xff", b"\x00\x00\x00"


def _bits(k: int) -> int:
    return (k - 1).bit_length()


def _pack(labels: list[int], bits: int) -> bytes:
    """MSB-first b-bit labels, zero padding in the last byte (spec section 5), done the slow obvious way."""
    stream = "".join(format(label, f"0{bits}b") for label in labels) if bits else ""
    stream += "0" * (-len(stream) % 8)
    return bytes(int(stream[i : i + 8], 2) for i in range(0, len(stream), 8))


def _header(*, width: int, height: int, k: int, payload_length: int, channels: int = 3, coding: int = 0,
            label_bits: int | None = None, version: int = 1) -> bytes:
    fields = SIGNATURE + struct.pack(
        ">BBBBIIIQ", version, channels, coding, _bits(k) if label_bits is None else label_bits, width, height, k,
        payload_length,
    )
    return fields + struct.pack(">I", zlib.crc32(fields))


def _file(header: bytes, palette: bytes, payload: bytes) -> bytes:
    return header + palette + payload + struct.pack(">I", zlib.crc32(palette + payload))


def _valid(width: int, height: int, palette: list[bytes], labels: list[int], channels: int = 3) -> bytes:
    payload = _pack(labels, _bits(len(palette)))
    header = _header(width=width, height=height, k=len(palette), payload_length=len(payload), channels=channels)
    return _file(header, b"".join(palette), payload)


def _with_crc_fixed(data: bytes) -> bytes:
    """Recompute the header CRC after a field edit, as the fuzzer's header mutations do."""
    return data[:32] + struct.pack(">I", zlib.crc32(data[:32])) + data[36:]


def _edit(data: bytes, offset: int, fmt: str, value: int) -> bytes:
    edited = bytearray(data)
    struct.pack_into(fmt, edited, offset, value)
    return _with_crc_fixed(bytes(edited))


# A 5 x 4 RGB image with 5 colours (3-bit labels, 20 labels = 60 bits, 4 padding bits): the mutation base.
BASE_PALETTE = [RED, GREEN, BLUE, WHITE, BLACK]
BASE_LABELS = [0, 1, 2, 3, 4, 4, 3, 2, 1, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
BASE = _valid(5, 4, BASE_PALETTE, BASE_LABELS)
BASE_PAYLOAD_OFFSET = 36 + 15


def found_vectors() -> list[dict]:
    """The corrupt files, each named for what it tests, with the error kind a decoder must raise."""
    vectors: list[dict] = []

    def add(name: str, data: bytes, error: str, description: str) -> None:
        vectors.append({"name": f"bad-fuzz-{name}.kmq", "data": data, "error": error, "description": description})

    # signature and version
    add("signature-crlf-to-lf", BASE[:4] + b"\n" + BASE[6:], "signature",
        "CR LF in the signature turned into LF by a text-mode transfer (one byte shorter)")
    add("signature-high-bit-stripped", b"\x09" + BASE[1:], "signature",
        "the 0x89 signature byte with its high bit cleared by a 7-bit channel")
    add("truncated-inside-signature", BASE[:5], "truncated", "the first 5 bytes of a file: the signature is cut")
    add("truncated-empty", b"", "truncated", "an empty input")
    add("version-0-crc-fixed", _edit(BASE, 8, ">B", 0), "version", "version byte 0 (header CRC recomputed)")
    add("version-255-crc-fixed", _edit(BASE, 8, ">B", 255), "version", "version byte 255 (header CRC recomputed)")
    # header damage and header fields
    add("truncated-inside-header", BASE[:20], "truncated", "the file ends at offset 20, inside the 36-byte header")
    add("header-crc-width-bitflip", BASE[:15] + bytes([BASE[15] ^ 0x04]) + BASE[16:], "checksum",
        "one bit of the width flipped and the header CRC left as it was")
    add("header-crc-field-zeroed", BASE[:32] + b"\x00\x00\x00\x00" + BASE[36:], "checksum",
        "the header CRC itself overwritten with zeros")
    add("channels-0", _edit(BASE, 9, ">B", 0), "header", "channels 0 (header CRC recomputed)")
    add("channels-255", _edit(BASE, 9, ">B", 255), "header", "channels 255 (header CRC recomputed)")
    add("width-0", _edit(BASE, 12, ">I", 0), "header", "width 0 (header CRC recomputed)")
    add("height-0", _edit(BASE, 16, ">I", 0), "header", "height 0 (header CRC recomputed)")
    add("k-0", _edit(_edit(BASE, 20, ">I", 0), 11, ">B", 0), "header",
        "k = 0 with label_bits 0 (header CRC recomputed)")
    add("k-65537", _edit(_edit(BASE, 20, ">I", 65537), 11, ">B", 17), "header",
        "k = 65537 with the matching label_bits 17 (header CRC recomputed)")
    add("label-bits-one-too-many", _edit(BASE, 11, ">B", 4), "header",
        "label_bits 4 for k = 5, which needs 3 (header CRC recomputed)")
    add("label-bits-one-too-few", _edit(BASE, 11, ">B", 2), "header",
        "label_bits 2 for k = 5, which needs 3 (header CRC recomputed)")
    padded = _file(_header(width=5, height=4, k=5, payload_length=9), b"".join(BASE_PALETTE),
                   _pack(BASE_LABELS, 3) + b"\x00")
    add("raw-payload-one-byte-long", padded, "header",
        "a raw payload of 9 bytes where ceil(20 * 3 / 8) = 8; a zero byte appended, both CRCs right")
    k1 = _file(_header(width=3, height=3, k=1, payload_length=1), RED, b"\x00")
    add("k1-with-a-payload-byte", k1, "header", "k = 1 (0-bit labels) with a 1-byte raw payload, both CRCs right")
    add("coding-255", _edit(BASE, 10, ">B", 255), "coding", "coding 255, reserved (header CRC recomputed)")
    # the limit
    over = _file(_header(width=16385, height=16384, k=1, payload_length=0), BLUE, b"")
    add("limit-just-over-2-28", over, "limit",
        "a complete, well-formed k = 1 file of 16385 x 16384 = 2^28 + 16384 pixels: over the default limit")
    # body damage
    add("truncated-inside-palette", BASE[:40], "truncated", "the file ends inside the palette")
    add("truncated-inside-payload", BASE[:BASE_PAYLOAD_OFFSET + 3], "truncated", "the file ends inside the payload")
    add("truncated-inside-trailer", BASE[:-2], "truncated", "the last two bytes of the trailer are missing")
    flipped = bytearray(BASE)
    flipped[BASE_PAYLOAD_OFFSET + 2] ^= 0x10
    add("payload-bitflip", bytes(flipped), "checksum", "one payload bit flipped, trailer CRC left as it was")
    palette_flip = bytearray(BASE)
    palette_flip[37] ^= 0x01
    add("palette-bitflip", bytes(palette_flip), "checksum", "one palette bit flipped, trailer CRC left as it was")
    add("trailing-byte", BASE + b"\x00", "trailing", "one zero byte after the trailer")
    add("trailing-second-file", BASE + BASE, "trailing", "two complete files concatenated")
    # labels and padding, with every CRC right
    labels = list(BASE_LABELS)
    labels[7] = 7
    add("label-3bit-7-for-k5", _valid(5, 4, BASE_PALETTE, labels), "label",
        "pixel 7 has label 7 with k = 5 (3-bit labels), both CRCs right")
    labels = list(BASE_LABELS)
    labels[-1] = 5
    add("label-last-pixel-5-for-k5", _valid(5, 4, BASE_PALETTE, labels), "label",
        "the last pixel has label 5 = k, both CRCs right")
    palette300 = [bytes((i % 256, i // 256, 7)) for i in range(300)]
    add("label-9bit-511-for-k300", _valid(3, 3, palette300, [0, 299, 1, 511, 2, 3, 4, 5, 6]), "label",
        "a 9-bit label 511 with k = 300, both CRCs right")
    palette257 = [bytes((i % 256, 0, i // 256)) for i in range(257)]
    add("label-9bit-257-for-k257", _valid(2, 1, palette257, [256, 257]), "label",
        "label 257 with k = 257 (9 bits), both CRCs right")
    payload = bytearray(_pack(BASE_LABELS, 3))
    payload[-1] |= 0x01
    add("padding-last-bit", _file(_header(width=5, height=4, k=5, payload_length=8), b"".join(BASE_PALETTE),
                                  bytes(payload)), "padding",
        "the last of the 4 padding bits is set, both CRCs right")
    rgba = [b"\xff\x00\x00\x80", b"\x00\x00\xff\x00"]
    payload = bytearray(_pack([0, 1, 1], 1))
    payload[-1] |= 0x10
    add("padding-rgba-1bit", _file(_header(width=3, height=1, k=2, channels=4, payload_length=1),
                                   b"".join(rgba), bytes(payload)), "padding",
        "RGBA, 1-bit labels: a padding bit set after the third label, both CRCs right")
    return vectors


def main() -> int:
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    for vector in found_vectors():
        (out / vector["name"]).write_bytes(vector["data"])
        print(f"{vector['name']:48} {vector['error']:10} {vector['description']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
