"""The label codings of the payload (spec section 5): a registry mapping the header's coding byte to a codec.

Each coding turns a flat label array into payload bytes and back. Raw (0) is the
bit-packed stream itself; further codings register here with their own ids.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from .bitpack import pack_labels, packed_size, unpack_labels
from .container import Header
from .errors import CodingError, HeaderError


@dataclass(frozen=True)
class Coding:
    """One payload coding: its header id, its name, and its encode/decode functions."""

    id: int
    name: str
    #: encode(labels: flat ndarray, header_without_length) -> payload bytes
    encode: Callable[[np.ndarray, Header], bytes]
    #: decode(payload, header) -> flat label array (validated: every label < k)
    decode: Callable[[bytes, Header], np.ndarray]
    #: the payload length the header must declare, or None if any length is possible
    expected_length: Callable[[Header], int | None]


def _raw_encode(labels: np.ndarray, header: Header) -> bytes:
    return pack_labels(labels, header.label_bits)


def _raw_decode(payload: bytes, header: Header) -> np.ndarray:
    return unpack_labels(payload, header.pixel_count, header.label_bits, header.k)


def _raw_expected_length(header: Header) -> int:
    return packed_size(header.pixel_count, header.label_bits)


RAW = Coding(0, "raw", _raw_encode, _raw_decode, _raw_expected_length)

CODINGS: dict[int, Coding] = {RAW.id: RAW}
CODINGS_BY_NAME: dict[str, Coding] = {c.name: c for c in CODINGS.values()}


def coding_for_id(coding_id: int) -> Coding:
    """Return the coding with this header id, or raise CodingError if it is not implemented."""
    try:
        return CODINGS[coding_id]
    except KeyError:
        known = ", ".join(f"{c.id} ({c.name})" for c in CODINGS.values())
        raise CodingError(f"header: unsupported coding {coding_id} at offset 10 (this decoder knows {known})") from None


def coding_for_name(name: str) -> Coding:
    """Return the coding with this name (as on the command line), or raise CodingError."""
    try:
        return CODINGS_BY_NAME[name]
    except KeyError:
        raise CodingError(f"unknown coding {name!r} (choose from {', '.join(CODINGS_BY_NAME)})") from None


def check_payload_length(header: Header) -> None:
    """Reject an unknown coding or an impossible payload length before the payload is read."""
    coding = coding_for_id(header.coding)
    expected = coding.expected_length(header)
    if expected is not None and header.payload_length != expected:
        raise HeaderError(
            f"header: payload_length is {header.payload_length} at offset 24, "
            f"a {coding.name} payload of {header.width}x{header.height} labels of {header.label_bits} bits "
            f"is {expected} bytes"
        )
