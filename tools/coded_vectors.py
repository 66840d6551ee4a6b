"""Conformance vectors for the compact codings (spec sections 5.1-5.6): valid files and one-defect corrupt files.

`coded_vectors()` returns a list of dicts for the conformance suite (the lead wires
it into tools/make_vectors.py): name, data (the whole file), description, and either
pixels + width + height + channels (the decoded RGB/RGBA bytes, row-major) or error
(the error kind of spec section 9). Palettes and labels are fixed (a seeded RNG and
closed-form patterns), never k-means. Corrupt files carry correct CRCs, so each has
exactly one defect. Run it to print a summary: `python tools/coded_vectors.py`.
"""

from __future__ import annotations

import dataclasses
import lzma
import struct
import sys
import zlib
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kmcodec import banded  # noqa: E402
from kmcodec.bitpack import label_bits, label_dtype  # noqa: E402
from kmcodec.codings import (  # noqa: E402
    BAND_MODEL, CLIMB_MODEL, CODINGS_BY_NAME, ESCAPE_FIRST_MODEL, JOINT_BAND_MODEL, label_bytes,
)
from kmcodec.container import Header, build_file  # noqa: E402

CODED = ("deflate", "lzma", "context1", "context", "context2")
#: The banded context codings (spec 5.3, 5.4) and the model that codes their bands.
BANDED_MODELS = {"context": BAND_MODEL, "context2": JOINT_BAND_MODEL}
#: Coding 6 (spec 5.5): the transposed image in the bands of coding 4 or 5, its first byte naming the model.
COLUMNS = "context-columns"
#: Coding 7 (spec 5.6): orientation and model bytes, then bands whose row counts the table gives.
CONTEXT3 = "context3"


def fixed_palette(k: int, channels: int) -> np.ndarray:
    """k distinct colours on a fixed walk through RGB (alpha varies too for RGBA)."""
    index = np.arange(k, dtype=np.int64)
    palette = np.stack(
        [(index * 37) % 256, (index * 91 + 17) % 256, (index * 53 + index // 256 * 7 + 101) % 256]
        + ([255 - (index * 29) % 256] if channels == 4 else []),
        axis=1,
    )
    return palette.astype(np.uint8)


def fixed_labels(width: int, height: int, k: int, seed: int) -> np.ndarray:
    """A photo-like label image: smooth bands, a few flat regions and sparse noise (seeded, so fixed)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    smooth = (x * 0.7 + y * 0.4 + 6 * np.sin(x / 9.0) * np.cos(y / 7.0)) * k / (width + height)
    labels = np.floor(smooth).astype(np.int64) % k
    labels[(x // 16 + y // 12) % 5 == 0] = (k // 2) % k
    noise = rng.random((height, width)) < 0.06
    labels[noise] = rng.integers(0, k, int(noise.sum()))
    return labels.astype(label_dtype(label_bits(k)))


def _file(header: Header, palette: np.ndarray, payload: bytes) -> bytes:
    header = dataclasses.replace(header, payload_length=len(payload))
    return build_file(header, palette.tobytes(), payload)


def _header(width: int, height: int, channels: int, k: int, coding: str) -> Header:
    return Header(width=width, height=height, channels=channels, k=k, coding=CODINGS_BY_NAME[coding].id, payload_length=0)


def _encode(coding: str, labels: np.ndarray, header: Header) -> bytes:
    return CODINGS_BY_NAME[coding].encode(labels.reshape(-1), header)


def _ok(coding: str, k: int, channels: int, width: int, height: int, seed: int) -> dict:
    palette = fixed_palette(k, channels)
    labels = fixed_labels(width, height, k, seed)
    header = _header(width, height, channels, k, coding)
    mode = "rgba" if channels == 4 else "rgb"
    return {
        "name": f"ok-{coding}-k{k:04d}-{mode}-{width}x{height}.kmq",
        "data": _file(header, palette, _encode(coding, labels, header)),
        "description": f"{coding} coding, k = {k} ({label_bits(k)}-bit labels), {mode.upper()}, {width}x{height}",
        "pixels": palette[labels].tobytes(),
        "width": width,
        "height": height,
        "channels": channels,
    }


def _bad(name: str, description: str, header: Header, palette: np.ndarray, payload: bytes, error: str) -> dict:
    return {"name": name, "data": _file(header, palette, payload), "description": description, "error": error}


def _detected_flip(coding: str, payload: bytes, header: Header) -> bytes:
    """The first single-bit flip, scanning from the middle of the payload, that the decoder rejects as `coding`."""
    from kmcodec.errors import CodingError, KMQError

    decode = CODINGS_BY_NAME[coding].decode
    start = len(payload) // 2
    for position in list(range(start, len(payload))) + list(range(0, start)):
        for bit in range(8):
            flipped = bytearray(payload)
            flipped[position] ^= 1 << bit
            try:
                decode(bytes(flipped), header)
            except CodingError:
                return bytes(flipped)
            except KMQError:
                continue
    raise RuntimeError(f"no detected bit flip in the {coding} payload")


def corrupt_vectors(coding: str) -> list[dict]:
    """One-defect files for a coding: truncated, flipped bit, left-over bytes, too many/too few labels, label >= k."""
    width, height, k, channels = 37, 23, 16, 3
    palette = fixed_palette(k, channels)
    labels = fixed_labels(width, height, k, seed=7)
    header = _header(width, height, channels, k, coding)
    payload = _encode(coding, labels, header)
    prefix = f"bad-{coding}"
    vectors = [
        _bad(f"{prefix}-truncated.kmq", f"{coding} payload cut short by 3 bytes (lengths and CRCs consistent)",
             header, palette, payload[:-3], "coding"),
        _bad(f"{prefix}-bitflip.kmq", f"{coding} payload with one flipped bit that the coding detects (CRCs recomputed)",
             header, palette, _detected_flip(coding, payload, header), "coding"),
        _bad(f"{prefix}-leftover.kmq", f"{coding} payload followed by one extra byte inside the payload",
             header, palette, payload + b"\x00", "coding"),
        _bad(f"{prefix}-too-many-labels.kmq", f"{coding} stream of {width}x{height + 1} labels, header says {width}x{height}",
             header, palette, _encode(coding, fixed_labels(width, height + 1, k, 7), dataclasses.replace(header, height=height + 1)),
             "coding"),
        _bad(f"{prefix}-too-few-labels.kmq", f"{coding} stream of {width}x{height - 1} labels, header says {width}x{height}",
             header, palette, _encode(coding, fixed_labels(width, height - 1, k, 7), dataclasses.replace(header, height=height - 1)),
             "coding"),
    ]
    if coding in ("deflate", "lzma"):
        raw = bytearray(label_bytes(labels, label_bits(k)))
        raw[len(raw) // 2] = k  # the one out-of-range label
        compressed = (
            zlib.compress(bytes(raw), 9)
            if coding == "deflate"
            else lzma.compress(bytes(raw), format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC32)
        )
        vectors.append(_bad(f"{prefix}-label-k.kmq", f"{coding} stream holding a label equal to k = {k}",
                            header, palette, compressed, "label"))
        vectors.append(_bad(f"{prefix}-garbage.kmq", f"payload that is not a {coding} stream at all",
                            header, palette, bytes(range(64)), "coding"))
    elif coding == "context1":
        vectors.append(_bad(f"{prefix}-short-start.kmq", "context1 payload of 3 bytes, shorter than the coder's 4-byte start",
                            header, palette, payload[:3], "coding"))
    elif coding == COLUMNS:
        vectors.extend(_column_vectors(palette))
    elif coding == CONTEXT3:
        vectors.extend(_context3_vectors())
    else:
        vectors.extend(_band_table_vectors(coding, header, palette, labels))
    if coding.startswith("context"):
        one = _header(width, height, channels, 1, coding)
        vectors.append(_bad(f"{prefix}-k0001-nonempty.kmq", f"k = 1 {coding} payload that is not empty",
                            one, fixed_palette(1, channels), b"\x00\x00\x00\x00", "coding"))
    return vectors


def banded_payload(labels: np.ndarray, header: Header, bands: int, coding: str = "context") -> bytes:
    """A coding-4 (or coding-5) payload with a chosen band count (the reference encoder picks 1 for small images)."""
    from kmcodec.codings import _context_kernel

    kernel, width, model = _context_kernel(), header.width, BANDED_MODELS[coding]
    flat = np.ascontiguousarray(labels.reshape(-1))
    return banded.encode_bands(flat, width, header.height, lambda band, rows: kernel.encode(band, width, rows, header.k, model),
                               bands=bands, workers=1)


def _table(bands: int, lengths: list[int]) -> bytes:
    return struct.pack(f">H{len(lengths)}I", bands, *lengths)


def _band_table_vectors(coding: str, header: Header, palette: np.ndarray, labels: np.ndarray) -> list[dict]:
    """One-defect files in the band table (spec 5.3) of coding 4 or 5, around a valid 3-band payload."""
    payload = banded_payload(labels, header, 3, coding)
    lengths = list(struct.unpack(">3I", payload[2:14]))
    streams = payload[14:]
    rows = header.height
    defects = [
        ("band-count-zero", "band count 0", _table(0, []) + streams),
        ("band-count-over-height", f"band count {rows + 1}, more than the {rows} rows", _table(rows + 1, [0] * (rows + 1))),
        ("band-count-65", "band count 65, more than 64 (the image has 70 rows)", _table(65, [0] * 65)),
        ("band-table-short", "a 3-band table cut short by one byte", payload[:13]),
        ("band-lengths-over", "band lengths adding up to one byte more than the payload holds",
         _table(3, [lengths[0], lengths[1] + 1, lengths[2]]) + streams),
        ("band-lengths-under", "band lengths adding up to one byte less than the payload holds",
         _table(3, [lengths[0], lengths[1] - 1, lengths[2]]) + streams),
        ("band-stream-ends-early", "the last band's stream one byte short (its length says so)",
         _table(3, [lengths[0], lengths[1], lengths[2] - 1]) + streams[:-1]),
        ("band-stream-short-start", "a band stream of 3 bytes, shorter than the coder's 4-byte start",
         _table(3, [lengths[0], 3, lengths[2]]) + streams[: lengths[0]] + streams[lengths[0] : lengths[0] + 3]
         + streams[lengths[0] + lengths[1] :]),
    ]
    tall = dataclasses.replace(header, height=70)
    coding_id = CODINGS_BY_NAME[coding].id
    return [_bad(f"bad-{coding}-{name}.kmq", f"{coding} (coding {coding_id}) payload with {what}",
                 tall if name == "band-count-65" else header, palette, data, "coding")
            for name, what, data in defects]


def _ok_multiband(coding: str, k: int, channels: int, width: int, height: int, bands: int, seed: int) -> dict:
    vector = _ok(coding, k, channels, width, height, seed)
    palette = fixed_palette(k, channels)
    labels = fixed_labels(width, height, k, seed)
    header = _header(width, height, channels, k, coding)
    mode = "rgba" if channels == 4 else "rgb"
    vector.update(name=f"ok-{coding}-k{k:04d}-{mode}-{width}x{height}-{bands}bands.kmq",
                  data=_file(header, palette, banded_payload(labels, header, bands, coding)),
                  description=f"{coding} coding in {bands} bands, k = {k} ({label_bits(k)}-bit labels), {mode.upper()}, "
                              f"{width}x{height}")
    return vector


def columns_payload(labels: np.ndarray, k: int, model: int, bands: int | None = None) -> bytes:
    """A coding-6 payload (spec 5.5) of a height x width label grid with a chosen model and band count, built as
    kmcodec.codings._encode_columns builds it: the model byte, then the band table and streams of the transposed
    image (`height` wide, `width` high), band i holding the image's columns floor(i*width/B) to floor((i+1)*width/B)."""
    from kmcodec.codings import _context_kernel

    kernel = _context_kernel()
    if k == 1:
        return b""
    height, width = labels.shape
    grid = np.ascontiguousarray(labels, dtype=label_dtype(label_bits(k)))

    def code_columns(start: int, stop: int) -> bytes:
        band = np.ascontiguousarray(grid[:, start:stop].T)
        return kernel.encode(band, height, stop - start, k, model)

    return bytes([model]) + banded.encode_band_streams(height, width, code_columns, bands=bands, workers=1)


def _ok_columns(model: int, k: int, channels: int, width: int, height: int, bands: int | None, seed: int) -> dict:
    """A valid coding-6 file with a chosen model (the reference encoder keeps the smaller) and band count."""
    palette = fixed_palette(k, channels)
    labels = fixed_labels(width, height, k, seed)
    header = _header(width, height, channels, k, COLUMNS)
    mode = "rgba" if channels == 4 else "rgb"
    count = 1 if bands is None else bands
    model_part = "" if k == 1 else f"-model{model}"
    bands_part = "" if bands is None else f"-{bands}bands"
    how = "an empty payload (k = 1)" if k == 1 else f"model {model}, {count} band{'s' if count > 1 else ''} of columns"
    return {
        "name": f"ok-{COLUMNS}{model_part}-k{k:04d}-{mode}-{width}x{height}{bands_part}.kmq",
        "data": _file(header, palette, columns_payload(labels, k, model, bands)),
        "description": f"{COLUMNS} coding (coding 6), {how}, k = {k} ({label_bits(k)}-bit labels), {mode.upper()}, "
                       f"{width}x{height}",
        "pixels": palette[labels].tobytes(),
        "width": width,
        "height": height,
        "channels": channels,
    }


def _column_vectors(palette: np.ndarray) -> list[dict]:
    """One-defect coding-6 files (spec 5.5): the model byte, an empty payload, and the band table and streams
    checked with the transposed dimensions (at most `width` bands), around a valid 3-band payload of a 23 x 37
    image (narrower than it is high, so a band count can exceed the width and not the height)."""
    k, channels, width, height = 16, 3, 23, 37
    labels = fixed_labels(width, height, k, seed=11)
    header = _header(width, height, channels, k, COLUMNS)
    payload = columns_payload(labels, k, JOINT_BAND_MODEL, 3)
    model, rest = payload[:1], payload[1:]
    lengths = list(struct.unpack(">3I", rest[2:14]))
    streams = rest[14:]
    first, second, last = streams[: lengths[0]], streams[lengths[0] : lengths[0] + lengths[1]], streams[lengths[0] + lengths[1] :]
    # the model byte: a 40 x 1 image, whose transposed image is one column (W = N = NW = NE everywhere), so every
    # context of model 4 is model 5's and the rest of the payload decodes alike with either: only the byte is wrong
    row_labels = fixed_labels(40, 1, k, seed=12)
    row = _header(40, 1, channels, k, COLUMNS)
    row_rest = columns_payload(row_labels, k, BAND_MODEL, 3)[1:]
    assert row_rest == columns_payload(row_labels, k, JOINT_BAND_MODEL, 3)[1:]
    # a band count over the width and within the height: the rest is a valid coding-5 payload of the image by
    # rows in width + 1 bands, which a decoder that bounded B by the height (or did not transpose) would accept
    by_rows = banded_payload(labels, dataclasses.replace(header, coding=CODINGS_BY_NAME["context2"].id), width + 1,
                             "context2")
    wide = _header(70, height, channels, k, COLUMNS)
    defects = [
        ("model-byte-0", row, b"\x00" + row_rest, "model byte 0 before a rest that models 4 and 5 both decode"),
        ("model-byte-3", row, b"\x03" + row_rest, "model byte 3 (coding 3's model) before a rest that models 4 and 5 both decode"),
        ("model-byte-6", row, b"\x06" + row_rest, "model byte 6 before a rest that models 4 and 5 both decode"),
        ("model-byte-255", row, b"\xff" + row_rest, "model byte 255 before a rest that models 4 and 5 both decode"),
        ("empty-k0016", header, b"", "an empty payload with k = 16 (only k = 1 has no payload)"),
        ("model-byte-only", header, model, "the model byte alone, no band count"),
        ("band-count-zero", header, model + _table(0, []), "band count 0 and nothing after it (an empty table, no streams)"),
        ("band-count-65", wide, model + _table(65, [4] * 65) + bytes(4 * 65),
         "band count 65, more than 64 (the image has 70 columns), with 65 streams of 4 bytes"),
        ("band-count-over-width", header, model + by_rows,
         f"band count {width + 1}, more than the {width} columns but not the {height} rows: the rest is a valid "
         f"context2 payload of the image by rows"),
        ("band-table-short", header, payload[:14], "a 3-band table cut short by one byte"),
        ("band-lengths-over", header, model + _table(3, [lengths[0], lengths[1] + 1, lengths[2]]) + streams,
         "band lengths adding up to one byte more than the payload holds"),
        ("band-lengths-under", header, model + _table(3, [lengths[0], lengths[1] - 1, lengths[2]]) + streams,
         "band lengths adding up to one byte less than the payload holds"),
        ("band-stream-ends-early", header, model + _table(3, [lengths[0], lengths[1], lengths[2] - 1]) + streams[:-1],
         "the last band's stream one byte short (its length says so)"),
        ("band-stream-short-start", header, model + _table(3, [lengths[0], 3, lengths[2]]) + first + second[:3] + last,
         "a band stream of 3 bytes, shorter than the coder's 4-byte start"),
        ("band-stream-leftover", header, model + _table(3, [lengths[0], lengths[1] + 1, lengths[2]]) + first + second
         + b"\x00" + last, "one byte left over after the middle band's last label (its length says so)"),
    ]
    return [_bad(f"bad-{COLUMNS}-{name}.kmq", f"{COLUMNS} (coding 6) payload with {what}", where,
                 fixed_palette(k, channels), data, "coding")
            for name, where, data, what in defects]


#: Valid coding-6 files: (model, k, channels, width, height, bands or None for the reference encoder's 1). Both
#: models at 1-, 4-, 5- (model 5's hashed quad), 6-, 7-, 8- and 10-bit labels (uint16), RGB and RGBA, wide, tall,
#: one column and one row; bands up to the width (B = width on a tall image, 60 one-label bands of a 60 x 1
#: image, and the most, 64, of an 80-column image).
COLUMN_CASES = [
    (4, 2, 3, 31, 17, None),
    (5, 2, 3, 17, 31, 17),
    (5, 16, 3, 97, 61, None),
    (4, 16, 3, 61, 97, 3),
    (5, 17, 3, 29, 53, 2),
    (4, 64, 4, 48, 64, 4),
    (5, 64, 4, 64, 48, None),
    (5, 100, 4, 36, 40, 3),
    (4, 256, 3, 50, 80, 5),
    (5, 256, 3, 80, 50, 64),
    (4, 1000, 3, 45, 33, None),
    (5, 1000, 4, 33, 45, 2),
    (5, 16, 3, 1, 60, None),
    (4, 64, 4, 60, 1, 60),
    (4, 1, 3, 9, 7, None),
]


def context3_payload(labels: np.ndarray, k: int, columns: bool, model: int, heights: list[int]) -> bytes:
    """A coding-7 payload (spec 5.6) of a height x width label grid with a chosen orientation, model and band
    heights (rows of the coded image: the image, or its transpose when `columns`), built from the spec's layout."""
    from kmcodec.codings import _context_kernel

    kernel = _context_kernel()
    if k == 1:
        return b""
    grid = np.ascontiguousarray(labels.T if columns else labels, dtype=label_dtype(label_bits(k)))
    rows, row_width = grid.shape
    assert sum(heights) == rows
    return bytes([int(columns), model]) + banded.encode_sized_band_streams(
        row_width, heights, lambda start, stop: kernel.encode(grid[start:stop], row_width, stop - start, k, model),
        workers=1)


def _ok_context3(columns: bool, model: int, k: int, channels: int, width: int, height: int, heights: list[int] | None,
                 seed: int) -> dict:
    """A valid coding-7 file with a chosen orientation, model and band heights (None: one band)."""
    palette = fixed_palette(k, channels)
    labels = fixed_labels(width, height, k, seed)
    header = _header(width, height, channels, k, CONTEXT3)
    mode = "rgba" if channels == 4 else "rgb"
    rows = width if columns else height
    heights = [rows] if heights is None else heights
    way = "columns" if columns else "rows"
    if len(heights) == 1:
        cut = ""
    elif len(set(heights)) == 1:
        cut = f"-{len(heights)}bands-of-{heights[0]}"
    else:
        cut = f"-bands{'-'.join(map(str, heights))}"
    parts = "" if k == 1 else f"-{way}-model{model}{cut}"
    how = ("an empty payload (k = 1)" if k == 1 else
           f"by {way}, model {model}, {len(heights)} band{'s' if len(heights) > 1 else ''} of "
           f"{heights[0] if len(set(heights)) == 1 else ', '.join(map(str, heights))} {way}")
    return {
        "name": f"ok-{CONTEXT3}{parts}-k{k:04d}-{mode}-{width}x{height}.kmq",
        "data": _file(header, palette, context3_payload(labels, k, columns, model, heights)),
        "description": f"{CONTEXT3} coding (coding 7), {how}, k = {k} ({label_bits(k)}-bit labels), {mode.upper()}, "
                       f"{width}x{height}",
        "pixels": palette[labels].tobytes(),
        "width": width,
        "height": height,
        "channels": channels,
    }


#: Valid coding-7 files: (by columns, model, k, channels, width, height, band heights or None for one band).
#: Model 6 at 1- to 8-bit labels, k a power of two and not (the climb skips heights whose other subtree is all >= k),
#: models 4 and 5 (10-bit labels for model 4), both orientations, bands of unequal heights down to one row, and
#: the most bands (64).
CONTEXT3_CASES = [
    (False, 6, 2, 3, 31, 17, None),
    (True, 6, 3, 3, 17, 31, [5, 12]),
    (False, 6, 16, 3, 97, 61, [10, 40, 11]),
    (True, 6, 17, 3, 29, 53, [1, 27, 1]),
    (False, 6, 64, 4, 64, 48, [30, 18]),
    (True, 6, 64, 3, 48, 64, None),
    (False, 6, 100, 4, 36, 40, [1] * 40),
    (True, 6, 200, 3, 50, 80, [7, 43]),
    (False, 6, 256, 3, 80, 50, [2] * 25),
    (False, 5, 64, 3, 61, 97, [90, 7]),
    (True, 4, 16, 4, 61, 97, [3, 55, 3]),
    (False, 4, 1000, 3, 45, 33, [20, 13]),
    (True, 5, 1000, 4, 33, 45, None),
    (False, 6, 64, 3, 70, 64, [1] * 64),
    (True, 6, 16, 3, 1, 60, None),
    (False, 6, 64, 4, 60, 1, None),
    (False, 6, 1, 3, 9, 7, None),
    # model 7 (5.6.2): "one of the neighbours?" first; b = 1, k not a power of two, 8 bits, over 8 bits, one column
    # and one row (a single distinct neighbour after the first label), RGBA
    (False, 7, 2, 3, 31, 17, None),
    (False, 7, 16, 3, 97, 61, [10, 40, 11]),
    (True, 7, 37, 4, 29, 53, [1, 27, 1]),
    (False, 7, 256, 3, 80, 50, [2] * 25),
    (True, 7, 1000, 3, 33, 45, [20, 13]),
    (True, 7, 3, 3, 1, 60, None),
    (False, 7, 64, 3, 60, 1, None),
]


def _context3_vectors() -> list[dict]:
    """One-defect coding-7 files (spec 5.6): the orientation and model bytes, model 6 beyond 8 bits, an empty or
    short payload, and the band table's counts, row counts and lengths, around a valid 3-band payload of a 23 x 37
    image by columns (so the row counts add up to the width, 23, not the height)."""
    k, channels, width, height = 16, 3, 23, 37
    palette = fixed_palette(k, channels)
    labels = fixed_labels(width, height, k, seed=13)
    header = _header(width, height, channels, k, CONTEXT3)
    heights = [5, 12, 6]
    payload = context3_payload(labels, k, True, CLIMB_MODEL, heights)
    lengths = list(struct.unpack(">3I", payload[16:28]))
    streams = payload[28:]
    first, second, last = streams[: lengths[0]], streams[lengths[0] : lengths[0] + lengths[1]], streams[lengths[0] + lengths[1] :]

    def table(bands: int, rows: list[int], sizes: list[int]) -> bytes:
        return struct.pack(f">H{len(rows)}I{len(sizes)}I", bands, *rows, *sizes)

    head = payload[:2]
    # model bytes and orientation: a one-row image (the coded image by rows is one row, where W = N = NW = NE
    # everywhere after the first label, so models 4, 5 and 6 read the same contexts... but models 6 and 7 code
    # escapes and questions differently), so each wrong byte sits before a rest that is valid for some model
    row_labels = fixed_labels(40, 1, k, seed=14)
    row = _header(40, 1, channels, k, CONTEXT3)
    row_rest = context3_payload(row_labels, k, False, JOINT_BAND_MODEL, [1])[2:]
    big = 300
    wide = _header(big, 2, channels, big, CONTEXT3)
    big_labels = (np.arange(2 * big) % big).reshape(2, big)
    big_rest = context3_payload(big_labels, big, False, BAND_MODEL, [2])[2:]
    tall = _header(3, 70, channels, k, CONTEXT3)
    by_rows = context3_payload(labels, k, False, CLIMB_MODEL, [20, 17])  # valid by rows, not by columns (37 rows)
    model7 = context3_payload(labels, k, True, ESCAPE_FIRST_MODEL, heights)
    model7_lengths = list(struct.unpack(">3I", model7[16:28]))
    defects = [
        ("orientation-2", row, b"\x02\x05" + row_rest, "orientation byte 2 before a valid rest (model 5, one band)"),
        ("orientation-255", row, b"\xff\x05" + row_rest, "orientation byte 255 before a valid rest (model 5, one band)"),
        ("model-byte-3", row, b"\x00\x03" + row_rest, "model byte 3 (coding 3's model) before a valid model-5 rest"),
        ("model-byte-8", row, b"\x00\x08" + row_rest, "model byte 8 before a valid model-5 rest"),
        ("model-6-k0300", wide, b"\x00\x06" + big_rest,
         "model byte 6 with k = 300 (9-bit labels; model 6 codes at most 8) before a valid model-4 rest"),
        ("empty-k0016", header, b"", "an empty payload with k = 16 (only k = 1 has no payload)"),
        ("orientation-only", header, payload[:1], "the orientation byte alone, no model byte"),
        ("no-band-count", header, head, "the orientation and model bytes alone, no band count"),
        ("band-count-zero", header, head + table(0, [], []), "band count 0 and nothing after it"),
        ("band-count-65", tall, b"\x00\x06" + table(65, [1] * 64 + [6], [4] * 65) + bytes(4 * 65),
         "band count 65, more than 64 (the image has 70 rows), with 65 streams of 4 bytes"),
        ("band-count-over-width", header, b"\x01" + by_rows[1:2] + table(24, [1] * 23 + [14], [4] * 24) + bytes(4 * 24),
         f"band count 24 by columns, more than the {width} columns (the image has {height} rows)"),
        ("by-rows-heights", header, b"\x01" + by_rows[1:],
         f"orientation 1 (columns) before a valid payload by rows, whose row counts add up to the {height} rows, "
         f"not the {width} columns"),
        ("band-table-short", header, payload[:27], "a 3-band table cut short by one byte"),
        ("band-rows-zero", header, head + table(3, [5, 0, 18], lengths) + streams, "a band of 0 rows (row counts 5, 0, 18)"),
        ("band-rows-over", header, head + table(3, [5, 12, 7], lengths) + streams,
         f"row counts adding up to 24, one more than the {width} columns"),
        ("band-rows-under", header, head + table(3, [5, 12, 5], lengths) + streams,
         f"row counts adding up to 22, one less than the {width} columns"),
        ("band-lengths-over", header, head + table(3, heights, [lengths[0], lengths[1] + 1, lengths[2]]) + streams,
         "band lengths adding up to one byte more than the payload holds"),
        ("band-lengths-under", header, head + table(3, heights, [lengths[0], lengths[1] - 1, lengths[2]]) + streams,
         "band lengths adding up to one byte less than the payload holds"),
        ("band-stream-ends-early", header, head + table(3, heights, [lengths[0], lengths[1], lengths[2] - 1]) + streams[:-1],
         "the last band's stream one byte short (its length says so)"),
        ("band-stream-short-start", header, head + table(3, heights, [lengths[0], 3, lengths[2]]) + first + second[:3] + last,
         "a band stream of 3 bytes, shorter than the coder's 4-byte start"),
        ("band-stream-leftover", header, head + table(3, heights, [lengths[0], lengths[1] + 1, lengths[2]]) + first + second
         + b"\x00" + last, "one byte left over after the middle band's last label (its length says so)"),
        ("model7-band-stream-ends-early", header, model7[:2] + table(3, heights, model7_lengths[:2] + [model7_lengths[2] - 1])
         + model7[28:-1], "model 7, the last band's stream one byte short (its length says so)"),
        ("heights-swapped", header, head + table(3, [12, 5, 6], lengths) + streams,
         "the first two bands' row counts swapped (5 and 12 rows coded, 12 and 5 declared): the first stream runs "
         "out or has bytes left over"),
    ]
    return [_bad(f"bad-{CONTEXT3}-{name}.kmq", f"{CONTEXT3} (coding 7) payload with {what}", where,
                 fixed_palette(where.k, channels), data, "coding")
            for name, where, data, what in defects]


def coded_vectors() -> list[dict]:
    """All valid and corrupt vectors of codings 1 (deflate), 2 (lzma), 3 (context1), 4 (context), 5 (context2),
    6 (context-columns) and 7 (context3)."""
    vectors: list[dict] = []
    cases = [(2, 3, 31, 17), (16, 3, 97, 61), (64, 3, 97, 61), (64, 4, 64, 48), (256, 3, 80, 50), (1000, 3, 45, 33),
             (1, 3, 9, 7)]
    for coding in CODED:
        for index, (k, channels, width, height) in enumerate(cases):
            vectors.append(_ok(coding, k, channels, width, height, seed=100 + index))
        vectors.extend(corrupt_vectors(coding))
    for index, (k, channels, width, height, bands) in enumerate([(2, 3, 31, 17, 17), (16, 3, 97, 61, 3), (64, 4, 64, 48, 4),
                                                                  (256, 3, 80, 50, 5), (1000, 3, 45, 33, 2)]):
        vectors.append(_ok_multiband("context", k, channels, width, height, bands, seed=200 + index))
    # coding 5 adds cases where its quad context is hashed (4b > 16: k = 17 and 64) or exact (k = 16), and its
    # joint tree contexts are exact (b <= 6) or reduced (b = 7, 8, 10)
    for index, (k, channels, width, height, bands) in enumerate([(17, 3, 53, 29, 2), (100, 4, 40, 36, 3),
                                                                  (16, 3, 97, 61, 3), (256, 3, 80, 50, 5)]):
        vectors.append(_ok_multiband("context2", k, channels, width, height, bands, seed=300 + index))
    for index, (model, k, channels, width, height, bands) in enumerate(COLUMN_CASES):
        vectors.append(_ok_columns(model, k, channels, width, height, bands, seed=400 + index))
    vectors.extend(corrupt_vectors(COLUMNS))
    for index, (columns, model, k, channels, width, height, heights) in enumerate(CONTEXT3_CASES):
        vectors.append(_ok_context3(columns, model, k, channels, width, height, heights, seed=500 + index))
    vectors.extend(corrupt_vectors(CONTEXT3))
    return vectors


def main() -> int:
    """Print the vectors' names, sizes and expected outcomes."""
    for vector in coded_vectors():
        outcome = f"error {vector['error']}" if "error" in vector else f"{vector['width']}x{vector['height']}"
        print(f"{vector['name']:44s} {len(vector['data']):7d} bytes  {outcome}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
