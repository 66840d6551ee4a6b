"""Decode speed of the lzma coding, one xz block against several: file -> RGB array, against raw, on identical labels.

For each 4 MP corpus image quantized at k (the .npz cache of tools/bench_size.py),
the same palette and labels are stored raw, as lzma in one xz block (what the
encoder wrote before multi-block streams: liblzma's sequential decoder reads it),
and as lzma in the encoder's blocks (decoded in parallel). Timings of the three are
interleaved run by run, so load from other processes hits them alike; medians are
reported (and the fastest run of each, the nearest to an idle machine), with encode
times and sizes.

    python tools/bench_xz.py [--runs 9] [--k 64] [--cache bench-out/quantized]
"""

from __future__ import annotations

import argparse
import lzma
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import kmcodec  # noqa: E402
from kmcodec import codings, xzblocks  # noqa: E402
from kmcodec.container import Header, build_file  # noqa: E402
from kmcodec.image import KMQImage  # noqa: E402
from kmcodec.parallel import available_cores  # noqa: E402

IMAGES = ("wood-l-4mp", "grid-l-4mp", "adwaita-l-4mp")


def one_block_xz(data: bytes) -> bytes:
    """The lzma payload as the encoder wrote it before blocks: one xz block, preset 9, dictionary <= the data."""
    filters = [{"id": lzma.FILTER_LZMA2, "preset": 9, "dict_size": max(1 << 12, min(len(data), 1 << 26))}]
    return lzma.compress(data, format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC32, filters=filters)


def timed(function) -> tuple[float, object]:
    started = time.perf_counter()
    result = function()
    return time.perf_counter() - started, result


def kmq_file(image: KMQImage, coding: int, payload: bytes) -> bytes:
    header = Header(width=image.width, height=image.height, channels=image.channels, k=image.k, coding=coding,
                    payload_length=len(payload))
    return build_file(header, image.palette.tobytes(), payload)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=9, help="decode runs per file (the median is reported)")
    parser.add_argument("--encode-runs", type=int, default=3)
    parser.add_argument("--k", type=int, default=64)
    parser.add_argument("--cache", type=Path, default=ROOT / "bench-out" / "quantized")
    args = parser.parse_args(argv)
    print(f"{available_cores()} cores; medians of {args.runs} decodes (file -> RGB array), {args.encode_runs} encodes\n")
    print("| image | raw decode ms | lzma 1 block ms | ÷ raw | lzma blocks ms | ÷ raw | blocks | "
          "encode 1 block s | encode blocks s | size 1 block | size blocks | size change | fastest raw / 1 block / blocks ms |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name in IMAGES:
        stored = args.cache / f"{name}-k{args.k}.npz"
        if not stored.exists():
            print(f"| {name} | missing {stored}: run tools/bench_size.py --sizes 4mp first |")
            continue
        arrays = np.load(stored)
        image = KMQImage(arrays["palette"], arrays["labels"])
        header = Header(width=image.width, height=image.height, channels=image.channels, k=image.k, coding=0,
                        payload_length=0)
        data = codings.label_bytes(image.labels, header.label_bits)
        encode_one, encode_blocks = [], []
        for _ in range(args.encode_runs):
            seconds, one = timed(lambda: one_block_xz(data))
            encode_one.append(seconds)
            seconds, blocks = timed(lambda: xzblocks.compress(data))
            encode_blocks.append(seconds)
        files = {"raw": kmq_file(image, 0, codings.RAW.encode(image.labels.reshape(-1), header)),
                 "one": kmq_file(image, 2, one), "blocks": kmq_file(image, 2, blocks)}
        times: dict[str, list[float]] = {variant: [] for variant in files}
        expected = image.to_array()
        for _ in range(args.runs):
            for variant, file in files.items():
                seconds, pixels = timed(lambda: kmcodec.decode(file).to_array())
                assert np.array_equal(pixels, expected), (name, variant)
                times[variant].append(seconds)
        median = {variant: statistics.median(values) for variant, values in times.items()}
        best = {variant: min(values) for variant, values in times.items()}
        count = len(xzblocks.parse_blocks(blocks, len(data)) or [None])
        print(f"| {name} | {median['raw'] * 1e3:.1f} | {median['one'] * 1e3:.1f} | {median['one'] / median['raw']:.2f} | "
              f"{median['blocks'] * 1e3:.1f} | {median['blocks'] / median['raw']:.2f} | {count} | "
              f"{statistics.median(encode_one):.2f} | {statistics.median(encode_blocks):.2f} | {len(one):,} | "
              f"{len(blocks):,} | {100 * (len(blocks) / len(one) - 1):+.2f} % | "
              f"{best['raw'] * 1e3:.1f} / {best['one'] * 1e3:.1f} / {best['blocks'] * 1e3:.1f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
