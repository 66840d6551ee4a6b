"""Colour quantization: choose a palette of at most k colours by k-means and label every pixel.

The work is done on the image's colour histogram (distinct colours weighted by
their pixel counts), which has the same k-means objective as all pixels at a
fraction of the cost; labels are exact nearest palette entries, mapped back to
pixels through the histogram's inverse index.
"""

from __future__ import annotations

import numpy as np

ENGINES = ("sklearn",)
DEFAULT_ENGINE = "sklearn"


def colour_histogram(pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return (colours (m, C) uint8, counts (m,) int64, inverse (H*W,) index of each pixel's colour).

    Colours are sorted by their packed integer key, so the result is deterministic.
    """
    height, width, channels = pixels.shape
    flat = pixels.reshape(-1, channels)
    keys = np.zeros(flat.shape[0], dtype=np.uint32)
    for c in range(channels):
        keys |= flat[:, c].astype(np.uint32) << np.uint32(8 * (channels - 1 - c))
    if channels == 3:
        counts_all = np.bincount(keys, minlength=1)
        present = np.flatnonzero(counts_all)
        lookup = np.zeros(counts_all.size, dtype=np.int64)
        lookup[present] = np.arange(present.size)
        inverse = lookup[keys]
        counts = counts_all[present]
        unique_keys = present.astype(np.uint32)
    else:
        unique_keys, inverse, counts = np.unique(keys, return_inverse=True, return_counts=True)
    colours = np.empty((unique_keys.size, channels), dtype=np.uint8)
    for c in range(channels):
        colours[:, c] = (unique_keys >> np.uint32(8 * (channels - 1 - c))) & np.uint32(255)
    return colours, counts.astype(np.int64), inverse.reshape(-1)


def nearest(colours: np.ndarray, palette: np.ndarray, block_elements: int = 1 << 22) -> np.ndarray:
    """Index of the nearest palette entry (squared Euclidean, first on ties) for each colour.

    Integer-valued float32 arithmetic is exact here (all terms < 2**24), so the
    result is the true nearest entry, not an approximation. Colours are taken in
    blocks of about `block_elements` distances (16 MB), whatever the palette size.
    """
    chunk = max(1, block_elements // max(1, palette.shape[0]))
    pal = palette.astype(np.float32)
    pal_norm = (pal * pal).sum(axis=1)
    out = np.empty(colours.shape[0], dtype=np.int64)
    for start in range(0, colours.shape[0], chunk):
        block = colours[start : start + chunk].astype(np.float32)
        distances = pal_norm[None, :] - 2.0 * (block @ pal.T)
        out[start : start + chunk] = np.argmin(distances, axis=1)
    return out


def finish_palette(
    centroids: np.ndarray, colours: np.ndarray, counts: np.ndarray, inverse: np.ndarray, shape: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """Round centroids to 8 bits, label colours by exact nearest entry, drop unused and duplicate
    entries, order the palette by pixel count (most used first), and return (palette, labels)."""
    rounded = np.clip(np.rint(centroids), 0, 255).astype(np.uint8)
    rounded = np.unique(rounded, axis=0)  # duplicates after rounding would waste palette entries
    if np.array_equal(rounded, colours):  # the image's own colours (both sorted): each colour is its own entry
        colour_label = np.arange(colours.shape[0])
    else:
        colour_label = nearest(colours, rounded)
    usage = np.bincount(colour_label, weights=counts, minlength=rounded.shape[0])
    order = np.lexsort((np.arange(rounded.shape[0]), -usage))
    order = order[usage[order] > 0]
    remap = np.zeros(rounded.shape[0], dtype=np.int64)
    remap[order] = np.arange(order.size)
    palette = rounded[order]
    dtype = np.uint8 if palette.shape[0] <= 256 else np.uint16
    labels = remap[colour_label].astype(dtype)[inverse].reshape(shape)
    return palette, labels


def quantize_pixels(
    pixels: np.ndarray, k: int, *, seed: int = 0, engine: str = DEFAULT_ENGINE
) -> tuple[np.ndarray, np.ndarray]:
    """Quantize (H, W, C) uint8 pixels to at most k colours.

    Returns (palette (k', C) uint8, labels (H, W)) with k' <= k, every entry
    distinct and used; k' is the number of distinct colours when that is <= k.
    The same pixels, k, seed and engine always give the same result.
    """
    if not 1 <= k <= 65536:
        raise ValueError(f"k must be 1 to 65536, got {k}")
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r} (choose from {', '.join(ENGINES)})")
    height, width, _ = pixels.shape
    colours, counts, inverse = colour_histogram(pixels)
    if colours.shape[0] <= k:
        return finish_palette(colours.astype(np.float64), colours, counts, inverse, (height, width))
    centroids = _sklearn_kmeans(colours, counts, k, seed)
    return finish_palette(centroids, colours, counts, inverse, (height, width))


def _sklearn_kmeans(colours: np.ndarray, counts: np.ndarray, k: int, seed: int) -> np.ndarray:
    """scikit-learn KMeans (Lloyd, k-means++ start) on the weighted histogram."""
    from sklearn.cluster import KMeans

    model = KMeans(n_clusters=k, n_init=1, random_state=seed, max_iter=100)
    model.fit(colours.astype(np.float32), sample_weight=counts.astype(np.float32))
    return model.cluster_centers_.astype(np.float64)
