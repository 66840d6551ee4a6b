"""Pack and unpack labels as a contiguous MSB-first bitstream of exactly b bits each (spec section 5).

Works on groups of 8 labels, which always fill exactly b bytes, with numpy shifts
on 64-bit words; large images are processed in chunks to bound temporary memory.
When the C extension is built (kmcodec/_fastpath.c) it does both loops, bit for bit the same.
"""

from __future__ import annotations

import numpy as np

from . import fastpath
from .container import label_bits  # noqa: F401  (lives with the header it sizes; re-exported here)
from .errors import LabelError, PaddingError, TruncatedError

#: Labels per chunk: a multiple of 8 so every chunk starts on a byte boundary.
CHUNK_LABELS = 1 << 20


def packed_size(n_labels: int, bits: int) -> int:
    """Return the bytes of a bitstream of n_labels labels of `bits` bits: ceil(n*b/8)."""
    return (n_labels * bits + 7) // 8


def label_dtype(bits: int) -> np.dtype:
    """The smallest unsigned dtype that holds a label of `bits` bits."""
    return np.dtype(np.uint8) if bits <= 8 else np.dtype(np.uint16)


def pack_labels(labels: np.ndarray, bits: int) -> bytes:
    """Pack a flat array of labels, each < 2**bits, into ceil(n*bits/8) bytes, MSB first."""
    flat = np.ascontiguousarray(labels).reshape(-1)
    n = flat.size
    if bits == 0 or n == 0:
        return b""
    if bits == 8:
        return flat.astype(np.uint8, copy=False).tobytes()
    if bits == 16:
        return flat.astype(">u2").tobytes()
    fast = fastpath.pack(flat, bits)
    if fast is not None:
        return fast
    out = bytearray(packed_size(n, bits))
    for start in range(0, n, CHUNK_LABELS):
        chunk = flat[start : start + CHUNK_LABELS]
        packed = _pack_chunk(chunk, bits)
        offset = start * bits // 8
        out[offset : offset + len(packed)] = packed
    return bytes(out)


def _pack_chunk(chunk: np.ndarray, bits: int) -> bytes:
    n = chunk.size
    groups = -(-n // 8)
    padded = np.zeros(groups * 8, dtype=np.uint64)
    padded[:n] = chunk
    g = padded.reshape(groups, 8)
    lo = np.zeros(groups, dtype=np.uint64)
    hi = np.zeros(groups, dtype=np.uint64)
    for j in range(8):
        shift = bits * (7 - j)
        column = g[:, j]
        if shift < 64:
            lo |= column << np.uint64(shift)
            if shift + bits > 64:
                hi |= column >> np.uint64(64 - shift)
        else:
            hi |= column << np.uint64(shift - 64)
    out = np.empty((groups, bits), dtype=np.uint8)
    lo_bytes = lo.astype(">u8").view(np.uint8).reshape(groups, 8)
    if bits <= 8:
        out[:] = lo_bytes[:, 8 - bits :]
    else:
        hi_bytes = hi.astype(">u8").view(np.uint8).reshape(groups, 8)
        out[:, : bits - 8] = hi_bytes[:, 16 - bits :]
        out[:, bits - 8 :] = lo_bytes
    return out.tobytes()[: packed_size(n, bits)]


def unpack_labels(data: bytes | memoryview, n_labels: int, bits: int, k: int | None = None) -> np.ndarray:
    """Unpack n_labels labels of `bits` bits from a bitstream; check padding and, given k, that labels < k.

    Returns a flat uint8 array (bits <= 8) or uint16 array (bits > 8). Raises
    TruncatedError if the data is shorter than the stream, PaddingError if a
    padding bit is set, LabelError if a label is >= k.
    """
    dtype = label_dtype(bits)
    if bits == 0:
        return np.zeros(n_labels, dtype=dtype)
    expected = packed_size(n_labels, bits)
    buf = memoryview(data)
    if len(buf) < expected:
        raise TruncatedError(f"label stream: {len(buf)} bytes, expected {expected}")
    used_bits = (n_labels * bits) % 8
    if used_bits and buf[expected - 1] & ((1 << (8 - used_bits)) - 1):
        raise PaddingError(
            f"label stream: non-zero padding bits in the last byte (offset {expected - 1} of the stream)"
        )
    if bits == 8:
        labels = np.frombuffer(buf[:expected], dtype=np.uint8).copy()
    elif bits == 16:
        labels = np.frombuffer(buf[:expected], dtype=">u2").astype(np.uint16)
    elif (fast := fastpath.unpack(buf[:expected], n_labels, bits, dtype)) is not None:
        labels, top = fast
        if k is not None and top >= k:
            where = int(np.argmax(labels >= k))
            raise LabelError(f"label stream: pixel {where} has label {int(labels[where])} >= k = {k}")
        return labels
    else:
        labels = np.empty(n_labels, dtype=dtype)
        for start in range(0, n_labels, CHUNK_LABELS):
            count = min(CHUNK_LABELS, n_labels - start)
            first = start * bits // 8
            labels[start : start + count] = _unpack_chunk(buf[first : first + packed_size(count, bits)], count, bits)
    if k is not None and k < (1 << bits) and labels.size:
        top = int(labels.max())
        if top >= k:
            where = int(np.argmax(labels >= k))
            raise LabelError(f"label stream: pixel {where} has label {top if labels[where] == top else int(labels[where])} >= k = {k}")
    return labels


def _unpack_chunk(chunk: memoryview, n: int, bits: int) -> np.ndarray:
    groups = -(-n // 8)
    raw = np.zeros(groups * bits, dtype=np.uint8)
    raw[: len(chunk)] = np.frombuffer(chunk, dtype=np.uint8)
    raw = raw.reshape(groups, bits)
    lo_bytes = np.zeros((groups, 8), dtype=np.uint8)
    lo_width = min(bits, 8)
    lo_bytes[:, 8 - lo_width :] = raw[:, bits - lo_width :]
    lo = lo_bytes.view(">u8").reshape(groups).astype(np.uint64)
    if bits > 8:
        hi_bytes = np.zeros((groups, 8), dtype=np.uint8)
        hi_bytes[:, 16 - bits :] = raw[:, : bits - 8]
        hi = hi_bytes.view(">u8").reshape(groups).astype(np.uint64)
    mask = np.uint64((1 << bits) - 1)
    out = np.empty((groups, 8), dtype=label_dtype(bits))
    for j in range(8):
        shift = bits * (7 - j)
        if shift + bits <= 64:
            column = lo >> np.uint64(shift)
        elif shift < 64:
            column = (lo >> np.uint64(shift)) | (hi << np.uint64(64 - shift))
        else:
            column = hi >> np.uint64(shift - 64)
        out[:, j] = column & mask
    return out.reshape(-1)[:n]
