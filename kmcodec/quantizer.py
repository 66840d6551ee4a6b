"""Colour quantization: choose a palette of at most k colours by k-means and label every pixel.

All engines work on the image's colour histogram (distinct colours weighted by
their pixel counts), which has the same k-means objective as all pixels at a
fraction of the cost. Labels are exact nearest palette entries of the distinct
colours, mapped back to the pixels through a lookup table.

Engines:
- ``fast`` (default): bincount histogram over 24-bit keys; weighted k-means on
  the histogram (merged into small colour cells when it is large) from a
  variance-minimizing split start; Lloyd refinement passes on all distinct
  colours; exact grid-pruned nearest-entry labelling. numpy only.
- ``sklearn``: the textbook method, scikit-learn ``KMeans`` (k-means++ start,
  Lloyd to convergence) fitted on the weighted histogram, the same objective as
  fitting every pixel. Kept as the quality reference.
"""

from __future__ import annotations

import numbers
import operator
from dataclasses import dataclass

import numpy as np

from . import fastpath
from .colorspace import from_features, to_features
from .errors import KMQError
from .image import label_counts
from .kmeans import kmeans_plus_plus, lloyd, split_start
from .names import DEFAULT_ENGINE, DEFAULT_SPACE, DEFAULT_SPEED, ENGINES, MAX_RDO_DB, MAX_SEED, SPACES, is_integer
from .nearest import nearest_centroid
from .palette_order import tree_order
from .parallel import run_in_threads
from .smoothing import smooth_within

SPEEDS = range(1, 11)
#: Pixels whose keys are computed at once; bounds the per-pixel temporaries (8 bytes each).
PIXEL_CHUNK = 1 << 22
#: Below this many pixels sorting the keys beats a bincount over all 2**24 possible colours.
SMALL_IMAGE_PIXELS = 1 << 20
#: The refinement rounds run on up to this many times the plan's max_points (finer colour cells).
REFINE_POINTS_FACTOR = 8
#: Above this k the fast engine starts from colour cells instead of splits, and runs LARGE_K_ITER Lloyd rounds.
LARGE_K = 1024
LARGE_K_ITER = 8


class QuantizeOptionError(KMQError):
    """A quantizer option (k, engine, space, speed, dither) is out of range."""

    kind = "option"


@dataclass(frozen=True)
class SpeedPlan:
    """What a --speed level buys.

    max_points: histogram points the first k-means runs on (merged colour cells beyond);
    max_iter: Lloyd rounds there; refine: Lloyd rounds after, on up to 8x as many points (finer cells);
    plus_plus_max_k: up to this k a second start (greedy k-means++) runs and the lower error wins;
    small_k_starts: k-means++ starts for k <= 16, where local optima differ most;
    tol: Lloyd stops when a round improves the error by less than this fraction (1e-4 moves PSNR
    by at most 0.005 dB from 1e-5 on the benchmark corpus, in about half the rounds).
    """

    max_points: int
    max_iter: int
    refine: int
    plus_plus_max_k: int
    small_k_starts: int
    tol: float

    @classmethod
    def for_speed(cls, speed: int) -> "SpeedPlan":
        """1 is slowest and best, 10 fastest; 4 is the default."""
        table = {
            1: (1 << 18, 300, 100, 1024, 8, 1e-5),
            2: (1 << 17, 200, 50, 256, 6, 1e-5),
            3: (1 << 16, 100, 30, 128, 4, 1e-5),
            4: (1 << 15, 60, 8, 64, 4, 1e-4),
            5: (1 << 14, 40, 8, 32, 2, 1e-4),
            6: (1 << 13, 30, 4, 16, 1, 1e-4),
            7: (1 << 12, 20, 2, 0, 0, 1e-4),
            8: (1 << 12, 10, 1, 0, 0, 1e-4),
            9: (1 << 11, 5, 0, 0, 0, 1e-4),
            10: (1 << 10, 2, 0, 0, 0, 1e-4),
        }
        return cls(*table[speed])


@dataclass(frozen=True)
class ColourHistogram:
    """The distinct colours of an image (sorted by packed key) and how many pixels have each."""

    colours: np.ndarray  # (m, C) uint8
    counts: np.ndarray  # (m,) int64
    keys: np.ndarray  # (m,) uint32 packed colour keys, ascending


def pixel_keys(flat: np.ndarray) -> np.ndarray:
    """Pack (n, C) uint8 colours into uint32 keys, first channel most significant."""
    channels = flat.shape[1]
    keys = flat[:, 0].astype(np.uint32)
    for c in range(1, channels):
        keys <<= np.uint32(8)
        keys |= flat[:, c]
    return keys


def _unpack_keys(keys: np.ndarray, channels: int) -> np.ndarray:
    colours = np.empty((keys.size, channels), dtype=np.uint8)
    for c in range(channels):
        colours[:, c] = (keys >> np.uint32(8 * (channels - 1 - c))) & np.uint32(255)
    return colours


def rgb_histogram(keys: np.ndarray, counts: np.ndarray) -> ColourHistogram:
    """The ColourHistogram of RGB colours given as ascending 24-bit keys and their counts."""
    return ColourHistogram(_unpack_keys(keys, 3), counts.astype(np.int64), keys.astype(np.uint32))


def colour_histogram(pixels: np.ndarray) -> ColourHistogram:
    """Count the distinct colours of (H, W, C) uint8 pixels, in chunks (bincount over 24-bit keys for RGB)."""
    channels = pixels.shape[2]
    flat = pixels.reshape(-1, channels)
    fast = fastpath.histogram_rgb(flat) if channels == 3 else None
    if fast is not None:
        return rgb_histogram(*fast)
    if channels == 3 and flat.shape[0] >= SMALL_IMAGE_PIXELS:
        counts_all = np.bincount(pixel_keys(flat[:PIXEL_CHUNK]), minlength=1 << 24)
        for start in range(PIXEL_CHUNK, flat.shape[0], PIXEL_CHUNK):
            counts_all += np.bincount(pixel_keys(flat[start : start + PIXEL_CHUNK]), minlength=1 << 24)
        keys = np.flatnonzero(counts_all).astype(np.uint32)
        counts = counts_all[keys]
        del counts_all
    else:
        parts = [
            np.unique(pixel_keys(flat[s : s + PIXEL_CHUNK]), return_counts=True)
            for s in range(0, flat.shape[0], PIXEL_CHUNK)
        ]
        if len(parts) == 1:
            keys, counts = parts[0]
        else:
            all_keys = np.concatenate([p[0] for p in parts])
            all_counts = np.concatenate([p[1] for p in parts])
            keys, inverse = np.unique(all_keys, return_inverse=True)
            counts = np.bincount(inverse, weights=all_counts, minlength=keys.size).astype(np.int64)
    return ColourHistogram(_unpack_keys(keys, channels), counts.astype(np.int64), keys.astype(np.uint32))


def map_pixels(pixels: np.ndarray, histogram: ColourHistogram, colour_label: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Label of every pixel: its colour's label, looked up by packed key, chunk by chunk."""
    height, width, channels = pixels.shape
    flat = pixels.reshape(-1, channels)
    if channels == 3:
        fast = fastpath.map_rgb(flat, histogram.keys, colour_label, dtype)
        if fast is not None:
            return fast.reshape(height, width)
    out = np.empty(flat.shape[0], dtype=dtype)
    if channels == 3 and flat.shape[0] >= SMALL_IMAGE_PIXELS:
        lut = np.zeros(1 << 24, dtype=dtype)
        lut[histogram.keys] = colour_label
        for start in range(0, flat.shape[0], PIXEL_CHUNK):
            out[start : start + PIXEL_CHUNK] = lut[pixel_keys(flat[start : start + PIXEL_CHUNK])]
    else:
        table = colour_label.astype(dtype)
        for start in range(0, flat.shape[0], PIXEL_CHUNK):
            index = np.searchsorted(histogram.keys, pixel_keys(flat[start : start + PIXEL_CHUNK]))
            out[start : start + PIXEL_CHUNK] = table[index]
    return out.reshape(height, width)


def reduce_histogram(
    features: np.ndarray, colours: np.ndarray, counts: np.ndarray, max_points: int
) -> tuple[np.ndarray, np.ndarray]:
    """At most about max_points weighted points: distinct colours merged into the cells of a coarser RGB grid.

    Each cell becomes the weighted mean of its colours' features, weighted by
    their total count; the grid is the finest (8 down to 1 bit per channel)
    that keeps the number of occupied cells within max_points.
    """
    weights = counts.astype(np.float64)
    if features.shape[0] <= max_points:
        return features, weights
    channels = colours.shape[1]
    for bits in range(7, 0, -1):
        shift = np.uint32(8 - bits)
        cell = np.zeros(colours.shape[0], dtype=np.uint32)
        for c in range(channels):
            cell <<= np.uint32(bits)
            cell |= colours[:, c].astype(np.uint32) >> shift
        occupied, inverse = _distinct_cells(cell, bits * channels)
        if occupied <= max_points or bits == 1:
            break
    total = np.bincount(inverse, weights=weights, minlength=occupied)
    merged = np.empty((occupied, features.shape[1]), dtype=np.float32)
    for d in range(features.shape[1]):
        merged[:, d] = np.bincount(inverse, weights=weights * features[:, d], minlength=occupied) / total
    return merged, total


#: Cell numbers up to this many bits are ranked through a table instead of sorted (2 MiB cells: 10 MB).
CELL_TABLE_BITS = 21


def _distinct_cells(cell: np.ndarray, cell_bits: int) -> tuple[int, np.ndarray]:
    """(number of distinct cells, each point's rank among them in ascending cell order), like np.unique's inverse."""
    if cell_bits > CELL_TABLE_BITS:
        occupied, inverse = np.unique(cell, return_inverse=True)
        return occupied.size, inverse
    seen = np.zeros(1 << cell_bits, dtype=bool)
    seen[cell] = True
    rank = np.cumsum(seen, dtype=np.int32) - 1
    return int(rank[-1]) + 1, rank[cell]


def fast_centroids(
    features: np.ndarray, colours: np.ndarray, counts: np.ndarray, k: int, plan: SpeedPlan, seed: int = 0
) -> np.ndarray:
    """Weighted k-means centroids (in feature space): Lloyd on the reduced histogram from a split start
    (and, for small k, from a k-means++ start too, keeping the lower error), then Lloyd rounds on every
    distinct colour until they stop improving or the plan's budget is spent."""
    if k > LARGE_K:
        # Thousands of entries: start from the finest colour cells that number at most k (one split per
        # entry would cost seconds), and stop Lloyd early; the error is already far below what the eye sees.
        start, _ = reduce_histogram(features, colours, counts, k)
        if start.shape[0] < k:  # fill up with the colours the cells serve worst
            _, dist = fastpath.nearest(features, start)
            worst = np.argsort(-(counts * dist), kind="stable")[: k - start.shape[0]]
            start = np.concatenate([start, features[worst]])
        centroids, _ = lloyd(
            features, counts.astype(np.float64), start, max_iter=min(plan.max_iter, LARGE_K_ITER), tol=plan.tol
        )
        return centroids
    points, weights = reduce_histogram(features, colours, counts, max(plan.max_points, 2 * k))
    starts = plan.small_k_starts if k <= 16 else (1 if k <= plan.plus_plus_max_k else 0)

    def from_split() -> tuple[np.ndarray, float]:
        return lloyd(points, weights, split_start(points, weights, k), max_iter=plan.max_iter, tol=plan.tol)

    def from_plus_plus() -> tuple[np.ndarray, float]:
        """The best k-means++ start after Lloyd (the first of equal errors)."""
        best = None
        for attempt in range(starts):
            start = kmeans_plus_plus(points, weights, k, seed + attempt)
            other = lloyd(points, weights, start, max_iter=plan.max_iter, tol=plan.tol)
            if best is None or other[1] < best[1]:
                best = other
        return best

    # The starts are independent (their C loops release the GIL), so the k-means++ ones run beside the split
    # one; the split start keeps ties, as when they ran one after the other.
    results = run_in_threads([from_split, from_plus_plus] if starts else [from_split], fastpath.threads())
    centroids, error = results[0]
    if len(results) > 1 and results[1][1] < error:
        centroids, error = results[1]
    if points.shape[0] < features.shape[0] and plan.refine:
        # Refine on a finer reduction (every distinct colour when there are not too many of them).
        fine, fine_weights = reduce_histogram(features, colours, counts, REFINE_POINTS_FACTOR * plan.max_points)
        if fine.shape[0] > points.shape[0]:
            centroids, _ = lloyd(fine, fine_weights, centroids, max_iter=plan.refine, tol=plan.tol)
    return centroids


def sklearn_centroids(features: np.ndarray, counts: np.ndarray, k: int, seed: int) -> np.ndarray:
    """scikit-learn KMeans (k-means++ start, Lloyd to convergence) on the weighted histogram."""
    from sklearn.cluster import KMeans

    model = KMeans(n_clusters=k, n_init=1, random_state=seed)
    model.fit(features.astype(np.float32), sample_weight=counts.astype(np.float32))
    return model.cluster_centers_.astype(np.float64)


def _sorted_distinct(keys: np.ndarray) -> np.ndarray:
    """np.unique for a small 1-D array, without np.unique's import of numpy.ma (20 ms of start-up)."""
    ordered = np.sort(keys)
    keep = np.ones(ordered.size, dtype=bool)
    keep[1:] = ordered[1:] != ordered[:-1]
    return ordered[keep]


def finish_palette(
    centroids: np.ndarray, histogram: ColourHistogram, features: np.ndarray, space: str
) -> tuple[np.ndarray, np.ndarray]:
    """Round centroids to 8-bit colours, label each distinct colour with its exact nearest entry (in the
    clustering space), drop unused and duplicate entries, and order the palette by use (most first;
    quantize_pixels then puts it in label-tree order, and this order breaks its ties).

    Returns (palette (k', C) uint8, label of each distinct colour).
    """
    rounded = np.clip(np.rint(from_features(centroids, space)), 0, 255).astype(np.uint8)
    rounded = _unpack_keys(_sorted_distinct(pixel_keys(rounded)), rounded.shape[1])  # sorted, no duplicates
    entry_features = rounded if space == "rgb" else to_features(rounded, space)
    points = histogram.colours if space == "rgb" else features
    colour_label = nearest_centroid(points, entry_features)
    usage = np.bincount(colour_label, weights=histogram.counts, minlength=rounded.shape[0])
    order = np.lexsort((np.arange(rounded.shape[0]), -usage))
    order = order[usage[order] > 0]
    return rounded[order], renumbering(order, rounded.shape[0])[colour_label]


def check_options(
    k: int, engine: str, space: str, speed: int, dither: float, rdo: float = 0.0, seed: int = 0
) -> None:
    """Raise QuantizeOptionError for an option out of range or of the wrong type (True for k, 1.9 for a seed, "16"
    for colors: refused, not truncated), or for options that undo each other."""
    if not is_integer(k) or not 1 <= k <= 65536:
        raise QuantizeOptionError(f"k must be an integer 1 to 65536, got {k!r}")
    if not is_integer(seed) or not 0 <= seed <= MAX_SEED:
        raise QuantizeOptionError(f"seed must be an integer 0 to {MAX_SEED}, got {seed!r}")
    if not is_integer(speed):
        raise QuantizeOptionError(f"speed must be an integer 1 (best) to 10 (fastest), got {speed!r}")
    for name, value in (("dither strength", dither), ("rdo", rdo)):
        if not isinstance(value, numbers.Real) or (name == "rdo" and isinstance(value, bool)):
            raise QuantizeOptionError(f"{name} must be a number, got {value!r}")
    if engine not in ENGINES:
        raise QuantizeOptionError(f"unknown engine {engine!r} (choose from {', '.join(ENGINES)})")
    if space not in SPACES:
        raise QuantizeOptionError(f"unknown colour space {space!r} (choose from {', '.join(SPACES)})")
    if speed not in SPEEDS:
        raise QuantizeOptionError(f"speed must be 1 (best) to 10 (fastest), got {speed}")
    if not 0.0 <= dither <= 1.0:
        raise QuantizeOptionError(f"dither strength must be 0 to 1, got {dither}")
    if not 0.0 <= rdo <= MAX_RDO_DB:
        raise QuantizeOptionError(f"rdo must be 0 to {MAX_RDO_DB:g} dB of PSNR, got {rdo}")
    if rdo > 0.0 and dither > 0.0:
        raise QuantizeOptionError("rdo and dither do not go together: rdo would smooth away the dithering's pattern")


def quantize_pixels(
    pixels: np.ndarray,
    k: int,
    *,
    seed: int = 0,
    engine: str = DEFAULT_ENGINE,
    space: str = DEFAULT_SPACE,
    speed: int = DEFAULT_SPEED,
    dither: float = 0.0,
    rdo: float = 0.0,
    histogram: ColourHistogram | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Quantize (H, W, C) uint8 pixels to at most k colours.

    Returns (palette (k', C) uint8, labels (H, W)) with k' <= k, every entry distinct and used, in
    palette_order.tree_order (which helps the context coder); the palette is exactly the image's colours
    when it has no more than k. Without dithering every label is the exact nearest palette entry (in
    `space`). With rdo > 0, pixels may then take a neighbour's label where that costs little error, for a
    smaller file, lowering the PSNR by at most rdo dB (smoothing.py). The same pixels and options always give
    the same result. `histogram` is colour_histogram(pixels) where the caller has it already (the PNG reader
    counts the colours as it decodes, pngread.py).
    """
    check_options(k, engine, space, speed, dither, rdo, seed)
    seed = operator.index(seed)  # a numpy integer would overflow in pcg64's 32-bit arithmetic
    if histogram is None:
        histogram = colour_histogram(pixels)
    if histogram.colours.shape[0] <= k:
        palette, colour_label = _exact_palette(histogram)
    else:
        features = to_features(histogram.colours, space)
        if engine == "sklearn":
            centroids = sklearn_centroids(features, histogram.counts, k, seed)
        else:
            plan = SpeedPlan.for_speed(speed)
            centroids = fast_centroids(features, histogram.colours, histogram.counts, k, plan, seed)
        palette, colour_label = finish_palette(centroids, histogram, features, space)
    dtype = np.dtype(np.uint8) if palette.shape[0] <= 256 else np.dtype(np.uint16)
    if dither > 0.0 and palette.shape[0] > 1:
        return _drop_unused(palette, fastpath.dither(pixels, palette, dither), dtype)
    usage = np.bincount(colour_label, weights=histogram.counts, minlength=palette.shape[0])
    order = tree_order(palette, usage)
    palette, labels = palette[order], map_pixels(pixels, histogram, renumbering(order, order.size)[colour_label], dtype)
    if rdo > 0.0 and palette.shape[0] > 1:
        return _drop_unused(palette, smooth_within(pixels, palette, labels, rdo), dtype)
    return palette, labels


def renumbering(order: np.ndarray, size: int) -> np.ndarray:
    """The new index of each of `size` old entries when the entries order[0], order[1], ... are kept, in
    that order (entries left out map to 0: no label refers to them)."""
    remap = np.zeros(size, dtype=np.int32)
    remap[order] = np.arange(order.size, dtype=np.int32)
    return remap


def _drop_unused(palette: np.ndarray, labels: np.ndarray, dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
    """Remove palette entries no label uses (dithering or rdo may leave some), put the rest in tree_order and
    renumber the labels."""
    usage = label_counts(labels, palette.shape[0])
    used = np.flatnonzero(usage)
    order = used[tree_order(palette[used], usage[used])]
    return palette[order], renumbering(order, palette.shape[0]).astype(dtype)[labels]


def _exact_palette(histogram: ColourHistogram) -> tuple[np.ndarray, np.ndarray]:
    """The image's own colours as the palette, ordered by use (most first), ties by colour (quantize_pixels
    then puts it in label-tree order)."""
    order = np.lexsort((np.arange(histogram.counts.size), -histogram.counts))
    return histogram.colours[order], renumbering(order, order.size)
