#!/usr/bin/env python3
"""Encode and decode a 100-megapixel image with the real CLI and report wall time and peak RSS of each step.

    python tools/bigimage.py [--megapixels 100] [-k 64] [--source wood-l.webp] [--work DIR] [--verify]

The input is a real photo from Debian's gnome-backgrounds (4096 x 4096) tiled,
mirrored every other tile so the seams are smooth, to the requested size, and
saved as a PNG (zlib level 1, to keep the set-up short). Each step runs as its
own `python -m kmcodec` process; its peak resident memory comes from wait4().
The issue's bound is 4 GB resident for each of encode and decode.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

Image.MAX_IMAGE_PIXELS = None  # this tool makes and trusts its own big input

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
GNOME = Path("/usr/share/backgrounds/gnome")
LIMIT_BYTES = 4 * 1024**3


def build_input(path: Path, megapixels: float, source: Path) -> tuple[int, int]:
    """Tile the source photo to about `megapixels` MP (square) and save it as a PNG."""
    side = int(math.sqrt(megapixels * 1e6))
    tile = np.asarray(Image.open(source).convert("RGB"))
    th, tw, _ = tile.shape
    image = Image.new("RGB", (side, side))
    for top in range(0, side, th):
        for left in range(0, side, tw):
            block = tile
            if (top // th) % 2:
                block = block[::-1]
            if (left // tw) % 2:
                block = block[:, ::-1]
            block = np.ascontiguousarray(block[: side - top, : side - left])
            image.paste(Image.fromarray(block), (left, top))
    image.save(path, compress_level=1)
    return side, side


def run_step(name: str, args: list[str]) -> dict:
    """Run one CLI process; return its exit code, wall time and peak RSS (from wait4)."""
    command = [sys.executable, "-m", "kmcodec", *args]
    started = time.perf_counter()
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(process.pid, 0)
    elapsed = time.perf_counter() - started
    out, err = process.stdout.read(), process.stderr.read()
    process.returncode = os.waitstatus_to_exitcode(status)
    record = {
        "step": name,
        "exit_code": process.returncode,
        "seconds": round(elapsed, 1),
        "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
        "within_4_gb": usage.ru_maxrss * 1024 <= LIMIT_BYTES,
        "output": (out or err).strip().splitlines()[-1:] if (out or err) else [],
    }
    print(json.dumps(record), flush=True)
    return record


def verify(big_png: Path, kmq: Path, decoded_png: Path) -> dict:
    """Check the decoded PNG against the .kmq (exactly) and against the input (PSNR), in row strips."""
    from kmcodec import api

    image = api.read(kmq)
    original = Image.open(big_png)
    decoded = Image.open(decoded_png)
    assert decoded.size == original.size == (image.width, image.height)
    sse = 0.0
    strip = 256
    for top in range(0, image.height, strip):
        box = (0, top, image.width, min(image.height, top + strip))
        expected = np.take(image.palette, image.labels[box[1] : box[3]], axis=0)
        got = np.asarray(decoded.crop(box))
        if not np.array_equal(got, expected):
            raise SystemExit(f"decoded PNG differs from the .kmq in rows {box[1]}..{box[3]}")
        sse += float(((np.asarray(original.crop(box)).astype(np.float64) - expected) ** 2).sum())
    mse = sse / (image.width * image.height * 3)
    return {"decoded_matches_kmq": True, "psnr_db": round(10 * math.log10(255**2 / mse), 2), "k": image.k}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--megapixels", type=float, default=100.0)
    parser.add_argument("-k", type=int, default=64)
    parser.add_argument("--source", default="wood-l.webp", help="a file in /usr/share/backgrounds/gnome")
    parser.add_argument("--work", type=Path, default=Path("/tmp/kmcodec-bigimage"))
    parser.add_argument("--verify", action="store_true", help="check the decoded PNG (needs ~2 GB more)")
    args = parser.parse_args()
    source = GNOME / args.source
    if not source.exists():
        print(f"bigimage: {source} missing: install Debian's gnome-backgrounds", file=sys.stderr)
        return 1
    args.work.mkdir(parents=True, exist_ok=True)
    big_png = args.work / f"big-{args.megapixels:g}mp.png"
    if not big_png.exists():
        started = time.perf_counter()
        width, height = build_input(big_png, args.megapixels, source)
        print(f"bigimage: built {big_png} ({width}x{height}, {big_png.stat().st_size:,} bytes) "
              f"in {time.perf_counter() - started:.1f} s", flush=True)
    with Image.open(big_png) as probe:  # header only; the tool trusts its own input
        width, height = probe.size
    pixels = width * height
    kmq = args.work / "big.kmq"
    decoded = args.work / "big-decoded.png"
    for stale in (kmq, decoded):
        stale.unlink(missing_ok=True)
    results = {"pixels": pixels, "width": width, "height": height, "k": args.k,
               "input_png_bytes": big_png.stat().st_size}
    results["encode"] = run_step("encode", ["encode", str(big_png), str(kmq), "-k", str(args.k),
                                            "--max-pixels", str(pixels)])
    if results["encode"]["exit_code"] == 0:
        results["kmq_bytes"] = kmq.stat().st_size
        results["decode"] = run_step("decode", ["decode", str(kmq), str(decoded), "--max-pixels", str(pixels)])
        results["info"] = run_step("info", ["info", str(kmq), "--max-pixels", str(pixels), "--json"])
        if args.verify and results["decode"]["exit_code"] == 0:
            results["verify"] = verify(big_png, kmq, decoded)
    print(json.dumps(results, indent=2))
    ok = all(results.get(step, {}).get("exit_code") == 0 and results[step]["within_4_gb"]
             for step in ("encode", "decode"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
