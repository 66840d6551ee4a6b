#!/usr/bin/env python3
"""Differential fuzzing of the two-thread PNG reader (kmcodec/pngread.py) against Pillow.

    python tools/fuzz_png.py --runs 20000 --seed 1

Seeds are small plain PNGs (RGB and RGBA, every filter type, IDAT cut into chunks of several sizes, harmless
ancillary chunks, and crops of scikit-learn's china.jpg saved by Pillow). Mutations: bit flips, cuts and
insertions anywhere, the same inside one chunk with its CRC recomputed (so that they reach the inflater rather
than stopping at a CRC), and changed scanlines (pixel bytes and filter types) recompressed into IDAT chunks
of other sizes (so that they reach the filters).

For every input the reader must give None (the caller then reads the file with Pillow) or exactly the pixels
Pillow gives for the same bytes. A *crash* is an exception out of read_png (it must never raise), a
*mismatch* pixels that differ from Pillow's or pixels where Pillow refuses the file, a *leak* a thread
left running. Offending inputs are saved to --out.
"""

from __future__ import annotations

import argparse
import io
import json
import random
import struct
import sys
import tempfile
import threading
import time
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]


def seed_corpus() -> list[bytes]:
    import numpy as np
    from PIL import Image

    from conftest import sklearn_image
    from test_pngread import HARMLESS, noise, png_file

    seeds = []
    for channels in (3, 4):
        for shape in ((1, 1), (3, 5), (9, 7), (16, 33)):
            pixels = noise((*shape, channels), seed=len(seeds))
            for filters in ([y % 5 for y in range(shape[0])], [4] * shape[0], [1] * shape[0]):
                seeds.append(png_file(pixels, filters, idat_size=random.Random(len(seeds)).choice([7, 64, 1000])))
        seeds.append(png_file(noise((8, 8, channels)), extra=HARMLESS[:2], after_idat=HARMLESS[2:3], idat_size=30))
    china = sklearn_image("china.jpg")
    for top, left, size in ((0, 0, 24), (200, 300, 40), (100, 50, 17)):
        out = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(china[top : top + size, left : left + size])).save(out, format="PNG")
        seeds.append(out.getvalue())
    return seeds


def _chunk_spans(data: bytes) -> list[tuple[int, int]]:
    """(start of body, end of body) of each chunk that parses, in order."""
    spans, pos = [], 8
    while pos + 12 <= len(data):
        (length,) = struct.unpack_from(">I", data, pos)
        if pos + 12 + length > len(data):
            break
        spans.append((pos + 8, pos + 8 + length))
        pos += 12 + length
    return spans


def mutate_rows(data: bytes, rng: random.Random) -> bytes | None:
    """The seed with its scanlines changed (pixel bytes, and filter types 0-6) and recompressed into IDAT chunks
    of another size: a valid stream, so that the unfiltering is what is tested."""
    spans = [(start, end) for start, end in _chunk_spans(data) if data[start - 4 : start] == b"IDAT"]
    if not spans:
        return None
    try:
        rows = bytearray(zlib.decompress(b"".join(data[start:end] for start, end in spans)))
    except zlib.error:
        return None
    for _ in range(rng.randint(1, 6)):
        if rows:
            rows[rng.randrange(len(rows))] = rng.randrange(7) if rng.random() < 0.3 else rng.randrange(256)
    stream = zlib.compress(bytes(rows), rng.randint(0, 9))
    size = rng.choice([1, 13, 500, 1 << 16])
    idat = b"".join(struct.pack(">I", len(part)) + b"IDAT" + part + struct.pack(">I", zlib.crc32(b"IDAT" + part))
                    for part in (stream[i : i + size] for i in range(0, len(stream), size)))
    return data[: spans[0][0] - 8] + idat + data[spans[-1][1] + 4 :]


def mutate(data: bytes, rng: random.Random) -> bytes:
    if rng.random() < 0.4:
        changed = mutate_rows(data, rng)
        if changed is not None:
            return changed
    out = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        spans = _chunk_spans(bytes(out))
        if spans and rng.random() < 0.6:  # inside one chunk, CRC recomputed
            start, end = rng.choice(spans)
            body = bytearray(out[start:end])
            if body and rng.random() < 0.5:
                body[rng.randrange(len(body))] ^= 1 << rng.randrange(8)
            elif body and rng.random() < 0.5:
                cut = rng.randrange(len(body))
                del body[cut : cut + rng.randint(1, 8)]
            else:
                at = rng.randint(0, len(body))
                body[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
            kind = bytes(out[start - 4 : start])
            out[start - 8 : end + 4] = (struct.pack(">I", len(body)) + kind + body
                                        + struct.pack(">I", zlib.crc32(kind + body)))
        elif out:
            where = rng.randrange(len(out))
            choice = rng.random()
            if choice < 0.4:
                out[where] ^= 1 << rng.randrange(8)
            elif choice < 0.7:
                del out[where : where + rng.randint(1, 16)]
            else:
                out[where:where] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
    return bytes(out)


def pillow_pixels(data: bytes):
    import numpy as np
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as picture:
            picture.load()
            return np.asarray(picture)
    except Exception:  # noqa: BLE001 - Pillow refusing the file is an answer too
        return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("fuzz-png-findings"))
    args = parser.parse_args()

    import numpy as np

    from kmcodec import pngread

    rng = random.Random(args.seed)
    seeds = seed_corpus()
    tally = {"inputs": 0, "read": 0, "given_back": 0, "crashes": 0, "mismatches": 0, "leaks": 0}
    slowest = 0.0
    threads_before = threading.active_count()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "input.png"
        for run in range(args.runs):
            data = mutate(rng.choice(seeds), rng) if run >= len(seeds) else seeds[run]
            path.write_bytes(data)
            tally["inputs"] += 1
            began = time.perf_counter()
            try:
                decoded = pngread.read_png(path, 1 << 22)
            except Exception as exc:  # noqa: BLE001 - the finding itself
                tally["crashes"] += 1
                _save(args.out, "crash", data, repr(exc))
                continue
            slowest = max(slowest, time.perf_counter() - began)
            if threading.active_count() != threads_before:
                tally["leaks"] += 1
                _save(args.out, "leak", data, "thread left running")
            if decoded is None:
                tally["given_back"] += 1
                continue
            tally["read"] += 1
            mine = np.frombuffer(decoded.pixels, np.uint8).reshape(decoded.height, decoded.width, decoded.channels)
            theirs = pillow_pixels(data)
            if theirs is None or not np.array_equal(mine, theirs):
                tally["mismatches"] += 1
                _save(args.out, "mismatch", data, "Pillow refused" if theirs is None else "pixels differ")
    report = {**tally, "seeds": len(seeds), "slowest_s": round(slowest, 4),
              "seconds": round(time.perf_counter() - started, 1)}
    print(json.dumps(report, indent=2))
    return 1 if tally["crashes"] or tally["mismatches"] or tally["leaks"] else 0


def _save(out: Path, what: str, data: bytes, note: str) -> None:
    import hashlib

    out.mkdir(parents=True, exist_ok=True)
    name = f"{what}-{hashlib.sha1(data).hexdigest()[:12]}"
    (out / f"{name}.png").write_bytes(data)
    (out / f"{name}.txt").write_text(note + "\n")


if __name__ == "__main__":
    raise SystemExit(main())
