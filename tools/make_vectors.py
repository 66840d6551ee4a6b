"""Generate the .kmq conformance vectors (spec/vectors/*.kmq and manifest.json) from fixed palettes and labels.

This is a second, independent implementation of the format: it writes every byte
from spec/kmq.md with struct and zlib and never imports kmcodec, so the suite
cross-checks the reference codec instead of echoing it. Everything is
deterministic (SHAKE-256 of fixed seeds, no k-means, no numpy RNG), so the files
are frozen fixtures: `--check` regenerates them in memory and fails if any
committed file or the manifest differs, so the format cannot drift silently.

    python tools/make_vectors.py            # (re)write spec/vectors/
    python tools/make_vectors.py --check    # fail if spec/vectors/ differs from what this script makes

Vector families are plain functions returning Vectors (or dicts with the keys
name, data, description and either pixels/width/height/channels or error); the
list FAMILIES at the bottom names them, one line each.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import importlib
import json
import re
import struct
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

ROOT = Path(__file__).resolve().parent.parent
VECTORS_DIR = ROOT / "spec" / "vectors"
MANIFEST_NAME = "manifest.json"

SIGNATURE = b"\x89KMQ\r\n\x1a\n"
HEADER_SIZE = 36
#: The error kinds of spec section 9, the only values a manifest "error" may take.
ERROR_KINDS = ("signature", "version", "checksum", "header", "coding", "limit", "label", "padding", "truncated", "trailing")
NAME_PATTERN = re.compile(r"^(ok|bad)-[a-z0-9][a-z0-9.-]*\.kmq$")


# ---------------------------------------------------------------------------------------------------------------
# The vector type and the manifest


@dataclass(frozen=True)
class Vector:
    """One conformance file: its bytes, what it tests, and either the decoded pixels or the error kind it must raise."""

    name: str
    data: bytes
    description: str
    pixels: bytes | None = None
    width: int | None = None
    height: int | None = None
    channels: int | None = None
    error: str | None = None

    def __post_init__(self) -> None:
        if not NAME_PATTERN.match(self.name):
            raise ValueError(f"{self.name}: vector names are ok-…/bad-… in lower case, ending .kmq")
        if (self.error is None) == (self.pixels is None):
            raise ValueError(f"{self.name}: give either pixels or an error kind")
        if self.error is not None:
            if self.error not in ERROR_KINDS:
                raise ValueError(f"{self.name}: unknown error kind {self.error!r}")
            if not self.name.startswith("bad-"):
                raise ValueError(f"{self.name}: a vector that must be rejected is named bad-…")
        else:
            if not self.name.startswith("ok-"):
                raise ValueError(f"{self.name}: a vector that must decode is named ok-…")
            if None in (self.width, self.height, self.channels):
                raise ValueError(f"{self.name}: a valid vector needs width, height and channels")
            if len(self.pixels) != self.width * self.height * self.channels:
                raise ValueError(f"{self.name}: pixels are {len(self.pixels)} bytes, not width*height*channels")

    @classmethod
    def from_dict(cls, record: Mapping[str, object]) -> "Vector":
        """Build a Vector from a family's dict (name, data, description, pixels/width/height/channels or error)."""
        return cls(
            name=str(record["name"]),
            data=bytes(record["data"]),  # type: ignore[arg-type]
            description=str(record["description"]),
            pixels=bytes(record["pixels"]) if record.get("pixels") is not None else None,  # type: ignore[arg-type]
            width=record.get("width"),  # type: ignore[arg-type]
            height=record.get("height"),  # type: ignore[arg-type]
            channels=record.get("channels"),  # type: ignore[arg-type]
            error=record.get("error"),  # type: ignore[arg-type]
        )

    def manifest_entry(self) -> dict[str, object]:
        """The manifest record: description and either the pixels' SHA-256 with the geometry, or the error kind."""
        if self.error is not None:
            return {"description": self.description, "error": self.error}
        assert self.pixels is not None
        return {
            "description": self.description,
            "pixels_sha256": hashlib.sha256(self.pixels).hexdigest(),
            "width": self.width,
            "height": self.height,
            "channels": self.channels,
        }


def manifest_text(vectors: Sequence[Vector]) -> str:
    """The manifest.json text: a JSON object from file name to record, sorted, so it is byte-stable."""
    return json.dumps({v.name: v.manifest_entry() for v in vectors}, indent=2, sort_keys=True) + "\n"


# ---------------------------------------------------------------------------------------------------------------
# The format, written from the spec (sections 3-6) without kmcodec


def label_bits(k: int) -> int:
    """b = ceil(log2 k), the smallest b >= 0 with 2**b >= k (0 for k = 1)."""
    return max(k - 1, 0).bit_length()


def pack_labels(labels: Sequence[int], bits: int) -> bytes:
    """The MSB-first label bitstream: every label as `bits` binary digits, concatenated, zero-padded to a byte."""
    if bits == 0 or not labels:
        return b""
    digits = "".join(format(label, f"0{bits}b") for label in labels)
    if any(len(format(label, "b")) > bits for label in labels):
        raise ValueError(f"a label does not fit in {bits} bits")
    digits += "0" * (-len(digits) % 8)
    return int(digits, 2).to_bytes(len(digits) // 8, "big")


def crc32(*parts: bytes) -> int:
    """CRC-32 (ISO-HDLC, as PNG and zlib) of the concatenated parts."""
    crc = 0
    for part in parts:
        crc = zlib.crc32(part, crc)
    return crc


@dataclass(frozen=True)
class Layout:
    """Every field of a .kmq file; None means "the correct value", anything else overrides it to plant a defect."""

    width: int
    height: int
    channels: int
    palette: bytes
    labels: tuple[int, ...]
    k: int | None = None
    version: int = 1
    coding: int = 0
    label_bits: int | None = None
    payload: bytes | None = None
    payload_length: int | None = None
    header_crc: int | None = None
    trailer_crc: int | None = None

    @property
    def entries(self) -> int:
        """k as the header declares it."""
        return self.k if self.k is not None else len(self.palette) // self.channels

    @property
    def payload_bytes(self) -> bytes:
        """The payload section: the label bitstream at the true label width, unless overridden."""
        if self.payload is not None:
            return self.payload
        return pack_labels(self.labels, label_bits(self.entries))

    def header(self) -> bytes:
        """The 36 header bytes (section 3), header CRC over bytes 0-31."""
        bits = self.label_bits if self.label_bits is not None else label_bits(self.entries)
        length = self.payload_length if self.payload_length is not None else len(self.payload_bytes)
        fields = SIGNATURE + struct.pack(
            ">BBBBIIIQ", self.version, self.channels, self.coding, bits, self.width, self.height, self.entries, length
        )
        crc = self.header_crc if self.header_crc is not None else crc32(fields)
        return fields + struct.pack(">I", crc)

    def file(self) -> bytes:
        """The whole file: header, palette, payload, trailer (CRC-32 of palette and payload)."""
        payload = self.payload_bytes
        crc = self.trailer_crc if self.trailer_crc is not None else crc32(self.palette, payload)
        return self.header() + self.palette + payload + struct.pack(">I", crc)

    def pixels(self) -> bytes:
        """The decoded pixels of section 7 step 9: palette[label] for each pixel, row-major."""
        c = self.channels
        return b"".join(self.palette[label * c : (label + 1) * c] for label in self.labels)

    def section_offsets(self) -> dict[str, tuple[int, int]]:
        """Start and end offsets of each section of file()."""
        palette_end = HEADER_SIZE + len(self.palette)
        payload_end = palette_end + len(self.payload_bytes)
        return {
            "signature": (0, 8),
            "header": (0, HEADER_SIZE),
            "palette": (HEADER_SIZE, palette_end),
            "payload": (palette_end, payload_end),
            "trailer": (payload_end, payload_end + 4),
        }


# ---------------------------------------------------------------------------------------------------------------
# Fixed, portable pseudo-random content (SHAKE-256 of a seed: the same bytes on every machine and Python version)


def fixed_bytes(count: int, seed: int | str) -> bytes:
    """`count` pseudo-random bytes determined by the seed."""
    return hashlib.shake_256(f"kmq-vectors/{seed}".encode()).digest(count)


def fixed_palette(k: int, channels: int, seed: int) -> bytes:
    """k pseudo-random entries; with alpha, entry 0 is fully transparent and entry 1 (if any) fully opaque."""
    palette = bytearray(fixed_bytes(k * channels, seed))
    if channels == 4:
        palette[3] = 0
        if k > 1:
            palette[7] = 255
    return bytes(palette)


def fixed_labels(count: int, k: int, seed: int) -> tuple[int, ...]:
    """`count` labels < k that include the largest label k-1 (first) and 0 (second), the rest pseudo-random."""
    words = fixed_bytes(4 * count, f"labels/{seed}")
    labels = [value % k for value in struct.unpack(f">{count}I", words)]
    if count >= 1:
        labels[0] = k - 1
    if count >= 2:
        labels[1] = 0
    return tuple(labels)


def channel_name(channels: int) -> str:
    """'rgb' or 'rgba', as vector names spell the channel count."""
    return "rgba" if channels == 4 else "rgb"


def ok_vector(name: str, layout: Layout, description: str) -> Vector:
    """A valid vector: the file of a correct layout and its decoded pixels."""
    return Vector(
        name=name,
        data=layout.file(),
        description=description,
        pixels=layout.pixels(),
        width=layout.width,
        height=layout.height,
        channels=layout.channels,
    )


def bad_vector(name: str, data: bytes, error: str, description: str) -> Vector:
    """A vector with exactly one defect and the error kind every decoder must report for it."""
    return Vector(name=name, data=data, description=description, error=error)


# ---------------------------------------------------------------------------------------------------------------
# Valid vectors

#: (k, channels, width, height): every label width 0-16, at its smallest k (2**(b-1)+1) and, where the palette
#: is cheap on disk, its largest (2**b); both channel counts; 1x1, 1xN, Nx1 and sizes whose bitstream
#: ends inside a byte (n*b not a multiple of 8) as well as on a byte boundary.
VALID_SHAPES: tuple[tuple[int, int, int, int], ...] = (
    (1, 3, 1, 1),
    (1, 4, 7, 5),
    (1, 3, 70000, 1),
    (1, 4, 1, 70000),
    (2, 3, 1, 1),
    (2, 4, 8, 1),
    (2, 3, 1, 13),
    (2, 4, 17, 3),
    (3, 3, 3, 2),
    (3, 4, 1, 4),
    (4, 3, 5, 3),
    (4, 4, 2, 2),
    (5, 3, 5, 3),
    (5, 4, 1, 1),
    (8, 4, 8, 8),
    (8, 3, 3, 7),
    (9, 3, 7, 3),
    (9, 4, 1, 2),
    (16, 4, 4, 4),
    (16, 3, 13, 1),
    (17, 3, 5, 7),
    (32, 4, 9, 1),
    (33, 4, 3, 11),
    (64, 3, 8, 8),
    (65, 3, 13, 1),
    (128, 4, 11, 13),
    (129, 4, 3, 5),
    (255, 3, 15, 17),
    (256, 3, 16, 16),
    (256, 4, 1, 1),
    (257, 3, 19, 21),
    (257, 4, 1, 3),
    (511, 4, 7, 9),
    (512, 3, 8, 1),
    (513, 4, 5, 5),
    (1024, 3, 33, 31),
    (1025, 3, 7, 9),
    (2048, 4, 3, 3),
    (2049, 4, 11, 3),
    (4096, 3, 7, 5),
    (4097, 3, 13, 11),
    (8193, 4, 9, 7),
    (16385, 3, 15, 15),
    (32769, 3, 17, 19),
    (65535, 3, 11, 7),
    (65536, 4, 23, 29),
)


def shape_vectors() -> list[Vector]:
    """One valid vector per entry of VALID_SHAPES, with fixed pseudo-random palette and labels."""
    vectors = []
    for index, (k, channels, width, height) in enumerate(VALID_SHAPES):
        bits = label_bits(k)
        seed = 1000 + index
        layout = Layout(width, height, channels, fixed_palette(k, channels, seed), fixed_labels(width * height, k, seed))
        stream_bits = width * height * bits
        ending = "ends on a byte boundary" if stream_bits % 8 == 0 else f"{-stream_bits % 8} padding bits"
        name = f"ok-k{k:04d}-b{bits}-{channel_name(channels)}-{width}x{height}.kmq"
        description = (
            f"{width}x{height} {channel_name(channels).upper()}, k={k}, {bits}-bit labels "
            f"(largest label {k - 1} first), {stream_bits}-bit stream, {ending}"
        )
        vectors.append(ok_vector(name, layout, description))
    return vectors


def example_layout() -> Layout:
    """The worked example of spec section 11: 3x2 RGB, red/green/blue, labels 0 1 2 / 2 1 0."""
    return Layout(3, 2, 3, bytes.fromhex("FF0000 00FF00 0000FF"), (0, 1, 2, 2, 1, 0))


def special_vectors() -> list[Vector]:
    """Valid files that exercise a rule rather than a size: the worked example, palette oddities, alpha."""
    vectors = [
        ok_vector(
            "ok-example-3x2-rgb-k3.kmq",
            example_layout(),
            "the worked example of spec section 11, byte for byte",
        )
    ]
    unused = Layout(6, 5, 3, fixed_palette(16, 3, 7), tuple(3 if (i * 7) % 3 else 9 for i in range(30)))
    vectors.append(
        ok_vector(
            "ok-k0016-b4-rgb-unused-entries-6x5.kmq",
            unused,
            "k=16 but only entries 3 and 9 are used: unused palette entries are legal",
        )
    )
    half = fixed_palette(4, 4, 8)
    duplicated = Layout(5, 5, 4, half + half, fixed_labels(25, 8, 8))
    vectors.append(
        ok_vector(
            "ok-k0008-b3-rgba-duplicate-entries-5x5.kmq",
            duplicated,
            "k=8 RGBA palette whose entries 4-7 repeat entries 0-3: duplicates are legal and decode as stored",
        )
    )
    same = Layout(3, 3, 3, bytes.fromhex("102030") * 5, fixed_labels(9, 5, 9))
    vectors.append(
        ok_vector(
            "ok-k0005-b3-rgb-all-entries-equal-3x3.kmq",
            same,
            "k=5, every palette entry the same colour: the image is one colour whatever the labels",
        )
    )
    transparent = Layout(4, 2, 4, bytes.fromhex("FF000000 00FF0080 0000FF00 FFFFFFFF"), (0, 1, 2, 3, 3, 2, 1, 0))
    vectors.append(
        ok_vector(
            "ok-k0004-b2-rgba-transparent-colours-4x2.kmq",
            transparent,
            "RGBA entries with alpha 0 but distinct colours: straight alpha, colour channels kept as stored",
        )
    )
    every = Layout(16, 16, 3, fixed_palette(256, 3, 10), tuple((i * 167 + 13) % 256 for i in range(256)))
    vectors.append(
        ok_vector(
            "ok-k0256-b8-rgb-every-label-once-16x16.kmq",
            every,
            "k=256, 16x16: every label 0-255 exactly once, in a scrambled order",
        )
    )
    opaque = Layout(3, 5, 4, bytes.fromhex("010203FF FEFDFCFF 808080FF"), fixed_labels(15, 3, 11))
    vectors.append(
        ok_vector(
            "ok-k0003-b2-rgba-all-opaque-3x5.kmq",
            opaque,
            "RGBA file whose alpha is 255 everywhere: still a 4-channel image",
        )
    )
    max_label = Layout(2, 3, 3, fixed_palette(9, 3, 12), (8, 8, 8, 8, 8, 8))
    vectors.append(
        ok_vector(
            "ok-k0009-b4-rgb-only-largest-label-2x3.kmq",
            max_label,
            "k=9: every pixel uses the largest valid label 8 (1000 in 4 bits), next to the invalid 9-15",
        )
    )
    return vectors


# ---------------------------------------------------------------------------------------------------------------
# Corrupt vectors: exactly one defect each, CRCs recomputed unless the CRC is the defect


def is_text_safe(data: bytes) -> bool:
    """True if the bytes hold no CR, LF or byte >= 0x80: text-mode and 7-bit damage then cannot touch them."""
    return all(byte < 0x80 and byte not in (0x0A, 0x0D) for byte in data)


def base_layout() -> Layout:
    """The file most corrupt vectors start from: 5x3 RGB, k=5 (3-bit labels, so 5, 6 and 7 are invalid labels),
    45 bits of labels in 6 bytes, so the last byte has 3 padding bits."""
    return Layout(5, 3, 3, fixed_palette(5, 3, 30), fixed_labels(15, 5, 30))


def text_safe_layout() -> Layout:
    """A valid file with no CR, LF or byte >= 0x80 after the signature, found by a deterministic search.

    Text-mode and 7-bit damage applied to the whole of it change the signature and nothing else, so those
    vectors are both realistic and have exactly one defect. (3x7 is the smallest size whose header CRC is safe.)
    """
    width, height = 3, 7
    for seed in range(1, 1 << 20):
        labels = tuple(value % 5 for value in fixed_bytes(width * height, f"text-safe-labels/{seed}"))
        palette = bytes(value % 0x70 + 0x10 for value in fixed_bytes(15, f"text-safe-palette/{seed}"))
        layout = Layout(width, height, 3, palette, labels)
        if is_text_safe(layout.file()[8:]):
            return layout
    raise RuntimeError("no text-safe base file found")


def corrupt_vectors() -> list[Vector]:
    """At least one vector per MUST-reject rule of spec section 9."""
    base = base_layout()
    good = base.file()
    sections = base.section_offsets()
    n = base.width * base.height
    vectors: list[Vector] = []

    def add(name: str, data: bytes, error: str, description: str) -> None:
        vectors.append(bad_vector(f"bad-{name}.kmq", data, error, description))

    def edited(**fields: object) -> bytes:
        return dataclasses.replace(base, **fields).file()

    # signature: text-mode and 7-bit damage (applied to the whole file, which only the signature notices)
    text_safe = text_safe_layout().file()
    for name, damaged, what in (
        ("signature-crlf-to-lf", text_safe.replace(b"\r\n", b"\n"), "CR LF converted to LF (text-mode transfer)"),
        ("signature-lf-to-crlf", text_safe.replace(b"\n", b"\r\n"), "LF converted to CR LF (text-mode transfer)"),
        ("signature-7bit-stripped", bytes(b & 0x7F for b in text_safe), "the high bit of every byte cleared (7-bit channel)"),
    ):
        assert damaged.endswith(text_safe[8:]) and not damaged.startswith(SIGNATURE)
        add(name, damaged, "signature", f"{what}; only the signature contains such bytes")
    add("signature-png", b"\x89PNG\r\n\x1a\n" + good[8:], "signature", "a PNG signature in front of a valid KMQ body")
    add("signature-lowercase-kmq", good[:1] + b"kmq" + good[4:], "signature", "'kmq' instead of 'KMQ' in the signature")

    # version (header CRC recomputed)
    add("version-0", edited(version=0), "version", "version byte 0, header CRC valid")
    add("version-2", edited(version=2), "version", "version byte 2 (a future version), header CRC valid")
    add("version-255", edited(version=255), "version", "version byte 255, header CRC valid")

    # checksums
    stored_header_crc = struct.unpack(">I", good[32:36])[0]
    stored_trailer_crc = struct.unpack(">I", good[-4:])[0]
    add("checksum-header", edited(header_crc=stored_header_crc ^ 0xFFFFFFFF), "checksum", "header CRC inverted")
    add("checksum-header-zero", edited(header_crc=0), "checksum", "header CRC field all zero")
    add("checksum-trailer", edited(trailer_crc=stored_trailer_crc ^ 0xFFFFFFFF), "checksum", "trailer CRC inverted")
    add(
        "checksum-trailer-over-header",
        edited(trailer_crc=crc32(good[:36], base.palette, base.payload_bytes)),
        "checksum",
        "trailer CRC computed over header+palette+payload instead of palette+payload",
    )

    # header fields (header CRC valid; the rest of the file consistent with the declared fields where possible)
    for channels in (0, 2, 5):
        add(
            f"header-channels-{channels}",
            edited(channels=channels, k=5),
            "header",
            f"channels {channels} (must be 3 or 4); palette left as 5 RGB entries",
        )
    add("header-width-0", edited(width=0, labels=()), "header", "width 0, height 3, payload_length 0 (consistent)")
    add("header-height-0", edited(height=0, labels=()), "header", "height 0, width 5, payload_length 0 (consistent)")
    add("header-k-0", edited(k=0, palette=b"", labels=(), label_bits=0), "header", "k 0, label_bits 0, no palette, no payload")
    big = Layout(1, 1, 3, fixed_palette(65537, 3, 99), (65536,))
    add(
        "header-k-65537",
        big.file(),
        "header",
        "k 65537 (one more than the maximum), label_bits 17, a complete 1x1 file with label 65536",
    )
    add("header-label-bits-too-small", edited(label_bits=2), "header", "k=5 with label_bits 2 (must be 3)")
    add("header-label-bits-too-large", edited(label_bits=4), "header", "k=5 with label_bits 4 (must be 3)")
    k1 = Layout(2, 2, 3, b"\x11\x22\x33", (0, 0, 0, 0))
    add("header-label-bits-1-for-k1", dataclasses.replace(k1, label_bits=1).file(), "header", "k=1 with label_bits 1 (must be 0)")
    add(
        "header-payload-length-plus-1",
        edited(payload=base.payload_bytes + b"\x00"),
        "header",
        "raw payload_length one more than ceil(n*b/8), with that many bytes present and a valid trailer CRC",
    )
    add(
        "header-payload-length-minus-1",
        edited(payload=base.payload_bytes[:-1]),
        "header",
        "raw payload_length one less than ceil(n*b/8), with a valid trailer CRC",
    )
    add(
        "header-payload-length-1-for-k1",
        dataclasses.replace(k1, payload=b"\x00").file(),
        "header",
        "k=1 (0-bit labels) declaring a 1-byte raw payload, which is present",
    )

    # coding
    add("coding-255", edited(coding=255), "coding", "coding 255 (reserved, not implemented by a v1 decoder)")
    add("coding-128", edited(coding=128), "coding", "coding 128 (reserved, not implemented by a v1 decoder)")

    # labels >= k (CRCs valid)
    labels = list(base.labels)
    labels[0] = 5
    add("label-equal-to-k-first-pixel", edited(labels=tuple(labels)), "label", "k=5: the first pixel has label 5")
    labels = list(base.labels)
    labels[-1] = 7
    add("label-7-for-k5-last-pixel", edited(labels=tuple(labels)), "label", "k=5: the last pixel has label 7 (all ones)")
    k3 = Layout(3, 1, 3, fixed_palette(3, 3, 20), (0, 3, 1))
    add("label-3-for-k3-b2", k3.file(), "label", "k=3, 2-bit labels: the middle pixel has label 3")
    k257 = Layout(3, 3, 4, fixed_palette(257, 4, 21), (0, 1, 256, 257, 2, 3, 4, 5, 511))
    add("label-k0257-b9-labels-257-and-511", k257.file(), "label", "k=257, 9-bit labels 257 and 511 (>= k)")
    k2049 = Layout(2, 2, 3, fixed_palette(2049, 3, 22), (2048, 4095, 0, 1))
    add("label-k2049-b12-label-4095", k2049.file(), "label", "k=2049, 12-bit labels: label 4095 (>= k)")

    # padding bits after the last label
    stream_bits = n * label_bits(5)
    assert stream_bits % 8, "the base file must have padding bits"
    padding_bits = -stream_bits % 8
    for which, mask in (("last", 0x01), ("first", 1 << (padding_bits - 1)), ("all", (1 << padding_bits) - 1)):
        payload = bytearray(base.payload_bytes)
        payload[-1] |= mask
        add(
            f"padding-{which}-bit" if which != "all" else "padding-all-bits",
            edited(payload=bytes(payload)),
            "padding",
            f"{padding_bits} padding bits after the last label; {which} set to 1 (trailer CRC valid)",
        )
    one = Layout(1, 1, 3, fixed_palette(2, 3, 23), (1,))
    add(
        "padding-k2-1x1-low-bits",
        dataclasses.replace(one, payload=b"\xff").file(),
        "padding",
        "1x1, k=2: one label bit and 7 padding bits, all set",
    )

    # truncation inside every section, and the empty file
    header_end = sections["header"][1]
    palette_start, palette_end = sections["palette"]
    payload_start, payload_end = sections["payload"]
    for name, size, where in (
        ("empty", 0, "the empty file"),
        ("in-signature", 5, "5 bytes: inside the signature"),
        ("after-signature", 8, "the signature only"),
        ("in-header", 20, "20 bytes: inside the header fields"),
        ("in-header-crc", 34, "34 bytes: inside the header CRC"),
        ("after-header", header_end, "the header only, no palette"),
        ("in-palette", palette_start + 7, "inside the palette"),
        ("in-payload", payload_start + 2, "inside the payload"),
        ("after-payload", payload_end, "no trailer"),
        ("in-trailer", len(good) - 2, "the last 2 bytes of the trailer missing"),
    ):
        add(f"truncated-{name}", good[:size], "truncated", f"the valid base file cut to {size} bytes: {where}")

    # trailing bytes
    add("trailing-one-zero-byte", good + b"\x00", "trailing", "one zero byte after the trailer")
    add("trailing-second-copy", good + good, "trailing", "the file twice in a row")

    # a flipped bit in each section
    def flipped(offset: int, bit: int) -> bytes:
        data = bytearray(good)
        data[offset] ^= 1 << bit
        return bytes(data)

    add("flipbit-signature", flipped(3, 0), "signature", "bit 0 of byte 3 (the Q of KMQ) flipped")
    add("flipbit-header", flipped(15, 1), "checksum", "bit 1 of byte 15 (width) flipped, header CRC not updated")
    add("flipbit-header-crc", flipped(33, 4), "checksum", "bit 4 of byte 33 (the header CRC) flipped")
    add("flipbit-palette", flipped(palette_start + 4, 2), "checksum", "bit 2 of palette byte 4 flipped")
    # the top bit of the first label 4 (100 -> 000): the label stays < k, so only the trailer CRC can tell
    stream_bit = base.labels.index(4) * 3
    add(
        "flipbit-payload",
        flipped(payload_start + stream_bit // 8, 7 - stream_bit % 8),
        "checksum",
        f"the top bit of label {base.labels.index(4)} flipped (4 -> 0, still < k), trailer CRC not updated",
    )
    add("flipbit-trailer", flipped(len(good) - 1, 0), "checksum", "bit 0 of the last trailer byte flipped")

    # limits: complete k=1 files (0-bit labels, so payload_length 0 is correct) that only the pixel limit rejects
    for width, height, why in (
        (4294967295, 4294967295, "the largest header: 2**64 - 2**33 + 1 pixels; must fail at once, without allocating"),
        (4294967295, 1, "4294967295 pixels in one row"),
        (1, 4294967295, "4294967295 pixels in one column"),
        (65536, 65537, "2**32 + 65536 pixels, which a 32-bit product wraps to 65536"),
    ):
        limit = Layout(width, height, 3, b"\x00\x80\xff", ())
        add(f"limit-{width}x{height}", limit.file(), "limit", f"k=1, valid CRCs, {why}")
    return vectors


def valid_vectors() -> list[Vector]:
    """All the files a decoder must decode."""
    return shape_vectors() + special_vectors()


def external(module: str, function: str) -> Callable[[], list[Vector]]:
    """A family defined in tools/<module>.py (imported when the suite is generated, not before)."""

    def family() -> list[Vector]:
        if str(Path(__file__).resolve().parent) not in sys.path:
            sys.path.insert(0, str(Path(__file__).resolve().parent))
        records = getattr(importlib.import_module(module), function)()
        return [record if isinstance(record, Vector) else Vector.from_dict(record) for record in records]

    family.__name__ = f"{module}.{function}"
    return family


#: The vector families, one per line. A family from another tool (a function in tools/<module>.py returning
#: Vectors or dicts) is one more line such as:  external("coded_vectors", "coded_vectors"),
FAMILIES: list[Callable[[], Sequence[Vector | Mapping[str, object]]]] = [
    valid_vectors,
    corrupt_vectors,
    external("found_vectors", "found_vectors"),
    external("coded_vectors", "coded_vectors"),
    external("xz_vectors", "xz_vectors"),
]


# ---------------------------------------------------------------------------------------------------------------
# Writing and checking


def generate(families: Sequence[Callable[[], Sequence[Vector | Mapping[str, object]]]] | None = None) -> list[Vector]:
    """All vectors of all families (FAMILIES by default), sorted by name; names must be unique."""
    families = FAMILIES if families is None else families
    vectors: dict[str, Vector] = {}
    for family in families:
        for record in family():
            vector = record if isinstance(record, Vector) else Vector.from_dict(record)
            if vector.name in vectors:
                raise ValueError(f"duplicate vector name {vector.name} (family {family.__name__})")
            vectors[vector.name] = vector
    return [vectors[name] for name in sorted(vectors)]


def expected_files(vectors: Sequence[Vector]) -> dict[str, bytes]:
    """File name -> bytes for every file of the suite, the manifest included."""
    files = {v.name: v.data for v in vectors}
    files[MANIFEST_NAME] = manifest_text(vectors).encode()
    return files


def write_suite(directory: Path, vectors: Sequence[Vector]) -> list[str]:
    """Write the vectors and manifest, remove stale .kmq files; return the names of files that changed."""
    directory.mkdir(parents=True, exist_ok=True)
    files = expected_files(vectors)
    changed = []
    for name, data in files.items():
        path = directory / name
        if not path.exists() or path.read_bytes() != data:
            path.write_bytes(data)
            changed.append(name)
    for stale in sorted(directory.glob("*.kmq")):
        if stale.name not in files:
            stale.unlink()
            changed.append(stale.name)
    return changed


def check_suite(directory: Path, vectors: Sequence[Vector]) -> list[str]:
    """Differences between the committed suite and a fresh generation, one message per file (empty = identical)."""
    files = expected_files(vectors)
    problems = []
    for name, data in files.items():
        path = directory / name
        if not path.exists():
            problems.append(f"{name}: missing")
        elif path.read_bytes() != data:
            problems.append(f"{name}: differs from what tools/make_vectors.py generates")
    for extra in sorted(directory.glob("*.kmq")):
        if extra.name not in files:
            problems.append(f"{extra.name}: not generated by tools/make_vectors.py (stale or hand-made)")
    return problems


def main(argv: Sequence[str] | None = None) -> int:
    """Write spec/vectors/ or, with --check, verify it is exactly what this script generates."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=VECTORS_DIR, help="vector directory (default spec/vectors)")
    parser.add_argument("--check", action="store_true", help="regenerate in memory and fail on any difference")
    args = parser.parse_args(argv)
    vectors = generate()
    total = sum(len(v.data) for v in vectors)
    valid = sum(v.error is None for v in vectors)
    if args.check:
        problems = check_suite(args.out, vectors)
        for problem in problems:
            print(f"make_vectors: {problem}", file=sys.stderr)
        if problems:
            print(f"make_vectors: {len(problems)} difference(s); run tools/make_vectors.py to regenerate", file=sys.stderr)
            return 1
        print(f"{args.out}: {len(vectors)} vectors ({valid} valid, {len(vectors) - valid} corrupt) match")
        return 0
    changed = write_suite(args.out, vectors)
    print(
        f"{args.out}: {len(vectors)} vectors ({valid} valid, {len(vectors) - valid} corrupt), "
        f"{total:,} bytes; {len(changed)} file(s) written or removed"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
