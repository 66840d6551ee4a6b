"""How many quantizations auto-k needs: kmcodec's search against plain bisection and a linear scan.

For each image and PSNR target, every strategy looks for the smallest k reaching the target,
sharing one cache of quantizations (so the numbers compare searches, not k-means runs).
Reports probes (quantizations) and the sum of probed k (k-means cost grows with k).

    python tools/autok_probes.py [--width 320] [--targets 25 28 31 34]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kmcodec.autok import _first_passing, _Prober  # noqa: E402
from kmcodec.quantizer import DEFAULT_ENGINE  # noqa: E402


def bisection(upper: int, measure: Callable[[int], float], threshold: float) -> int | None:
    """Powers of two, then plain bisection of the last octave."""
    failing, candidate = 0, 1
    while True:
        candidate = min(candidate, upper)
        if measure(candidate) >= threshold:
            break
        if candidate == upper:
            return None
        failing, candidate = candidate, candidate * 2
    passing = candidate
    while passing - failing > 1:
        middle = (failing + passing) // 2
        if measure(middle) >= threshold:
            passing = middle
        else:
            failing = middle
    return passing


def linear(upper: int, measure: Callable[[int], float], threshold: float) -> int | None:
    """Try k = 1, 2, 3, ... in turn."""
    for k in range(1, upper + 1):
        if measure(k) >= threshold:
            return k
    return None


def corpus(width: int) -> dict[str, np.ndarray]:
    from sklearn.datasets import load_sample_image

    images = {name: load_sample_image(name) for name in ("china.jpg", "flower.jpg")}
    try:
        from skimage import data

        images.update({name: getattr(data, name)() for name in ("astronaut", "coffee", "chelsea")})
    except ImportError:
        print("note: scikit-image missing, its samples are skipped", file=sys.stderr)
    out = {}
    for name, pixels in images.items():
        picture = Image.fromarray(pixels)
        height = round(picture.height * width / picture.width)
        out[name] = np.asarray(picture.resize((width, height), Image.LANCZOS))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=320, help="images are resized to this width")
    parser.add_argument("--targets", type=float, nargs="+", default=[25.0, 28.0, 31.0, 34.0])
    parser.add_argument("--max-k", type=int, default=256)
    args = parser.parse_args()
    strategies = {"kmcodec": _first_passing, "bisection": bisection, "linear": linear}
    totals = {name: [0, 0] for name in strategies}
    print("| image | target dB | k | " + " | ".join(f"{s} probes (sum k)" for s in strategies) + " |")
    print("|---|---|---|" + "---|" * len(strategies))
    for name, pixels in corpus(args.width).items():
        prober = _Prober(pixels, coding="raw", seed=0, engine=DEFAULT_ENGINE)
        upper = min(args.max_k, prober.distinct)
        for target in args.targets:
            cells, answers = [], set()
            for label, search in strategies.items():
                probed: list[int] = []

                def measure(k: int) -> float:
                    probed.append(k)
                    return prober.image(k)[1]

                answers.add(search(upper, measure, target))
                distinct = sorted(set(probed))
                totals[label][0] += len(distinct)
                totals[label][1] += sum(distinct)
                cells.append(f"{len(distinct)} ({sum(distinct)})")
            assert len(answers) == 1, f"strategies disagree on {name} at {target} dB: {answers}"
            print(f"| {name} | {target:g} | {answers.pop()} | " + " | ".join(cells) + " |")
    print("| **total** | | | " + " | ".join(f"**{p} ({s})**" for p, s in totals.values()) + " |")


if __name__ == "__main__":
    main()
