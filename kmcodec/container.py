"""The .kmq container (spec sections 2-4, 6-8): header, palette, payload and trailer, with CRCs and limits.

Knows nothing of how labels are coded: it hands the payload bytes to kmcodec.codings.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from typing import BinaryIO

from .names import DEFAULT_MAX_PIXELS
from .errors import (
    ChecksumError,
    HeaderError,
    LimitError,
    SignatureError,
    TrailingDataError,
    TruncatedError,
    VersionError,
)

SIGNATURE = b"\x89KMQ\r\n\x1a\n"
VERSION = 1
HEADER_SIZE = 36
TRAILER_SIZE = 4
MAX_K = 65536
MAX_DIMENSION = 2**32 - 1
#: Bytes read at a time from a stream, so a lying length never allocates more than this up front.
READ_CHUNK = 1 << 24

def label_bits(k: int) -> int:
    """Return b = ceil(log2 k), the bits one label takes (0 when k == 1)."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    return (k - 1).bit_length()


_FIELDS = struct.Struct(">BBBBIIIQ")  # version, channels, coding, label_bits, width, height, k, payload_length


@dataclass(frozen=True)
class Header:
    """The fields of a .kmq header (spec section 3)."""

    width: int
    height: int
    channels: int
    k: int
    coding: int
    payload_length: int
    version: int = VERSION

    @property
    def label_bits(self) -> int:
        """Bits per label, b = ceil(log2 k)."""
        return label_bits(self.k)

    @property
    def pixel_count(self) -> int:
        """width × height, in arbitrary precision."""
        return self.width * self.height

    @property
    def palette_size(self) -> int:
        """Bytes of the palette section."""
        return self.k * self.channels

    @property
    def file_size(self) -> int:
        """Bytes of the whole file this header describes."""
        return HEADER_SIZE + self.palette_size + self.payload_length + TRAILER_SIZE


def pack_header(header: Header) -> bytes:
    """Serialize a header to its 36 bytes, header CRC included."""
    fields = SIGNATURE + _FIELDS.pack(
        header.version,
        header.channels,
        header.coding,
        header.label_bits,
        header.width,
        header.height,
        header.k,
        header.payload_length,
    )
    return fields + struct.pack(">I", zlib.crc32(fields))


def parse_header(data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> Header:
    """Parse and validate the first 36 bytes of a file (decoding steps 1-5 of the spec, less the coding check)."""
    if len(data) < len(SIGNATURE):
        if SIGNATURE.startswith(bytes(data)) and data:
            raise TruncatedError(f"header: file ends after {len(data)} bytes, inside the signature")
        raise SignatureError("header: not a KMQ file (bad signature)") if data else TruncatedError("header: empty input")
    if data[:8] != SIGNATURE:
        raise SignatureError(f"header: not a KMQ file (bad signature {bytes(data[:8]).hex(' ')})")
    if len(data) < 9:
        raise TruncatedError("header: file ends after the signature")
    if data[8] != VERSION:
        raise VersionError(f"header: unsupported version {data[8]} (this decoder reads version {VERSION})")
    if len(data) < HEADER_SIZE:
        raise TruncatedError(f"header: file ends at offset {len(data)}, inside the {HEADER_SIZE}-byte header")
    (stored_crc,) = struct.unpack_from(">I", data, 32)
    actual_crc = zlib.crc32(bytes(data[:32]))
    if stored_crc != actual_crc:
        raise ChecksumError(
            f"header: CRC-32 mismatch at offset 32 (stored {stored_crc:08x}, computed {actual_crc:08x})"
        )
    version, channels, coding, bits, width, height, k, payload_length = _FIELDS.unpack_from(data, 8)
    if channels not in (3, 4):
        raise HeaderError(f"header: channels is {channels} at offset 9, must be 3 or 4")
    if width < 1 or height < 1:
        raise HeaderError(f"header: image size {width}x{height} at offset 12, width and height must be >= 1")
    if not 1 <= k <= MAX_K:
        raise HeaderError(f"header: k is {k} at offset 20, must be 1 to {MAX_K}")
    if bits != label_bits(k):
        raise HeaderError(f"header: label_bits is {bits} at offset 11, must be ceil(log2 {k}) = {label_bits(k)}")
    if width * height > max_pixels:
        raise LimitError(
            f"header: {width}x{height} = {width * height} pixels (offset 12) exceeds the limit of "
            f"{max_pixels} pixels (raise max_pixels / --max-pixels for a trusted file)"
        )
    return Header(
        width=width,
        height=height,
        channels=channels,
        k=k,
        coding=coding,
        payload_length=payload_length,
        version=version,
    )


def build_file(header: Header, palette: bytes, payload: bytes) -> bytes:
    """Assemble a complete file from a header, palette bytes and payload bytes."""
    if len(palette) != header.palette_size:
        raise ValueError(f"palette is {len(palette)} bytes, header says {header.palette_size}")
    if len(payload) != header.payload_length:
        raise ValueError(f"payload is {len(payload)} bytes, header says {header.payload_length}")
    trailer = struct.pack(">I", zlib.crc32(payload, zlib.crc32(palette)))
    return b"".join((pack_header(header), palette, payload, trailer))


def read_exact(stream: BinaryIO, size: int, section: str, offset: int) -> bytes:
    """Read exactly `size` bytes in bounded chunks; raise TruncatedError naming the section if the stream ends."""
    parts = []
    remaining = size
    while remaining > 0:
        part = stream.read(min(remaining, READ_CHUNK))
        if not part:
            got = size - remaining
            raise TruncatedError(
                f"{section}: file ends at offset {offset + got}, {remaining} bytes short of the {size}-byte {section}"
            )
        parts.append(part)
        remaining -= len(part)
    return parts[0] if len(parts) == 1 else b"".join(parts)


def read_up_to(stream: BinaryIO, size: int) -> bytes:
    """Read `size` bytes, or fewer only if the stream ends (a pipe or socket may return short reads)."""
    parts = []
    remaining = size
    while remaining > 0:
        part = stream.read(remaining)
        if not part:
            break
        parts.append(bytes(part))
        remaining -= len(part)
    return b"".join(parts)


@dataclass(frozen=True)
class RawContainer:
    """A container read and CRC-checked but not yet decoded: header, palette bytes, payload bytes."""

    header: Header
    palette: bytes
    payload: bytes


def read_container(
    stream: BinaryIO,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    check_payload_length=None,
    allow_trailing: bool = False,
) -> RawContainer:
    """Read one container from a binary stream, verifying signature, header, limits, both CRCs and the end.

    `check_payload_length(header)` is called after the header is validated and
    before the payload is read, so a coding can reject an impossible length
    without the payload ever being allocated.
    """
    head = read_up_to(stream, HEADER_SIZE)
    header = parse_header(head, max_pixels=max_pixels)
    if check_payload_length is not None:
        check_payload_length(header)
    palette = read_exact(stream, header.palette_size, "palette", HEADER_SIZE)
    payload = read_exact(stream, header.payload_length, "payload", HEADER_SIZE + header.palette_size)
    trailer_offset = HEADER_SIZE + header.palette_size + header.payload_length
    trailer = read_exact(stream, TRAILER_SIZE, "trailer", trailer_offset)
    (stored_crc,) = struct.unpack(">I", trailer)
    actual_crc = zlib.crc32(payload, zlib.crc32(palette))
    if stored_crc != actual_crc:
        raise ChecksumError(
            f"trailer: CRC-32 mismatch at offset {trailer_offset} over palette and payload "
            f"(stored {stored_crc:08x}, computed {actual_crc:08x})"
        )
    if not allow_trailing and stream.read(1):
        raise TrailingDataError(f"trailer: unexpected bytes after the end of the file at offset {header.file_size}")
    return RawContainer(header=header, palette=palette, payload=payload)
