"""Conformance vectors for the compact codings (spec sections 5.1-5.4): valid files and one-defect corrupt files.

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
from kmcodec.codings import BAND_MODEL, CODINGS_BY_NAME, JOINT_BAND_MODEL, label_bytes  # noqa: E402
from kmcodec.container import Header, build_file  # noqa: E402

CODED = ("deflate", "lzma", "context1", "context", "context2")
#: The banded context codings (spec 5.3, 5.4) and the model that codes their bands.
BANDED_MODELS = {"context": BAND_MODEL, "context2": JOINT_BAND_MODEL}


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


def coded_vectors() -> list[dict]:
    """All valid and corrupt vectors of codings 1 (deflate), 2 (lzma), 3 (context1), 4 (context) and 5 (context2)."""
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
    return vectors


def main() -> int:
    """Print the vectors' names, sizes and expected outcomes."""
    for vector in coded_vectors():
        outcome = f"error {vector['error']}" if "error" in vector else f"{vector['width']}x{vector['height']}"
        print(f"{vector['name']:44s} {len(vector['data']):7d} bytes  {outcome}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
