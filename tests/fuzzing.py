"""Shared by the in-suite fuzz test and tools/fuzz.py: seed files of every registered coding and mutations.

Seeds are real images (scikit-learn's china.jpg, quantized) plus synthetic
palettes for label widths a photo crop does not reach; every mutation keeps
enough structure (recomputed header or trailer CRC) to reach the deeper decoder.
"""

from __future__ import annotations

import dataclasses
import random
import struct
import zlib

import numpy as np

from kmcodec import api, codings
from kmcodec.codings import CODINGS
from kmcodec.container import HEADER_SIZE, TRAILER_SIZE, Header, build_file
from kmcodec.image import KMQImage

#: (name, offset, struct format) of every header field after the signature.
HEADER_FIELDS = (
    ("version", 8, ">B"),
    ("channels", 9, ">B"),
    ("coding", 10, ">B"),
    ("label_bits", 11, ">B"),
    ("width", 12, ">I"),
    ("height", 16, ">I"),
    ("k", 20, ">I"),
    ("payload_length", 24, ">Q"),
)
MUTATIONS = ("bitflip", "truncate", "insert", "delete", "header_field", "body_bytes", "body_splice", "stack")


def seed_images(china: np.ndarray, *, large: bool = False) -> list[KMQImage]:
    """Small images covering label widths 0, 1, 2, 3, 4, 8, 9 and 13 bits, RGB and RGBA.

    With `large`, also a 420 x 320 crop at k = 16 (a 67 KB payload), so the time
    bound per megabyte is measured on inputs big enough to mean something.
    """
    crop = china[200:216, 300:324]
    images = [api.quantize(crop, k) for k in (1, 2, 5, 16, 200)]
    alpha = np.concatenate([crop[:9, :11], np.full((9, 11, 1), 128, np.uint8)], axis=2)
    alpha[0, 0, 3] = 0
    images.append(api.quantize(alpha, 3))
    rng = np.random.default_rng(5)
    for k, shape in ((300, (7, 9)), (4097, (5, 6))):
        palette = rng.integers(0, 256, (k, 3), dtype=np.uint8)
        images.append(KMQImage(palette, rng.integers(0, k, shape)))
    if large:
        images.append(api.quantize(china[40:360, 100:520], 16))
    return images


def seed_files(china: np.ndarray, *, large: bool = False) -> list[tuple[str, bytes]]:
    """(description, valid .kmq bytes) for every seed image in every registered coding, and in coding 7 with
    model 7 (by columns), which `context3` writes only where labels are mostly none of their neighbours'."""
    files = []
    for image in seed_images(china, large=large):
        for coding in CODINGS.values():
            data = api.encode(image, coding=coding.name)
            files.append((f"{coding.name}-k{image.k}-{image.mode}-{image.width}x{image.height}", data))
        if image.k > 1 and codings._ctxcoder is not None:
            header = Header(width=image.width, height=image.height, channels=image.channels, k=image.k,
                            coding=codings.CONTEXT3.id, payload_length=0)
            payload = codings._encode_context3(image.labels.reshape(-1), header, codings.ESCAPE_FIRST_MODEL, True)
            header = dataclasses.replace(header, payload_length=len(payload))
            files.append((f"context3-model7-k{image.k}-{image.mode}-{image.width}x{image.height}",
                          build_file(header, image.palette.tobytes(), payload)))
    return files


def fix_header_crc(data: bytearray) -> None:
    """Recompute the header CRC so a header edit is judged on its fields, not rejected as damage."""
    if len(data) >= HEADER_SIZE:
        data[32:36] = struct.pack(">I", zlib.crc32(bytes(data[:32])))


def fix_trailer_crc(data: bytearray) -> None:
    """Recompute the trailer CRC over everything between header and trailer (as the header's lengths say)."""
    if len(data) >= HEADER_SIZE + TRAILER_SIZE:
        data[-4:] = struct.pack(">I", zlib.crc32(bytes(data[HEADER_SIZE:-4])))


def interesting_values(size: int, current: int, rng: random.Random) -> int:
    """A boundary value for a field of `size` bytes: 0, 1, max, current±1, powers of two, or random."""
    top = (1 << (8 * size)) - 1
    choices = [0, 1, 2, 3, 4, 5, 8, 16, 255, 256, 257, 65535, 65536, 65537, top, top - 1, current + 1, current - 1,
               1 << rng.randrange(8 * size), rng.randrange(top + 1)]
    return min(max(rng.choice(choices), 0), top)


def mutate(data: bytes, rng: random.Random, kind: str | None = None) -> tuple[str, bytes]:
    """Apply one mutation (chosen at random unless `kind` is given) and return (what was done, new bytes)."""
    kind = kind or rng.choice(MUTATIONS)
    out = bytearray(data)
    if not out:
        return "insert@0", bytes(rng.randrange(256) for _ in range(rng.randrange(1, 40)))
    if len(out) <= HEADER_SIZE + TRAILER_SIZE and kind in ("header_field", "body_bytes", "body_splice"):
        kind = "bitflip"
    if kind == "bitflip":
        position = rng.randrange(len(out))
        out[position] ^= 1 << rng.randrange(8)
        return f"bitflip@{position}", bytes(out)
    if kind == "truncate":
        size = rng.randrange(len(out))
        return f"truncate@{size}", bytes(out[:size])
    if kind == "insert":
        position = rng.randrange(len(out) + 1)
        out[position:position] = bytes(rng.randrange(256) for _ in range(rng.choice((1, 1, 2, 4, 17))))
        return f"insert@{position}", bytes(out)
    if kind == "delete":
        position = rng.randrange(len(out))
        del out[position : position + rng.choice((1, 1, 2, 4, 17))]
        return f"delete@{position}", bytes(out)
    if kind == "header_field":
        name, offset, fmt = rng.choice(HEADER_FIELDS)
        size = struct.calcsize(fmt)
        (current,) = struct.unpack_from(fmt, out, offset)
        value = interesting_values(size, current, rng)
        struct.pack_into(fmt, out, offset, value)
        fix_header_crc(out)
        if rng.random() < 0.5:  # also make the body consistent with a changed length
            fix_trailer_crc(out)
        return f"header:{name}={value}", bytes(out)
    if kind == "body_bytes":
        for _ in range(rng.choice((1, 1, 2, 8))):
            position = rng.randrange(HEADER_SIZE, len(out) - TRAILER_SIZE)
            out[position] = rng.choice((0, 255, rng.randrange(256), out[position] ^ (1 << rng.randrange(8))))
        fix_trailer_crc(out)
        return "body", bytes(out)
    if kind == "body_splice":
        # insert or delete inside palette/payload, fix the declared length and both CRCs
        position = rng.randrange(HEADER_SIZE, len(out) - TRAILER_SIZE + 1)
        count = rng.choice((1, 2, 3, 8))
        if rng.random() < 0.5:
            out[position:position] = bytes(rng.randrange(256) for _ in range(count))
        else:
            del out[position : min(position + count, len(out) - TRAILER_SIZE)]
        (length,) = struct.unpack_from(">Q", out, 24)
        new_length = min(max(0, len(out) - len(data) + length), 2**64 - 1)
        struct.pack_into(">Q", out, 24, new_length)
        fix_header_crc(out)
        fix_trailer_crc(out)
        return f"splice@{position}", bytes(out)
    if kind == "stack":
        steps = []
        current = bytes(out)
        for _ in range(rng.randrange(2, 5)):
            step, current = mutate(current, rng, rng.choice(MUTATIONS[:-1]))
            steps.append(step)
            if not current:
                break
        return "+".join(steps), current
    raise ValueError(f"unknown mutation {kind!r}")


def work_bytes(data: bytes, max_pixels: int) -> int:
    """Input bytes plus the bytes of the image its header declares (when within the decoder's limit).

    The time bound is 1 s per MB of both together: a compressing coding legitimately
    expands a small input into many pixels, and a decoder refuses more than max_pixels.
    """
    if len(data) < HEADER_SIZE:
        return len(data)
    channels, width, height = data[9], int.from_bytes(data[12:16], "big"), int.from_bytes(data[16:20], "big")
    pixels = width * height
    return len(data) + (pixels * min(channels, 4) if pixels <= max_pixels else 0)
