"""tools/palette_optimum.py, the evidence behind the README's claim that the +0.2 dB target cannot be met on
four small cases: its search must never lose ground and must find better palettes where they exist."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

import kmcodec
from kmcodec.kmeans import lloyd
from kmcodec.quantizer import colour_histogram

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))

import palette_optimum  # noqa: E402


def _histogram(pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    histogram = colour_histogram(pixels)
    return histogram.colours, histogram.counts


def test_error_matches_the_stored_palette_image(china: np.ndarray) -> None:
    """rounded_error is the squared error of the palette image a .kmq file of that palette decodes to."""
    pixels = china[::4, ::4]
    image = kmcodec.quantize(pixels, 16)
    colours, counts = _histogram(pixels)
    diff = pixels.astype(np.int64) - image.to_array()[:, :, :3]
    assert palette_optimum.rounded_error(colours, counts, image.palette.astype(np.float64)) == float((diff * diff).sum())


def test_search_escapes_a_bad_local_minimum() -> None:
    """Colour histograms of photos rarely trap Lloyd (which is why the search finds so little there), so the trap
    is built: three clouds of colours, two entries splitting the biggest and one between the other two. Lloyd
    stays there; the swaps give each cloud its own entry."""
    rng = np.random.default_rng(5)
    centres = np.array([[40, 40, 40], [210, 40, 40], [40, 210, 40]])
    sizes = [6000, 2000, 2000]
    pixels = np.concatenate([np.clip(rng.normal(c, 8, (n, 3)), 0, 255) for c, n in zip(centres, sizes)])
    pixels = pixels.astype(np.uint8).reshape(100, 100, 3)
    colours, counts = _histogram(pixels)
    points, weights = colours.astype(np.float64), counts.astype(np.float64)
    trap = np.array([[35.0, 40, 40], [45, 40, 40], [125, 125, 40]])
    _, lloyd_error = lloyd(points, weights, trap, max_iter=100, tol=1e-9)
    best, accepted = palette_optimum.random_swap(colours, counts, trap, swaps=30, seed=1)
    _, swap_error = lloyd(points, weights, best, max_iter=0)
    assert accepted > 0
    assert swap_error < 0.2 * lloyd_error
    assert sorted(np.argmin(((best[:, None] - centres[None]) ** 2).sum(axis=2), axis=1)) == [0, 1, 2]


def test_search_never_loses_ground(china: np.ndarray) -> None:
    """Started from kmcodec's palette, the search returns one at least as good (it only keeps improvements)."""
    pixels = china[::4, ::4]
    colours, counts = _histogram(pixels)
    start = kmcodec.quantize(pixels, 8).palette.astype(np.float64)
    best, _ = palette_optimum.random_swap(colours, counts, start, swaps=20, seed=3)
    points, weights = colours.astype(np.float64), counts.astype(np.float64)
    _, start_error = lloyd(points, weights, start, max_iter=0)
    _, best_error = lloyd(points, weights, best, max_iter=0)
    assert best_error <= start_error
