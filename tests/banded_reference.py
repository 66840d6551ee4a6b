"""A pure-Python decoder of the band layer of codings 4 and 5, written from spec/kmq.md sections 5.3 and 5.4 alone.

It parses the band table with struct, cuts the rows as the spec says, and decodes each
band with the reference context decoder (model 4 for coding 4, spec 5.3.1; model 5 for
coding 5, 5.4.1); tests check it against the compiled path.
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
