"""The benchmark corpus: real photos and graphics from 0.25 to 16.7 MP, written once as PNG files.

Sources: scikit-learn's china.jpg and flower.jpg, scikit-image's bundled samples,
and Debian's gnome-backgrounds (16.7 MP, also downscaled to ~4 MP). Missing
sources are skipped with a note. Any user-given image paths are added as they are.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

GNOME = Path("/usr/share/backgrounds/gnome")
DEFAULT_CACHE = Path(__file__).resolve().parent.parent / "bench-out" / "corpus"

SKIMAGE_SAMPLES = ("astronaut", "coffee", "hubble_deep_field", "retina")
GNOME_4MP = ("adwaita-l", "grid-l", "wood-l")
GNOME_FULL = ("adwaita-l", "pixels-l", "wood-l")


@dataclass(frozen=True)
class CorpusImage:
    """One benchmark image: a short name, a PNG path, and its size."""

    name: str
    path: Path
    width: int
    height: int

    @property
    def megapixels(self) -> float:
        return self.width * self.height / 1e6


def _note(message: str) -> None:
    print(f"corpus: {message}", file=sys.stderr)


def _save_png(name: str, pixels: np.ndarray, cache: Path) -> CorpusImage:
    path = cache / f"{name}.png"
    if not path.exists():
        cache.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.png")
        Image.fromarray(pixels).save(tmp, compress_level=1)
        tmp.replace(path)
    height, width = pixels.shape[:2]
    return CorpusImage(name, path, width, height)


def _from_png(name: str, source: Path, cache: Path, size: tuple[int, int] | None) -> CorpusImage:
    path = cache / f"{name}.png"
    if not path.exists():
        image = Image.open(source).convert("RGB")
        if size is not None:
            image = image.resize(size, Image.Resampling.LANCZOS)
        cache.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.png")
        image.save(tmp, compress_level=1)
        tmp.replace(path)
    with Image.open(path) as image:
        width, height = image.size
    return CorpusImage(name, path, width, height)


def load_corpus(
    *, cache: Path = DEFAULT_CACHE, sizes: str = "all", extra: list[Path] | None = None
) -> list[CorpusImage]:
    """Return the corpus images; `sizes` is 'small' (< 3 MP), '4mp', 'large' (>= 12 MP) or 'all'."""
    images: list[CorpusImage] = []
    want_small = sizes in ("all", "small")
    if want_small:
        from sklearn.datasets import load_sample_image

        for name in ("china.jpg", "flower.jpg"):
            images.append(_save_png(name.split(".")[0], load_sample_image(name), cache))
        try:
            import skimage.data
        except ImportError:
            _note("scikit-image missing: its samples are skipped (pip install scikit-image)")
        else:
            for name in SKIMAGE_SAMPLES:
                images.append(_save_png(name, getattr(skimage.data, name)(), cache))
    if sizes in ("all", "4mp", "large"):
        if not GNOME.is_dir():
            _note(f"{GNOME} missing: large images skipped (apt-get install gnome-backgrounds)")
        else:
            if sizes in ("all", "4mp"):
                for name in GNOME_4MP:
                    images.append(_from_png(f"{name}-4mp", GNOME / f"{name}.webp", cache, (2048, 2048)))
            if sizes in ("all", "large"):
                for name in GNOME_FULL:
                    images.append(_from_png(f"{name}-16mp", GNOME / f"{name}.webp", cache, None))
    for path in extra or []:
        with Image.open(path) as image:
            width, height = image.size
        images.append(CorpusImage(path.stem, path, width, height))
    return images
