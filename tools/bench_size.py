"""Size and speed of the compact codings against the palette formats, on identical pixels.

For every corpus image (tools/corpus.py) and k, ONE quantization gives a palette
and labels; the same palette and labels are then stored as .kmq with every coding
(raw, deflate, lzma, context, context2, context-columns, context3, auto), as PNG-8 (Pillow, optimize), PNG-8 after
oxipng (pyoxipng, level 6), GIF (Pillow) and WebP lossless (`cwebp -lossless -z 9
-exact` on the PNG-8). It reports bytes and bits per pixel, median ratios over the
corpus, then decode and encode timings (medians of several runs; run the tool under
`flock /tmp/kmcodec-bench.lock` so other benchmarks on the machine do not overlap). Missing
peers (cwebp, pyoxipng) are skipped with a note. Writes a Markdown report.

    python tools/bench_size.py [--sizes all|small|4mp|large] [--k 16 64 256] [--out bench-out/codings.md]
    python tools/bench_size.py --from-json bench-out/a.json bench-out/b.json   # one report from several runs
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

from corpus import load_corpus  # noqa: E402

from kmcodec import api  # noqa: E402
from kmcodec.codings import CODINGS as CODINGS_BY_ID  # noqa: E402
from kmcodec.image import KMQImage  # noqa: E402

CODINGS = ("raw", "deflate", "lzma", "context", "context2", "context-columns", "context3", "auto")
#: The banded context codings (spec 5.3-5.6); auto writes coding 7 (context3) on every corpus image.
BANDED = ("context", "context2", "context-columns", "context3")


def coding_written(data: bytes) -> str:
    """The name of the coding a .kmq file's header declares (what auto chose)."""
    return CODINGS_BY_ID[api.read_header(io.BytesIO(data)).coding].name


def note(message: str) -> None:
    print(f"bench_size: {message}", file=sys.stderr, flush=True)


def interleaved_medians(functions: dict, runs: int) -> dict[str, float]:
    """Median wall time of each named function, in seconds, over `runs` rounds that call every function once, so
    that load from other processes hits them all alike."""
    times: dict[str, list[float]] = {name: [] for name in functions}
    for _ in range(runs):
        for name, function in functions.items():
            started = time.perf_counter()
            function()
            times[name].append(time.perf_counter() - started)
    return {name: statistics.median(values) for name, values in times.items()}


#: The sources whose change changes a quantization: a cached one made by other sources is made again.
QUANTIZER_SOURCES = ("quantizer.py", "kmeans.py", "pcg64.py", "palette_order.py", "nearest.py", "colorspace.py",
                     "fastpath.py", "_fastpath.c")


def quantizer_fingerprint() -> str:
    """A hash of the quantizer's sources, stored with each cached quantization."""
    import hashlib

    digest = hashlib.sha256()
    for name in QUANTIZER_SOURCES:
        digest.update((ROOT / "kmcodec" / name).read_bytes())
    return digest.hexdigest()[:16]


def quantized(path: Path, k: int, cache: Path) -> tuple[KMQImage, float]:
    """One quantization per (image, k), cached as .npz with the quantizer's fingerprint; returns the image and
    the quantization time."""
    stored = cache / f"{path.stem}-k{k}.npz"
    fingerprint = quantizer_fingerprint()
    if stored.exists():
        data = np.load(stored)
        if "fingerprint" in data and str(data["fingerprint"]) == fingerprint:
            return KMQImage(data["palette"], data["labels"]), float(data["seconds"])
        note(f"{stored.name}: made by another quantizer, quantizing again")
    started = time.perf_counter()
    image = api.quantize(path, k)
    seconds = time.perf_counter() - started
    cache.mkdir(parents=True, exist_ok=True)
    np.savez(stored, palette=image.palette, labels=image.labels, seconds=seconds, fingerprint=fingerprint)
    return image, seconds


def png8(image: KMQImage) -> bytes:
    """PNG-8 of the same palette and labels (Pillow, optimize=True); alpha goes to tRNS."""
    out = io.BytesIO()
    picture = image.to_pil_palette()
    options = {"optimize": True}
    if image.channels == 4:
        options["transparency"] = image.palette[:, 3].tobytes()
    picture.save(out, format="PNG", **options)
    return out.getvalue()


def gif(image: KMQImage) -> bytes | None:
    """GIF of the same labels (k <= 256, RGB only: GIF has one transparent index at most)."""
    if image.channels == 4:
        return None
    out = io.BytesIO()
    image.to_pil_palette().save(out, format="GIF", optimize=False)
    return out.getvalue()


def oxipng_bytes(png: bytes) -> bytes | None:
    try:
        import oxipng
    except ImportError:
        return None
    return oxipng.optimize_from_memory(png, level=6)


def webp_lossless(png: bytes, workdir: Path) -> bytes | None:
    if shutil.which("cwebp") is None:
        return None
    source, target = workdir / "in.png", workdir / "out.webp"
    source.write_bytes(png)
    subprocess.run(["cwebp", "-quiet", "-lossless", "-z", "9", "-exact", str(source), "-o", str(target)], check=True)
    return target.read_bytes()


def measure_sizes(images, ks, cache: Path) -> list[dict]:
    """Bytes of every container for every (image, k)."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for corpus_image in images:
            for k in ks:
                image, quantize_seconds = quantized(corpus_image.path, k, cache)
                row = {"image": corpus_image.name, "k": k, "k_used": image.k, "pixels": image.width * image.height,
                       "quantize_s": quantize_seconds}
                files = {coding: api.encode(image, coding=coding) for coding in CODINGS}
                row.update((coding, len(data)) for coding, data in files.items())
                row["auto_coding"] = coding_written(files["auto"])
                png = png8(image)
                row["png8"] = len(png)
                for name, data in (("oxipng", oxipng_bytes(png)), ("gif", gif(image)),
                                   ("webp", webp_lossless(png, Path(tmp)))):
                    row[name] = len(data) if data is not None else None
                rows.append(row)
                note(f"{corpus_image.name} k={k}: auto {row['auto']:,} B, webp {row['webp']}, oxipng {row['oxipng']}")
    return rows


def measure_speed(images, k: int, cache: Path, runs: int) -> list[dict]:
    """Decode times per coding and Pillow's WebP decode of the same pixels, and the encode overhead per coding."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for corpus_image in images:
            image, quantize_seconds = quantized(corpus_image.path, k, cache)
            files = {coding: api.encode(image, coding=coding) for coding in CODINGS}
            webp = webp_lossless(png8(image), Path(tmp))
            row = {"image": corpus_image.name, "k": image.k, "megapixels": image.width * image.height / 1e6,
                   "quantize_s": quantize_seconds, "auto_coding": coding_written(files["auto"])}
            decoders = {}
            for coding, data in files.items():  # labels only, and auto's file -> RGB array
                decoders[f"decode_{coding}"] = lambda data=data: api.decode(data)
            decoders["decode_auto_rgb"] = lambda data=files["auto"]: api.decode(data).to_array()
            if webp is not None:  # the peer runs in the same rounds, so a machine that slows down slows both
                def pillow_webp() -> None:
                    with Image.open(io.BytesIO(webp)) as picture:
                        picture.load()
                decoders["decode_webp"] = pillow_webp
            row.update(interleaved_medians(decoders, runs))
            # The file -> RGB array of raw and the standard-library codings (issue 4 bounds the latter by 3x the
            # former) in rounds of their own: in the rotation above, among 16.8 MP decoders that map and free
            # hundreds of MB, raw's time wandered from 20 to 135 ms for the same work.
            row.update(interleaved_medians({f"decode_{coding}_rgb": lambda data=files[coding]: api.decode(data).to_array()
                                            for coding in ("raw", "deflate", "lzma")}, runs))
            # auto (issue 4: it may add at most 1 s to the quantization) and the coding it writes, every run; the
            # others, some of them seconds long at 16.8 MP (lzma), half as often
            encoders = {f"encode_{coding}": lambda coding=coding: api.encode(image, coding=coding) for coding in CODINGS}
            often = ("encode_auto", "encode_context3")
            row.update(interleaved_medians({name: encoders[name] for name in often}, runs))
            row.update(interleaved_medians({name: f for name, f in encoders.items() if name not in often},
                                           max(1, runs // 2)))
            rows.append(row)
            note(f"{corpus_image.name}: context decode {row['decode_context'] * 1e3:.0f} ms, "
                 f"webp {row.get('decode_webp', float('nan')) * 1e3:.0f} ms")
    return rows


def ms(seconds: float | None, digits: int = 0) -> str:
    """Milliseconds for a table cell, or n/a (rows saved by older runs lack the newer codings)."""
    return "n/a" if seconds is None else f"{seconds * 1e3:.{digits}f}"


def ratio(row: dict, a: str, b: str) -> float | None:
    return row[a] / row[b] if row.get(a) and row.get(b) else None


def ratio_text(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def median_of(values) -> str:
    values = [v for v in values if v is not None]
    return f"{statistics.median(values):.3f}" if values else "n/a"


def columns_over_rows(row: dict) -> float | None:
    """context-columns ÷ the smaller banded coding by rows (context, context2): what coding down the columns gains."""
    rows = [row.get(c) for c in ("context", "context2") if row.get(c)]
    return row["context-columns"] / min(rows) if row.get("context-columns") and rows else None


def report(size_rows: list[dict], speed_rows: list[dict], ks) -> str:
    """The Markdown report: size table, median ratios, speed table."""
    columns = [*CODINGS, "png8", "oxipng", "gif", "webp"]
    lines = [] if not size_rows else ["### Sizes (bytes, and bits per pixel of the whole file)", "",
             "| image | k | " + " | ".join(columns) + " | auto wrote |", "|---|---:|" + "---:|" * len(columns) + "---:|"]
    for row in size_rows:
        cells = []
        for column in columns:
            value = row.get(column)
            cells.append("n/a" if value is None else f"{value:,} ({8 * value / row['pixels']:.2f})")
        lines.append(f"| {row['image']} | {row['k_used']} | " + " | ".join(cells) + f" | {row.get('auto_coding', 'n/a')} |")
    if size_rows:
        lines += ["", "### Median ratios over the corpus (auto .kmq ÷ peer; lower is better)", "",
                  "| k | ÷ WebP lossless | ÷ PNG-8 oxipng | ÷ PNG-8 | ÷ GIF | context2 ÷ context | columns ÷ rows "
                  "| worst ÷ oxipng |",
                  "|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for k in list(ks) + ["all"]:
            rows = size_rows if k == "all" else [r for r in size_rows if r["k"] == k]
            worst = [ratio(r, "auto", "oxipng") for r in rows]
            worst = [w for w in worst if w is not None]
            worst_text = f"{max(worst):.3f}" if worst else "n/a"
            lines.append(
                f"| {k} | {median_of(ratio(r, 'auto', 'webp') for r in rows)} | "
                f"{median_of(ratio(r, 'auto', 'oxipng') for r in rows)} | {median_of(ratio(r, 'auto', 'png8') for r in rows)} | "
                f"{median_of(ratio(r, 'auto', 'gif') for r in rows)} | {median_of(ratio(r, 'context2', 'context') for r in rows)} | "
                f"{median_of(columns_over_rows(r) for r in rows)} | {worst_text} |"
            )
    if speed_rows:
        header = ("| image | MP | k | " + "".join(f"{c} decode | ÷ WebP | " for c in BANDED)
                  + "auto wrote | auto decode | ÷ WebP | + to RGB | Pillow WebP decode "
                  "| raw file→RGB | deflate file→RGB | lzma file→RGB | deflate ÷ raw | lzma ÷ raw | quantize | encode "
                  + " | ".join(CODINGS) + " |")
        lines += ["", "### Speed (medians of several runs, wall time, ms)", "", header,
                  "|---|" + "---:|" * (header.count("|") - 2)]
        for row in speed_rows:
            webp = row.get("decode_webp")
            # file -> RGB array; rows saved before it was measured have the label decode only
            to_rgb = {c: row.get(f"decode_{c}_rgb", row[f"decode_{c}"]) for c in ("raw", "deflate", "lzma")}
            lines.append(
                f"| {row['image']} | {row['megapixels']:.1f} | {row['k']} | "
                + "".join(f"{ms(row.get(f'decode_{c}'))} | {ratio_text(ratio(row, f'decode_{c}', 'decode_webp'))} | "
                          for c in BANDED)
                + f"{row.get('auto_coding', 'n/a')} | {ms(row.get('decode_auto'))} | "
                f"{ratio_text(ratio(row, 'decode_auto', 'decode_webp'))} | "
                + f"{ms(row.get('decode_auto_rgb'))} | {ms(webp)} | "
                f"{to_rgb['raw'] * 1e3:.0f} | "
                f"{to_rgb['deflate'] * 1e3:.0f} | {to_rgb['lzma'] * 1e3:.0f} | {to_rgb['deflate'] / to_rgb['raw']:.2f} | "
                f"{to_rgb['lzma'] / to_rgb['raw']:.2f} | "
                f"{row['quantize_s'] * 1e3:.0f} | "
                + " | ".join(ms(row.get(f"encode_{c}")) for c in CODINGS) + " |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="all", choices=("all", "small", "4mp", "large"))
    parser.add_argument("--k", dest="ks", type=int, nargs="+", default=[16, 64, 256])
    parser.add_argument("--speed-k", type=int, default=64, help="k of the timing runs (on the 4 MP images, else on every image of --sizes)")
    parser.add_argument("--runs", type=int, default=5, help="timed runs per measurement (the median is reported)")
    parser.add_argument("--no-speed", action="store_true", help="sizes only")
    parser.add_argument("--speed-only", action="store_true", help="timings only")
    parser.add_argument("--from-json", type=Path, nargs="+", help="only report: merge rows saved by earlier runs")
    parser.add_argument("--out", type=Path, default=ROOT / "bench-out" / "codings.md")
    parser.add_argument("--cache", type=Path, default=ROOT / "bench-out" / "quantized")
    args = parser.parse_args(argv)
    if args.from_json:
        size_rows, speed_rows = [], []
        for path in args.from_json:
            saved = json.loads(path.read_text())
            size_rows += saved["sizes"]
            speed_rows += saved["speed"]
        text = report(size_rows, speed_rows, args.ks)
        args.out.write_text(text)
        print(text)
        return 0
    if shutil.which("cwebp") is None:
        note("cwebp missing: WebP lossless column skipped (apt-get install webp)")
    images = load_corpus(sizes=args.sizes)
    size_rows = [] if args.speed_only else measure_sizes(images, args.ks, args.cache)
    speed_rows = []
    if not args.no_speed:
        timing_images = [i for i in images if i.name.endswith("-4mp")] or images
        speed_rows = measure_speed(timing_images, args.speed_k, args.cache, args.runs)
    text = report(size_rows, speed_rows, args.ks)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    args.out.with_suffix(".json").write_text(json.dumps({"sizes": size_rows, "speed": speed_rows}, indent=1))
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
