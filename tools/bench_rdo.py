"""What --rdo buys: file size against PSNR at a fixed k, next to what a smaller k gives for the same PSNR.

For every corpus image (tools/corpus.py) and k, the image is quantized once, then its
labels are smoothed within each PSNR budget (kmcodec.smoothing) and stored with the
default coding (auto). For comparison the same image is quantized at smaller k (the
other way to trade quality for size), and the size a smaller k needs to reach each
smoothed file's PSNR is interpolated (linearly in PSNR, between the two nearest k).
Reports bytes, PSNR drop, size change, the smoothing time (median of --runs) and the
size the smaller-k route needs for the same PSNR. Writes a Markdown table.

    python tools/bench_rdo.py [--sizes small|4mp|all] [-k 16 64 256] [--budgets 0.05 0.1 0.25 0.5 1] [--out F]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

from corpus import load_corpus  # noqa: E402

import kmcodec  # noqa: E402
from kmcodec.image import KMQImage  # noqa: E402
from kmcodec.imageio import load_pixels  # noqa: E402
from kmcodec.smoothing import smooth_within  # noqa: E402

#: The smaller palettes tried for the k-only route, as fractions of k.
SMALLER_K = (0.5, 0.625, 0.75, 0.875)


def psnr(pixels: np.ndarray, image: KMQImage) -> float:
    """RGB(A) PSNR of a quantized image against the pixels, over every channel."""
    errors = pixels.astype(np.int64) - image.palette.astype(np.int64)[image.labels]
    return float(10 * np.log10(255.0**2 / (errors * errors).mean()))


def size_for_psnr(target: float, curve: list[tuple[float, int]]) -> float | None:
    """Bytes the k-only route needs for `target` dB: interpolated on (PSNR, bytes) points, None outside them."""
    points = sorted(curve)
    for (low_psnr, low_bytes), (high_psnr, high_bytes) in zip(points, points[1:]):
        if low_psnr <= target <= high_psnr:
            share = (target - low_psnr) / (high_psnr - low_psnr) if high_psnr > low_psnr else 0.0
            return low_bytes + share * (high_bytes - low_bytes)
    return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="small", choices=("all", "small", "4mp", "large"))
    parser.add_argument("-k", type=int, nargs="+", default=[16, 64, 256])
    parser.add_argument("--budgets", type=float, nargs="+", default=[0.05, 0.1, 0.25, 0.5, 1.0])
    parser.add_argument("--runs", type=int, default=3, help="timed runs of the smoothing (median)")
    parser.add_argument("--only", nargs="*", help="corpus image names to keep")
    parser.add_argument("--out", type=Path, default=ROOT / "bench-out" / "rdo.md")
    args = parser.parse_args()

    rows = []
    for entry in load_corpus(sizes=args.sizes):
        if args.only and entry.name not in args.only:
            continue
        pixels = load_pixels(entry.path, max_pixels=None)
        for k in args.k:
            plain = kmcodec.quantize(pixels, k)
            plain_bytes, plain_psnr = len(kmcodec.encode(plain)), psnr(pixels, plain)
            curve = [(plain_psnr, plain_bytes)]
            for fraction in SMALLER_K:
                smaller = kmcodec.quantize(pixels, max(2, round(k * fraction)))
                curve.append((psnr(pixels, smaller), len(kmcodec.encode(smaller))))
            for budget in args.budgets:
                image = kmcodec.quantize(pixels, k, rdo=budget)
                smoothing = []
                for _ in range(args.runs):
                    started = time.perf_counter()
                    smooth_within(pixels, plain.palette, plain.labels, budget)
                    smoothing.append(time.perf_counter() - started)
                size, quality = len(kmcodec.encode(image)), psnr(pixels, image)
                k_route = size_for_psnr(quality, curve)
                rows.append((entry.name, entry.megapixels, k, budget, plain_bytes, size, plain_psnr - quality,
                             statistics.median(smoothing), k_route))
                change = size / plain_bytes - 1
                print(f"{entry.name} k={k} rdo {budget}: {plain_bytes} -> {size} bytes ({change:+.1%}), "
                      f"-{plain_psnr - quality:.3f} dB, smoothing {statistics.median(smoothing) * 1e3:.0f} ms, "
                      f"smaller k for that PSNR: {'–' if k_route is None else f'{k_route:.0f} bytes'}", flush=True)

    lines = ["| image | MP | k | rdo dB | bytes, rdo 0 | bytes | size change | PSNR drop dB | smoothing ms "
             "| smaller k, same PSNR: bytes | rdo ÷ smaller k |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, mp, k, budget, plain_bytes, size, drop, seconds, k_route in rows:
        route = "–" if k_route is None else f"{k_route:,.0f}"
        ratio = "–" if k_route is None else f"{size / k_route:.2f}"
        change = size / plain_bytes - 1
        lines.append(f"| {name} | {mp:.2f} | {k} | {budget:g} | {plain_bytes:,} | {size:,} | {change:+.1%} "
                     f"| {drop:.3f} | {seconds * 1e3:.0f} | {route} | {ratio} |")
    by_budget = {}
    for row in rows:
        by_budget.setdefault(row[3], []).append(row[5] / row[4])
    lines += ["", "| rdo dB | median size change |", "|---:|---:|"]
    lines += [f"| {budget:g} | {statistics.median(ratios) - 1:+.1%} |" for budget, ratios in sorted(by_budget.items())]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print(f"bench_rdo: wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
