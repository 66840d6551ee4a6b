"""Benchmark kmcodec's quantizer against its peers: time, peak memory, PSNR, ΔE and output size.

Every method runs as its own process (the whole command: start-up, image
decode, quantize, write), timed by wall clock; peak resident memory is the
child's ru_maxrss. Times are medians over --repeat runs. Quality is measured on
the method's output file against the original pixels: RGB PSNR, and mean
CIEDE2000 ΔE over a fixed sample of pixels. Peers that are missing are skipped
with a note.

    python tools/bench.py                      # corpus, k = 8 16 64 256
    python tools/bench.py --sizes 4mp -k 64 --repeat 5
    python tools/bench.py --decode             # raw .kmq -> RGB array vs Pillow PNG-8 -> RGB
    python tools/bench.py my.png other.jpg     # add your own images

For numbers worth publishing run it with the machine quiet, under the lock the
README names: flock /tmp/kmcodec-bench.lock python tools/bench.py ...
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
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

from corpus import CorpusImage, load_corpus  # noqa: E402

DEFAULT_KS = (8, 16, 64, 256)
#: sklearn KMeans on every pixel takes minutes on big images; above this it needs --all-slow.
SLOW_MAX_PIXELS = 5_000_000
DELTA_E_SAMPLE = 200_000


def note(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr)


# --------------------------------------------------------------------------- peers run in child processes


def run_peer(method: str, source: str, output: str, k: int) -> None:
    """Child-process entry: quantize `source` to k colours with a Python peer and write a PNG."""
    image = Image.open(source).convert("RGB")
    if method == "imagequant":
        import imagequant

        result = imagequant.quantize_pil_image(image, dithering_level=0.0, max_colors=k)
    elif method == "pillow-mediancut":
        result = image.quantize(k, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    elif method == "pillow-octree":
        result = image.quantize(k, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE)
    elif method in ("sklearn-all", "sklearn-1000"):
        from sklearn.cluster import KMeans
        from sklearn.utils import shuffle

        pixels = np.asarray(image, dtype=np.float64) / 255.0
        flat = pixels.reshape(-1, 3)
        if method == "sklearn-all":  # the textbook recipe: k-means on every pixel
            model = KMeans(n_clusters=k, random_state=0).fit(flat)
            labels = model.labels_
        else:  # scikit-learn's colour-quantization example: fit 1000 samples, predict all
            sample = shuffle(flat, random_state=0, n_samples=1_000)
            model = KMeans(n_clusters=k, random_state=0).fit(sample)
            labels = model.predict(flat)
        palette = np.clip(np.rint(model.cluster_centers_ * 255.0), 0, 255).astype(np.uint8)
        result = Image.fromarray(palette[labels.reshape(image.height, image.width)], "RGB")
    else:
        raise SystemExit(f"unknown peer {method}")
    result.save(output, format="PNG")


@dataclass
class Method:
    """A quantizer under test: how to run it, whether it is available, what it writes."""

    name: str
    suffix: str
    max_k: int = 65536
    slow: bool = False
    available: bool = True
    why_missing: str = ""

    def command(self, source: Path, output: Path, k: int, coding: str | None = None) -> list[str]:
        py = sys.executable
        if self.name.startswith("kmcodec"):
            extra = {"kmcodec": [], "kmcodec-oklab": ["--space", "oklab"], "kmcodec-sklearn": ["--engine", "sklearn"],
                     "kmcodec-rdo": ["--rdo", "0.1"]}
            coded = ["--coding", coding] if coding else []
            return [py, "-m", "kmcodec", "encode", str(source), str(output), "-k", str(k), "-f", "-q", *coded, *extra[self.name]]
        if self.name == "pngquant":
            return ["pngquant", "--nofs", str(k), "--force", "--output", str(output), str(source)]
        return [py, str(Path(__file__).resolve()), "--run-peer", self.name, str(source), str(output), str(k)]


def byte_compile_kmcodec() -> None:
    """Compile kmcodec's modules to __pycache__ once, as `pip install` does, so that the timed runs do not
    compile them from source at every start (a checkout run under PYTHONDONTWRITEBYTECODE=1 would)."""
    import compileall

    import kmcodec

    compileall.compile_dir(Path(kmcodec.__file__).parent, quiet=1)


def available_methods(names: list[str]) -> list[Method]:
    """The methods asked for, each marked available or not (with the reason)."""
    catalogue = {
        "kmcodec": Method("kmcodec", ".kmq"),
        "kmcodec-oklab": Method("kmcodec-oklab", ".kmq"),
        "kmcodec-sklearn": Method("kmcodec-sklearn", ".kmq", slow=True),
        "kmcodec-rdo": Method("kmcodec-rdo", ".kmq"),  # --rdo 0.1: 0.1 dB of PSNR for a smaller file
        "pngquant": Method("pngquant", ".png", max_k=256),
        "imagequant": Method("imagequant", ".png", max_k=256),
        "pillow-mediancut": Method("pillow-mediancut", ".png", max_k=256),
        "pillow-octree": Method("pillow-octree", ".png", max_k=256),
        "sklearn-all": Method("sklearn-all", ".png", slow=True),
        "sklearn-1000": Method("sklearn-1000", ".png", max_k=1000),
    }
    methods = []
    for name in names:
        if name not in catalogue:
            raise SystemExit(f"unknown method {name!r}; choose from {', '.join(catalogue)}")
        method = catalogue[name]
        if name == "pngquant" and shutil.which("pngquant") is None:
            method.available, method.why_missing = False, "pngquant not installed (apt-get install pngquant)"
        for module, needed_by in (("imagequant", ("imagequant",)), ("sklearn", ("sklearn-all", "sklearn-1000", "kmcodec-sklearn"))):
            if name in needed_by:
                try:
                    __import__(module)
                except ImportError:
                    method.available, method.why_missing = False, f"python module {module} missing"
        methods.append(method)
    return methods


# --------------------------------------------------------------------------- measuring


@dataclass
class Result:
    image: str
    megapixels: float
    k: int
    method: str
    seconds: float | None = None
    peak_mb: float | None = None
    psnr: float | None = None
    delta_e: float | None = None
    delta_e_ok: float | None = None
    output_bytes: int | None = None
    runs: list[float] = field(default_factory=list)
    note: str = ""


TIME_BINARY = shutil.which("time") or "/usr/bin/time"


def timed_run(command: list[str], timeout: float) -> tuple[float, float]:
    """(wall seconds, peak resident MB) of one child process; raises on failure.

    The peak comes from GNU time's %M when it is installed: ru_maxrss of a child
    forked straight from this (large) Python process would count the pages of
    the fork, not just the command's own.
    """
    use_time = Path(TIME_BINARY).exists()
    full = [TIME_BINARY, "-f", "KMCODEC-MAXRSS %M", *command] if use_time else command
    started = time.perf_counter()
    try:
        done = subprocess.run(full, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise TimeoutError(f"timed out after {timeout:.0f} s") from None
    elapsed = time.perf_counter() - started
    stderr = done.stderr.decode(errors="replace")
    if done.returncode != 0:
        raise RuntimeError(f"exit {done.returncode}: {stderr.strip()[-300:]}")
    peak_kb = 0.0
    for line in stderr.splitlines():
        if line.startswith("KMCODEC-MAXRSS "):
            peak_kb = float(line.split()[1])
    return elapsed, peak_kb / 1024.0


def read_output(path: Path) -> np.ndarray:
    """RGB pixels of a method's output (.kmq or an image file)."""
    if path.suffix == ".kmq":
        import kmcodec

        return kmcodec.read(path).to_array()[:, :, :3]
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def psnr(reference: np.ndarray, other: np.ndarray) -> float:
    """RGB PSNR in dB, accumulated in chunks so big images need no float64 copy."""
    flat_a = reference.reshape(-1)
    flat_b = other.reshape(-1)
    total = 0.0
    for start in range(0, flat_a.size, 1 << 22):
        diff = flat_a[start : start + (1 << 22)].astype(np.int32) - flat_b[start : start + (1 << 22)]
        total += float(np.dot(diff, diff))
    mse = total / flat_a.size
    return float("inf") if mse == 0 else 10.0 * np.log10(255.0**2 / mse)


def sample_index(n: int) -> np.ndarray:
    """A fixed pixel sample (the same for every method) for ΔE."""
    if n <= DELTA_E_SAMPLE:
        return np.arange(n)
    return np.sort(np.random.default_rng(12345).choice(n, DELTA_E_SAMPLE, replace=False))


def delta_e(reference: np.ndarray, other: np.ndarray) -> float | None:
    """Mean CIEDE2000 over the fixed sample (scikit-image), or None if it is missing."""
    try:
        from skimage.color import deltaE_ciede2000, rgb2lab
    except ImportError:
        return None
    index = sample_index(reference.shape[0] * reference.shape[1])
    a = reference.reshape(-1, 3)[index][None].astype(np.float64) / 255.0
    b = other.reshape(-1, 3)[index][None].astype(np.float64) / 255.0
    return float(deltaE_ciede2000(rgb2lab(a), rgb2lab(b)).mean())


def delta_e_ok(reference: np.ndarray, other: np.ndarray) -> float:
    """Mean OKLab distance x 100 (ΔE_OK) over the same fixed sample."""
    from kmcodec.colorspace import mean_delta_e_ok

    index = sample_index(reference.shape[0] * reference.shape[1])
    return mean_delta_e_ok(reference.reshape(-1, 3)[index], other.reshape(-1, 3)[index])


def bench_image(image: CorpusImage, ks: list[int], methods: list[Method], args, workdir: Path) -> list[Result]:
    """Run every available method at every k on one image.

    The runs of one k go round by round (each method once a round), so that a machine whose speed
    wanders slows every method alike instead of the ones that happened to run in a slow minute.
    """
    with Image.open(image.path) as opened:
        original = np.asarray(opened.convert("RGB"))
    results = []
    for k in ks:
        runnable: list[tuple[Method, Result, Path, int]] = []
        for method in methods:
            result = Result(image.name, round(image.megapixels, 2), k, method.name)
            results.append(result)
            if not method.available:
                result.note = f"skipped: {method.why_missing}"
            elif k > method.max_k:
                result.note = f"skipped: {method.name} supports k <= {method.max_k}"
            elif method.slow and image.width * image.height > SLOW_MAX_PIXELS and not args.all_slow:
                result.note = "skipped: slow method on a big image (use --all-slow)"
            elif method.slow and args.skip_slow:
                result.note = "skipped: --skip-slow"
            else:
                output = workdir / f"{image.name}-k{k}-{method.name}{method.suffix}"
                runnable.append((method, result, output, 1 if method.slow else args.repeat))
        peaks: dict[str, list[float]] = {method.name: [] for method, *_ in runnable}
        for round_index in range(max((repeat for *_, repeat in runnable), default=0)):
            for method, result, output, repeat in runnable:
                if round_index >= repeat or result.note:
                    continue
                try:
                    seconds, peak = timed_run(method.command(image.path, output, k, args.coding), args.timeout)
                except (RuntimeError, TimeoutError, OSError) as exc:
                    result.note = f"failed: {exc}"
                    continue
                result.runs.append(seconds)
                peaks[method.name].append(peak)
        for method, result, output, _ in runnable:
            if result.note:
                continue
            result.seconds = statistics.median(result.runs)
            result.peak_mb = statistics.median(peaks[method.name])
            result.output_bytes = output.stat().st_size
            pixels = read_output(output)
            result.psnr = psnr(original, pixels)
            result.delta_e = delta_e(original, pixels)
            result.delta_e_ok = delta_e_ok(original, pixels)
            output.unlink()
            print(
                f"{image.name:>20} k={k:<5} {method.name:>16}: {result.seconds:7.3f} s {result.peak_mb:7.0f} MB "
                f"{result.psnr:6.2f} dB ΔE_OK {result.delta_e_ok:5.2f} ΔE00 {fmt(result.delta_e, '5.2f')}",
                flush=True,
            )
    return results


# --------------------------------------------------------------------------- reports


def fmt(value: float | None, spec: str) -> str:
    return "–" if value is None else format(value, spec)


def markdown(results: list[Result], methods: list[Method]) -> str:
    """Per image and k: every method's numbers and its time and PSNR against kmcodec."""
    lines = []
    groups: dict[tuple[str, int], list[Result]] = {}
    for r in results:
        groups.setdefault((r.image, r.k), []).append(r)
    for (image, k), rows in groups.items():
        ours = next((r for r in rows if r.method == "kmcodec" and r.seconds), None)
        lines.append(f"\n#### {image} ({rows[0].megapixels} MP), k = {k}\n")
        lines.append("| method | time s | time / kmcodec | peak MB | PSNR dB | PSNR − kmcodec | ΔE_OK | ΔE2000 | bytes |")
        lines.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        for r in rows:
            if r.seconds is None:
                lines.append(f"| {r.method} | {r.note} | | | | | | | |")
                continue
            ratio = r.seconds / ours.seconds if ours else None
            gap = r.psnr - ours.psnr if ours and ours.psnr is not None else None
            lines.append(
                f"| {r.method} | {r.seconds:.3f} | {fmt(ratio, '.2f')}× | {r.peak_mb:.0f} | {r.psnr:.2f} | "
                f"{fmt(gap, '+.2f')} | {fmt(r.delta_e_ok, '.2f')} | {fmt(r.delta_e, '.2f')} | {r.output_bytes:,} |"
            )
    return "\n".join(lines) + "\n"


def summary(results: list[Result]) -> str:
    """The issue's targets: kmcodec vs pngquant time, and PSNR vs sklearn-all and pngquant, per image and k."""
    by = {(r.image, r.k, r.method): r for r in results}
    lines = [
        "| image | MP | k | kmcodec s | pngquant s | time ratio | kmcodec MB | kmcodec dB | − sklearn-all | "
        "− pngquant | ΔE_OK rgb | ΔE_OK oklab | ΔE2000 rgb | ΔE2000 oklab |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for (image, k, method), r in by.items():
        if method != "kmcodec" or r.seconds is None:
            continue
        pq = by.get((image, k, "pngquant"))
        sk = by.get((image, k, "sklearn-all"))
        ok = by.get((image, k, "kmcodec-oklab"))
        pq_s = pq.seconds if pq else None
        lines.append(
            f"| {image} | {r.megapixels} | {k} | {r.seconds:.2f} | {fmt(pq_s, '.2f')} | "
            f"{fmt(r.seconds / pq_s if pq_s else None, '.2f')} | {r.peak_mb:.0f} | {r.psnr:.2f} | "
            f"{fmt(r.psnr - sk.psnr if sk and sk.psnr else None, '+.2f')} | "
            f"{fmt(r.psnr - pq.psnr if pq and pq.psnr else None, '+.2f')} | {fmt(r.delta_e_ok, '.2f')} | "
            f"{fmt(ok.delta_e_ok if ok else None, '.2f')} | {fmt(r.delta_e, '.2f')} | "
            f"{fmt(ok.delta_e if ok else None, '.2f')} |"
        )
    return "\n".join(lines) + "\n"


def plot(results: list[Result], path: Path) -> bool:
    """Time vs PSNR per method, one panel per k; False (with a note) if matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        note("matplotlib missing: no plot (pip install matplotlib)")
        return False
    ks = sorted({r.k for r in results})
    fig, axes = plt.subplots(1, len(ks), figsize=(5 * len(ks), 4.5), squeeze=False)
    methods = sorted({r.method for r in results})
    colours = {m: plt.cm.tab10(i % 10) for i, m in enumerate(methods)}
    for ax, k in zip(axes[0], ks):
        for m in methods:
            pts = [(r.seconds, r.psnr) for r in results if r.k == k and r.method == m and r.seconds is not None]
            if pts:
                xs, ys = zip(*pts)
                ax.scatter(xs, ys, label=m, color=colours[m], s=22)
        ax.set_xscale("log")
        ax.set_title(f"k = {k}")
        ax.set_xlabel("wall time, s (log)")
        ax.set_ylabel("PSNR, dB")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return True


# --------------------------------------------------------------------------- decode speed


def decode_bench(images: list[CorpusImage], k: int, repeat: int) -> str:
    """Raw .kmq -> RGB array vs Pillow PNG-8 (the same labels and palette) -> RGB array, in-process medians."""
    import kmcodec

    lines = [
        "| image | MP | k | .kmq raw → RGB ms | PNG-8 → RGB ms (Pillow) | ratio |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for image in images:
        encoded = kmcodec.quantize(image.path, k)
        data = kmcodec.encode(encoded, coding="raw")  # this mode measures the raw coding; bench_size.py the others
        buffer = io.BytesIO()
        if encoded.k <= 256:
            encoded.to_pil_palette().save(buffer, format="PNG")
        png = buffer.getvalue()

        def ours() -> None:
            kmcodec.decode(data).to_array()

        def pillow() -> None:
            with Image.open(io.BytesIO(png)) as opened:
                np.asarray(opened.convert("RGB"))

        decoders = {"kmq": ours, "png": pillow}
        runs: dict[str, list[float]] = {name: [] for name in decoders}
        for fn in decoders.values():
            fn()  # warm up
        for _ in range(repeat):  # round by round, as bench_image does
            for name, fn in decoders.items():
                started = time.perf_counter()
                fn()
                runs[name].append(time.perf_counter() - started)
        times = {name: statistics.median(values) * 1000 for name, values in runs.items()}
        lines.append(
            f"| {image.name} | {image.megapixels:.2f} | {encoded.k} | {times['kmq']:.1f} | {times['png']:.1f} | "
            f"{times['kmq'] / times['png']:.2f}× |"
        )
        print(lines[-1], flush=True)
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("images", nargs="*", type=Path, help="extra images to add to the corpus")
    parser.add_argument("--sizes", default="all", choices=("all", "small", "4mp", "large", "none"))
    parser.add_argument("--only", nargs="+", help="only corpus images with these names")
    parser.add_argument("-k", nargs="+", type=int, default=list(DEFAULT_KS))
    parser.add_argument(
        "--methods", nargs="+",
        default=["kmcodec", "kmcodec-oklab", "pngquant", "imagequant", "pillow-mediancut", "pillow-octree",
                 "sklearn-all", "sklearn-1000"],
    )
    parser.add_argument("--repeat", type=int, default=3, help="runs per measurement (the median is reported)")
    parser.add_argument("--skip-slow", action="store_true", help="skip scikit-learn on all pixels entirely")
    parser.add_argument("--all-slow", action="store_true", help=f"run it on images above {SLOW_MAX_PIXELS:,} pixels too")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds before a run is abandoned")
    parser.add_argument("--decode", action="store_true", help="decode-speed mode instead of the quantizer benchmark")
    parser.add_argument("--coding", help="label coding kmcodec writes (default: its own default, auto)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench-out", help="where reports go")
    parser.add_argument("--run-peer", nargs=4, metavar=("METHOD", "IN", "OUT", "K"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.run_peer:
        method, source, output, k = args.run_peer
        run_peer(method, source, output, int(k))
        return 0
    images = [] if args.sizes == "none" else load_corpus(sizes=args.sizes)
    images += load_corpus(sizes="none", extra=args.images) if args.images else []
    if args.only:
        images = [i for i in images if i.name in args.only]
    if not images:
        raise SystemExit("no images to benchmark")
    args.out.mkdir(parents=True, exist_ok=True)
    if args.decode:
        table = decode_bench(images, args.k[0], max(args.repeat, 5))
        (args.out / "decode.md").write_text(table)
        print(f"\nwrote {args.out / 'decode.md'}")
        return 0
    methods = available_methods(args.methods)
    byte_compile_kmcodec()
    for m in methods:
        if not m.available:
            note(f"{m.name} skipped: {m.why_missing}")
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="kmcodec-bench-") as tmp:
        for image in images:
            results += bench_image(image, args.k, methods, args, Path(tmp))
    report = "## Summary\n\n" + summary(results) + "\n## Details\n" + markdown(results, methods)
    (args.out / "bench.md").write_text(report)
    (args.out / "bench.json").write_text(json.dumps([asdict(r) for r in results], indent=1))
    plotted = plot(results, args.out / "bench.png")
    print("\n" + summary(results))
    print(f"wrote {args.out / 'bench.md'}, {args.out / 'bench.json'}" + (f", {args.out / 'bench.png'}" if plotted else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
