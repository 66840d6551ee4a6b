"""A pure-Python decoder of the band layer of codings 4, 5 and 7, written from spec/kmq.md sections 5.3, 5.4 and 5.6 alone.

It parses the band table with struct, cuts the rows as the spec says, and decodes each
band with the reference context decoder (model 4 for coding 4, spec 5.3.1; model 5 for
coding 5, 5.4.1); decode_context3 is coding 7 (5.6): orientation and model bytes, then a
band table that gives each band's row count. Tests check both against the compiled path.
"""

from __future__ import annotations

import struct

from context_reference import StreamError, decode_context


def decode_banded(payload: bytes, width: int, height: int, k: int, model: int = 4) -> list[int]:
    """The n labels of a coding-4 (model 4) or coding-5 (model 5) payload, in pixel order; StreamError for
    anything section 5.3 rejects."""
    if k == 1:
        if payload:
            raise StreamError("k = 1 and the payload is not empty")
        return [0] * (width * height)
    if len(payload) < 2:
        raise StreamError("no band count")
    (bands,) = struct.unpack(">H", payload[:2])
    if not (1 <= bands <= 64 and bands <= height):
        raise StreamError(f"band count {bands} out of range")
    if len(payload) < 2 + 4 * bands:
        raise StreamError("band table cut short")
    lengths = struct.unpack(f">{bands}I", payload[2 : 2 + 4 * bands])
    if 2 + 4 * bands + sum(lengths) != len(payload):
        raise StreamError("band lengths do not add up to the payload")
    labels: list[int] = []
    offset = 2 + 4 * bands
    for i, length in enumerate(lengths):
        rows = (i + 1) * height // bands - i * height // bands
        labels += decode_context(payload[offset : offset + length], width, rows, k, model=model)
        offset += length
    return labels


def decode_context3(payload: bytes, width: int, height: int, k: int) -> list[int]:
    """The n labels of a coding-7 (context3) payload, in pixel order; StreamError for anything section 5.6 rejects."""
    n = width * height
    if k == 1:
        if payload:
            raise StreamError("k = 1 and the payload is not empty")
        return [0] * n
    if len(payload) < 2:
        raise StreamError("no orientation and model bytes")
    orientation, model = payload[0], payload[1]
    if orientation not in (0, 1):
        raise StreamError(f"orientation {orientation} is not 0 or 1")
    if model not in (4, 5, 6, 7):
        raise StreamError(f"model {model} is not 4, 5, 6 or 7")
    if model == 6 and (k - 1).bit_length() > 8:
        raise StreamError("model 6 with labels of more than 8 bits")
    cw, ch = (height, width) if orientation == 1 else (width, height)  # the coded image C: the image or T
    rest = payload[2:]
    if len(rest) < 2:
        raise StreamError("no band count")
    (bands,) = struct.unpack(">H", rest[:2])
    if not (1 <= bands <= 64 and bands <= ch):
        raise StreamError(f"band count {bands} out of range")
    if len(rest) < 2 + 8 * bands:
        raise StreamError("band table cut short")
    rows = struct.unpack(f">{bands}I", rest[2 : 2 + 4 * bands])
    lengths = struct.unpack(f">{bands}I", rest[2 + 4 * bands : 2 + 8 * bands])
    if min(rows) < 1 or sum(rows) != ch:
        raise StreamError(f"band row counts {rows} do not cut {ch} rows into bands of at least one row")
    if 4 + 8 * bands + sum(lengths) != len(payload):
        raise StreamError("band lengths do not add up to the payload")
    coded: list[int] = []  # C's labels, row by row
    offset = 2 + 8 * bands
    for count, length in zip(rows, lengths):
        coded += decode_context(rest[offset : offset + length], cw, count, k, model=model)
        offset += length
    if orientation == 0:
        return coded
    return [coded[x * cw + y] for y in range(height) for x in range(width)]  # L(x, y) = T(y, x)
