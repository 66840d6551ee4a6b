"""Conformance vectors for multi-block xz payloads of the lzma coding (spec 5.1): valid and one-defect files.

`xz_vectors()` returns dicts in the format of tools/coded_vectors.py (name, data,
description, and pixels/width/height/channels or error), for the lead to wire into
tools/make_vectors.py as `external("xz_vectors", "xz_vectors")`. The streams are
built here field by field from the .xz format 1.0.4 (LZMA2 data from Python's lzma
module), blocks with both sizes in their headers as `xz -T` and kmcodec's encoder
write them; corrupt ones have every CRC correct except where the defect is a check
value, so each has exactly one defect. Run it to print a summary and check that
kmcodec decodes every vector as declared: `python tools/xz_vectors.py`.
"""

from __future__ import annotations

import lzma
import struct
import sys
import zlib
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from coded_vectors import fixed_labels, fixed_palette  # noqa: E402

from kmcodec.bitpack import label_bits  # noqa: E402
from kmcodec.codings import LZMA, label_bytes  # noqa: E402
from kmcodec.container import Header, build_file  # noqa: E402


def _vli(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    return bytes(out + bytes([value]))


def _crc(data: bytes, flip: int = 0) -> bytes:
    return struct.pack("<I", zlib.crc32(data) ^ flip)


def block_stream(data: bytes, cuts: list[int], *, declared: dict[int, int] | None = None,
                 index_sizes: dict[int, int] | None = None, check_flip: dict[int, int] | None = None,
                 backward_delta: int = 0) -> bytes:
    """An xz stream (CRC-32 check) of `data` in blocks ending at `cuts`, each with one LZMA2 filter and both sizes
    in its header. Defects on request, CRCs recomputed around them: `declared` block -> uncompressed size its header
    states, `index_sizes` block -> uncompressed size its index record states, `check_flip` block -> bits flipped in
    its CRC-32 check, `backward_delta` added to the footer's backward size field."""
    declared, index_sizes, check_flip = declared or {}, index_sizes or {}, check_flip or {}
    blocks, records = [], []
    for number, (start, end) in enumerate(zip([0, *cuts], [*cuts, len(data)])):
        piece = data[start:end]
        props = next(p for p in range(41) if (2 | (p & 1)) << (p // 2 + 11) >= max(len(piece), 4096))
        filters = [{"id": lzma.FILTER_LZMA2, "preset": 9, "dict_size": (2 | (props & 1)) << (props // 2 + 11)}]
        compressed = lzma.compress(piece, format=lzma.FORMAT_RAW, filters=filters)
        fields = b"\xc0" + _vli(len(compressed)) + _vli(declared.get(number, len(piece))) + bytes([0x21, 1, props])
        size = -(-(len(fields) + 5) // 4) * 4
        header = bytes([size // 4 - 1]) + fields + bytes(size - 5 - len(fields))
        header += _crc(header)
        blocks.append(header + compressed + bytes(-len(compressed) % 4) + _crc(piece, check_flip.get(number, 0)))
        records.append((len(header) + len(compressed) + 4, index_sizes.get(number, len(piece))))
    index = b"\x00" + _vli(len(records)) + b"".join(_vli(unpadded) + _vli(size) for unpadded, size in records)
    index += bytes(-len(index) % 4)
    index += _crc(index)
    flags = b"\x00\x01"
    backward = struct.pack("<I", len(index) // 4 - 1 + backward_delta)
    return b"\xfd7zXZ\x00" + flags + _crc(flags) + b"".join(blocks) + index + _crc(backward + flags) + backward + flags + b"YZ"


def _file(width: int, height: int, channels: int, k: int, palette: np.ndarray, payload: bytes) -> bytes:
    header = Header(width=width, height=height, channels=channels, k=k, coding=LZMA.id, payload_length=len(payload))
    return build_file(header, palette.tobytes(), payload)


def xz_vectors() -> list[dict]:
    """Valid multi-block lzma files (even and uneven blocks, one and two bytes per label) and one-defect ones."""
    vectors = []
    for k, channels, width, height, cuts, shape in ((64, 3, 64, 48, [1024, 2048], "three 1 KiB blocks"),
                                                   (64, 4, 64, 48, [1000, 3000], "blocks of 1000, 2000 and 72 bytes"),
                                                   (1000, 3, 45, 33, [1485], "two blocks of 1485 two-byte labels")):
        palette = fixed_palette(k, channels)
        labels = fixed_labels(width, height, k, seed=200 + len(vectors))
        payload = block_stream(label_bytes(labels, label_bits(k)), cuts)
        mode = "rgba" if channels == 4 else "rgb"
        vectors.append({
            "name": f"ok-lzma-blocks-k{k:04d}-{mode}-{width}x{height}.kmq",
            "data": _file(width, height, channels, k, palette, payload),
            "description": f"lzma coding, an xz stream of {shape}, both sizes in every block header (decodable in parallel)",
            "pixels": palette[labels].tobytes(), "width": width, "height": height, "channels": channels,
        })
    width, height, k, channels = 64, 48, 16, 3
    palette = fixed_palette(k, channels)
    labels = fixed_labels(width, height, k, seed=7)
    data = label_bytes(labels, label_bits(k))
    cuts = [1024, 2048]
    bad = {
        "block-check": ("the second block's CRC-32 check is wrong", block_stream(data, cuts, check_flip={1: 1})),
        "block-size": ("the second block's header declares one byte less than it holds (index agrees; CRCs correct)",
                       block_stream(data, cuts, declared={1: 1023}, index_sizes={1: 1023})),
        "index-size": ("the index records one byte less for the second block than its header declares",
                       block_stream(data, cuts, index_sizes={1: 1023})),
        "backward-size": ("the stream footer's backward size is 4 bytes too large (footer CRC correct)",
                          block_stream(data, cuts, backward_delta=1)),
        "too-many-labels": (f"three blocks holding {width}x{height + 16} labels, header says {width}x{height}",
                            block_stream(data + data[:1024], [1024, 2048, 3072])),
        "too-few-labels": (f"two blocks holding {width}x{height - 16} labels, header says {width}x{height}",
                           block_stream(data[:2048], [1024])),
    }
    for name, (description, payload) in bad.items():
        vectors.append({"name": f"bad-lzma-blocks-{name}.kmq", "description": f"lzma payload: {description}",
                        "data": _file(width, height, channels, k, palette, payload), "error": "coding"})
    out_of_range = bytearray(data)
    out_of_range[1500] = k  # in the second block
    vectors.append({"name": "bad-lzma-blocks-label-k.kmq", "error": "label",
                    "description": f"lzma payload of three blocks, the second holding a label equal to k = {k}",
                    "data": _file(width, height, channels, k, palette, block_stream(bytes(out_of_range), cuts))})
    return vectors


def main() -> int:
    from kmcodec import api
    from kmcodec.errors import KMQError

    failures = 0
    for vector in xz_vectors():
        try:
            image = api.decode(vector["data"])
            outcome = "ok" if image.to_array().tobytes() == vector.get("pixels") else "wrong pixels"
        except KMQError as exc:
            outcome = exc.kind
        expected = vector.get("error", "ok")
        failures += outcome != expected
        print(f"{'ok  ' if outcome == expected else 'FAIL'} {vector['name']}: {len(vector['data'])} bytes, "
              f"expects {expected}, got {outcome} -- {vector['description']}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
