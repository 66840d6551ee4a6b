"""Compare the context models of the kernel (models 3, 4 and 5; --models picks them) on the corpus: bytes and ns/pixel.

Quantizes every corpus image once (kmcodec.quantize, fast engine, seed 0) per k and
caches the labels under bench-out/model-cache/; then codes the same labels with each
model, checks that each decodes back, and reports bytes per image and k, the ratio
of each model to the first, totals and medians. With --time it also reports encode and decode
ns/pixel (median of --runs interleaved runs, both models in the same loop, so machine
noise hits them alike). The WebP column is README.md's "Sizes" table (the reference
engine's quantization, so only a rough guide): est. ratio of model m = README context/webp x m/m4
(the README's context column is coding 4, model 4; printed when model 4 is among --models).

    python tools/model_eval.py [--k 16 64 256] [--images china,flower] [--time] [--runs 5] [--big]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
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


def load_kernel():
    """kmcodec._ctxcoder, or the build at $KMQ_CTXCODER (a .so path, for comparing kernel variants)."""
    variant = os.environ.get("KMQ_CTXCODER")
    if not variant:
        from kmcodec import _ctxcoder
        return _ctxcoder
    spec = importlib.util.spec_from_file_location("_ctxcoder", variant)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_ctxcoder = load_kernel()

CACHE = ROOT / "bench-out" / "model-cache"
BIG = "pixels-l-16mp"


def cached_labels(path: Path, k: int) -> np.ndarray:
    """The labels of one fast-engine quantization (seed 0) of `path` at k, cached as .npz."""
    stored = CACHE / f"{path.stem}-k{k}.npz"
    if stored.exists():
        return np.load(stored)["labels"]
    image = kmcodec.quantize(path, k, seed=0)
    CACHE.mkdir(parents=True, exist_ok=True)
    np.savez(stored, labels=image.labels)
    return image.labels


def readme_webp_ratios() -> dict[tuple[str, int], float]:
    """(image, k) -> context (coding 4, model 4) / webp bytes from README.md's Sizes table (empty if absent)."""
    ratios = {}
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    context_column = webp_column = None
    for line in readme.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells[:2] == ["image", "k"] and "context" in cells and "webp" in cells:
            context_column, webp_column = cells.index("context"), cells.index("webp")
        elif context_column is not None and len(cells) > webp_column and cells[1].isdigit():
            def num(cell: str) -> int:
                return int(re.sub(r"[^0-9]", "", cell.split("(")[0]))
            try:
                ratios[(cells[0], int(cells[1]))] = num(cells[context_column]) / num(cells[webp_column])
            except ValueError:
                continue
    return ratios


def median_ns(function, pixels: int, times: list[float]) -> None:
    """Append the CPU time of one call in ns/pixel (CPU time: less disturbed by other jobs on the machine)."""
    started = time.process_time()
    function()
    times.append((time.process_time() - started) * 1e9 / pixels)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--k", type=int, nargs="+", default=[16, 64, 256])
    parser.add_argument("--images", help="comma-separated image names (default: small + 4 MP corpus)")
    parser.add_argument("--models", type=int, nargs="+", default=[3, 4])
    parser.add_argument("--time", action="store_true", help="also time encode/decode")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--no-check", action="store_true", help="skip the decode check (size sweeps)")
    parser.add_argument("--big", action="store_true", help=f"add {BIG} at k = 256 (timed)")
    args = parser.parse_args(argv)

    corpus = load_corpus(sizes="small") + load_corpus(sizes="4mp")
    if args.images:
        wanted = set(args.images.split(","))
        corpus = [c for c in corpus if c.name in wanted]
    jobs = [(c.name, c.path, k) for c in corpus for k in args.k]
    if args.big:
        big = ROOT / "bench-out" / "corpus" / f"{BIG}.png"
        if big.exists():
            jobs.append((BIG, big, 256))
        else:
            print(f"model_eval: {big} missing (tools/corpus.py builds it); skipped", file=sys.stderr)
    webp = readme_webp_ratios()
    models = args.models
    base = models[0]
    rows = []
    header = f"{'image':<18} {'k':>4} " + " ".join(f"{'m' + str(m):>10}" for m in models)
    header += " " + " ".join(f"{'m' + str(m) + '/m' + str(base):>7}" for m in models[1:])
    if args.time:
        header += " " + " ".join(f"{'enc' + str(m):>7} {'dec' + str(m):>7}" for m in models)
    print(header, flush=True)
    for name, path, k in jobs:
        labels = cached_labels(path, k)
        height, width = labels.shape
        pixels = width * height
        payloads = {m: _ctxcoder.encode(labels, width, height, k, m) for m in models}
        for m in models if not args.no_check else ():
            out = np.empty_like(labels)
            _ctxcoder.decode(payloads[m], width, height, k, out, m)
            if not np.array_equal(out, labels):
                raise SystemExit(f"model {m} does not round-trip {name} k={k}")
        timing = {}
        if args.time:
            enc = {m: [] for m in models}
            dec = {m: [] for m in models}
            out = np.empty_like(labels)
            for _ in range(args.runs):
                for m in models:
                    median_ns(lambda: _ctxcoder.encode(labels, width, height, k, m), pixels, enc[m])
                    median_ns(lambda: _ctxcoder.decode(payloads[m], width, height, k, out, m), pixels, dec[m])
            timing = {m: (statistics.median(enc[m]), statistics.median(dec[m])) for m in models}
        sizes = {m: len(payloads[m]) + 36 + 4 + 3 * k for m in models}  # whole .kmq file, RGB palette
        rows.append((name, k, sizes, timing))
        line = f"{name:<18} {k:>4} " + " ".join(f"{sizes[m]:>10,}" for m in models)
        line += " " + " ".join(f"{sizes[m] / sizes[base]:>7.4f}" for m in models[1:])
        if timing:
            line += " " + " ".join(f"{timing[m][0]:>7.1f} {timing[m][1]:>7.1f}" for m in models)
        print(line, flush=True)
    print()
    size_rows = [r for r in rows if r[0] != BIG]
    for k in [*args.k, None]:
        group = [r for r in size_rows if k is None or r[1] == k]
        if not group:
            continue
        label = f"k={k}" if k else "all"
        parts = [f"{label:<6}"]
        for m in models[1:]:
            ratios = [r[2][m] / r[2][base] for r in group]
            total = sum(r[2][m] for r in group) / sum(r[2][base] for r in group)
            parts.append(f"m{m}/m{base}: median {statistics.median(ratios):.4f} total {total:.4f}")
            known = [r for r in group if (r[0], r[1]) in webp]
            if 4 in models and known:
                def est(model: int) -> float:
                    return statistics.median(webp[(r[0], r[1])] * r[2][model] / r[2][4] for r in known)
                parts.append(f"est. webp ratio m{base} {est(base):.3f} -> m{m} {est(m):.3f} (n={len(known)})")
        print("  ".join(parts))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
