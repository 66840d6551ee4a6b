"""The inner loops of the quantizer and the raw decoder: the C extension `_fastpath` if built, else numpy.

Both give the same results: nearest centroids are exact (float64 squared
distances summed over dimensions in order, lowest index on ties), dithering
follows the same serpentine Floyd–Steinberg recipe, and unpacking reads the
same MSB-first bitstream. The extension is built by `pip install` (setup.py)
or in place with `python setup.py build_ext --inplace`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .parallel import available_cores

if TYPE_CHECKING:
    from PIL import Image

try:
    from . import _fastpath as _c
except ImportError:  # not built: the numpy paths below are used
    _c = None

#: Elements of a temporary (points, centroids) distance block in the numpy paths.
BLOCK_ELEMENTS = 1 << 21
#: Threads the C loops may split work over (None: the cores this process may run on). Results never
#: depend on it: the split loops compute each point's answer alone and sum in one fixed order.
MAX_THREADS: int | None = None


def threads() -> int:
    """Threads the C loops use: MAX_THREADS, or the cores this process may run on."""
    if MAX_THREADS is not None:
        return max(1, MAX_THREADS)
    return available_cores()


def have_c_extension() -> bool:
    """True when the compiled inner loops are available."""
    return _c is not None


def nearest(
    points: np.ndarray, centroids: np.ndarray, *, hint: np.ndarray | None = None, use_c: bool | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(index int32, squared distance float64) of the exact nearest centroid of each point (lowest index on ties).

    `hint` (likely answers, e.g. the previous Lloyd round's labels) only speeds up the C search.
    """
    x = np.ascontiguousarray(points, dtype=np.float64)
    c = np.ascontiguousarray(centroids, dtype=np.float64)
    n, dims = x.shape
    k = c.shape[0]
    labels = np.empty(n, dtype=np.int32)
    dist = np.empty(n, dtype=np.float64)
    if (_c is not None) if use_c is None else use_c:
        hints = None if hint is None else np.ascontiguousarray(hint, dtype=np.int32)
        _c.nearest(x, n, dims, c, k, labels, dist, hints, threads())
        return labels, dist
    step = max(1, BLOCK_ELEMENTS // k)
    for start in range(0, n, step):
        block = x[start : start + step]
        total = np.zeros((block.shape[0], k), dtype=np.float64)
        for d in range(dims):
            diff = block[:, d, None] - c[None, :, d]
            diff *= diff
            total += diff
        best = np.argmin(total, axis=1)
        labels[start : start + step] = best
        dist[start : start + step] = total[np.arange(block.shape[0]), best]
    return labels, dist


class BoundedAssigner:
    """Exact nearest-centroid assignment for Lloyd rounds over fixed points, with Hamerly's bounds.

    After the first round only points whose bounds no longer separate their
    centroid from the others are rescanned (C extension); the numpy path simply
    rescans every point. Labels are exact nearest centroids either way.
    """

    def __init__(self, points: np.ndarray) -> None:
        self.points = np.ascontiguousarray(points, dtype=np.float64)
        n = self.points.shape[0]
        self.labels = np.zeros(n, dtype=np.int32)
        self.upper = np.zeros(n, dtype=np.float64)
        self.lower = np.zeros(n, dtype=np.float64)
        self.dist = np.zeros(n, dtype=np.float64)
        self.previous: np.ndarray | None = None

    def assign(self, centroids: np.ndarray, weights: np.ndarray | None = None):
        """(labels, squared distances, weighted sums (k, d), total weights (k,)) for these centroids.

        The sums and totals (for the next centroids) are None unless weights are given.
        """
        c = np.ascontiguousarray(centroids, dtype=np.float64)
        k = c.shape[0]
        n, dims = self.points.shape
        if _c is None:
            self.labels, self.dist = nearest(self.points, c, use_c=False)
            if weights is None:
                return self.labels, self.dist, None, None
            totals = np.bincount(self.labels, weights=weights, minlength=k)
            sums = np.stack(
                [np.bincount(self.labels, weights=weights * self.points[:, d], minlength=k) for d in range(dims)], 1
            )
            return self.labels, self.dist, sums, totals
        shift = None if self.previous is None else np.sqrt(((c - self.previous) ** 2).sum(axis=1))
        if weights is None:
            _c.hamerly(
                self.points, n, dims, c, k, self.labels, self.upper, self.lower, shift, self.dist, None, None, None,
                threads(),
            )
            sums = totals = None
        else:
            sums = np.empty((k, dims), dtype=np.float64)
            totals = np.empty(k, dtype=np.float64)
            w = np.ascontiguousarray(weights, dtype=np.float64)
            _c.hamerly(
                self.points, n, dims, c, k, self.labels, self.upper, self.lower, shift, self.dist, w, sums, totals,
                threads(),
            )
        self.previous = c.copy()
        return self.labels, self.dist, sums, totals


def split_start(points: np.ndarray, weights: np.ndarray, k: int) -> np.ndarray | None:
    """kmeans.split_start's centroids from the C extension (same bits as its numpy code), or None without it."""
    if _c is None:
        return None
    out = np.empty((k, points.shape[1]), dtype=np.float64)
    made = _c.split_start(points, points.shape[0], points.shape[1], weights, k, out)
    return out[:made].copy() if made < k else out


def kmeans_plus_plus(
    points: np.ndarray, weights: np.ndarray, k: int, first: int, uniforms: np.ndarray, trials: int
) -> np.ndarray | None:
    """kmeans.kmeans_plus_plus's centre indices from the C extension (the same as its numpy code), or None
    without it. points (n, d) and weights (n,) are contiguous float64; uniforms holds (k - 1) * trials draws."""
    if _c is None:
        return None
    out = np.empty(k, dtype=np.int32)
    made = _c.kmeans_pp(points, points.shape[0], points.shape[1], weights, k, first, uniforms, trials, out)
    return out[:made]


def dither(pixels: np.ndarray, palette: np.ndarray, strength: float, *, use_c: bool | None = None) -> np.ndarray:
    """Serpentine Floyd–Steinberg labels of (H, W, C) uint8 pixels on a (k, C) palette; error x strength diffuses."""
    height, width, channels = pixels.shape
    src = np.ascontiguousarray(pixels, dtype=np.uint8)
    pal = np.ascontiguousarray(palette, dtype=np.float64)
    labels = np.empty(height * width, dtype=np.int32)
    if (_c is not None) if use_c is None else use_c:
        _c.dither(src, height, width, channels, pal, pal.shape[0], float(strength), labels)
        return labels.reshape(height, width)
    # numpy fallback: one pixel at a time (slow; only used when the extension is not built).
    out = labels.reshape(height, width)
    cur = np.zeros((width + 2, channels))
    for y in range(height):
        nxt = np.zeros((width + 2, channels))
        forward = y % 2 == 0
        direction = 1 if forward else -1
        row = src[y].astype(np.float64)
        for step in range(width):
            x = step if forward else width - 1 - step
            want = np.clip(row[x] + cur[x + 1], 0.0, 255.0)
            label = int(nearest(want[None, :], pal, use_c=False)[0][0])
            out[y, x] = label
            err = (want - pal[label]) * strength
            cur[x + direction + 1] += err * (7.0 / 16.0)
            nxt[x - direction + 1] += err * (3.0 / 16.0)
            nxt[x + 1] += err * (5.0 / 16.0)
            nxt[x + direction + 1] += err * (1.0 / 16.0)
        cur = nxt
    return out


#: What a move of --rdo saves the context coder, as the weight of the allowance in tenths (rows: the pixel's own
#: label equals N; equals NW or NE; equals no neighbour; columns: the neighbour taken, W, N, NW, NE). The C
#: pass has the same table (MOVE_WEIGHT in _fastpath.c, exported as _fastpath.MOVE_WEIGHT); a test holds them equal.
MOVE_WEIGHT = ((3, 10, 4, 4), (10, 6, 4, 4), (30, 25, 15, 15))
MOVE_WEIGHT_UNIT = 10


def smooth(pixels: np.ndarray, palette: np.ndarray, labels: np.ndarray, tau: int, cap: int | None = None, *,
           use_c: bool | None = None) -> tuple[np.ndarray, int, int]:
    """One pass of rate-distortion label choice (see smoothing.py): (new labels, error of labels, error added).

    In raster order each pixel tries its neighbours' new labels, W, N, NW, NE, up to the first that equals its
    own, and takes the first that adds at most tau * MOVE_WEIGHT / 10 to its squared error (summed over
    channels) and, given a cap, keeps the total added error within it; otherwise it keeps its own.
    pixels (H, W, C) uint8, palette (k, C) uint8, labels (H, W) uint8 or uint16, every label < k.
    """
    height, width, channels = pixels.shape
    pal = np.ascontiguousarray(palette, dtype=np.uint8)
    own = np.ascontiguousarray(labels)
    out = np.empty_like(own)
    if (_c is not None) if use_c is None else use_c:
        if channels == 3:  # an RGB view of 4-byte pixels is read in place (see rgb_bytes)
            data, stride = rgb_bytes(np.asarray(pixels, dtype=np.uint8).reshape(-1, 3))
        else:
            data, stride = np.ascontiguousarray(pixels, dtype=np.uint8), channels
        base, added = _c.smooth(data, height, width, channels, pal, pal.shape[0], own, out, own.itemsize, int(tau),
                                -1 if cap is None else int(cap), stride)
        return out, base, added
    src = np.ascontiguousarray(pixels, dtype=np.uint8)
    # Python fallback: one pixel at a time (slow; only used when the extension is not built).
    if own.size and int(own.max()) >= pal.shape[0]:
        raise ValueError(f"a label is not below k = {pal.shape[0]}")
    entries = pal.astype(np.int64)
    base = added = 0
    for y in range(height):
        for x in range(width):
            label = int(own[y, x])
            errors = ((src[y, x].astype(np.int64) - entries) ** 2).sum(axis=1)
            error = int(errors[label])
            base += error
            out[y, x] = label
            near = [int(out[y, x - 1]) if x else None, int(out[y - 1, x]) if y else None,
                    int(out[y - 1, x - 1]) if x and y else None,
                    int(out[y - 1, x + 1]) if y and x + 1 < width else None]
            if label == near[0]:
                continue
            kind = 0 if label == near[1] else 1 if label in (near[2], near[3]) else 2
            for side, other in enumerate(near):
                if other is None:
                    continue
                if other == label:
                    break
                if other in near[:side]:
                    continue
                more = int(errors[other]) - error
                if more * MOVE_WEIGHT_UNIT > tau * MOVE_WEIGHT[kind][side] or (cap is not None and added + more > cap):
                    continue
                out[y, x] = other
                added += more
                break
    return out, base, added


def rgb_bytes(flat: np.ndarray) -> tuple[np.ndarray, int]:
    """(bytes, stride) of (n, 3) uint8 pixels for the C loops: pixel i is the 3 bytes at stride * i.

    Packed pixels have stride 3; an RGB view of 4-byte pixels (Pillow's RGBX storage, see
    arrow_pixels) has stride 4 and is passed without a copy; any other layout is packed first.
    """
    if flat.shape[0] > 0 and flat.strides == (4, 1):
        span = (flat.shape[0] - 1) * 4 + 3  # the bytes from the first pixel to the last one's third
        return np.lib.stride_tricks.as_strided(flat, shape=(span,), strides=(1,), writeable=False), 4
    return np.ascontiguousarray(flat), 3


def histogram_rgb(flat: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """(keys uint32 ascending, counts int64) of (n, 3) uint8 colours, or None without the extension."""
    if _c is None:
        return None
    data, stride = rgb_bytes(flat)
    keys, counts = _c.histogram(data, flat.shape[0], stride)
    return np.frombuffer(keys, dtype=np.uint32), np.frombuffer(counts, dtype=np.int64)


def map_rgb(flat: np.ndarray, keys: np.ndarray, key_labels: np.ndarray, dtype: np.dtype) -> np.ndarray | None:
    """Label of every (n, 3) uint8 pixel, its colour's entry of key_labels, or None without the extension."""
    if _c is None:
        return None
    out = np.empty(flat.shape[0], dtype=dtype)
    labels16 = np.ascontiguousarray(key_labels, dtype=np.uint16)
    data, stride = rgb_bytes(flat)
    _c.map_rgb(data, flat.shape[0], np.ascontiguousarray(keys, dtype=np.uint32),
               keys.size, labels16, out, out.itemsize, threads(), stride)
    return out


def arrow_pixels(picture: Image.Image) -> np.ndarray | None:
    """A Pillow RGB or RGBA image's pixels as a read-only (H, W, 3|4) view of Pillow's own memory, or None.

    Pillow stores such pixels in 4 bytes (RGBX, RGBA) and exports them through the Arrow C data
    interface (Pillow >= 11.2) when the image is one block of memory; RGB comes back as a view of the
    first 3 bytes of each pixel. The view keeps Pillow's pixels alive after the image is closed.
    None without the extension, on an older Pillow, or when the image cannot be exported.
    """
    export = getattr(picture, "__arrow_c_array__", None)
    if _c is None or export is None or picture.mode not in ("RGB", "RGBA"):
        return None
    try:
        shared = _c.arrow_pixels(*export())
    except ValueError:  # Pillow refuses (rows in several blocks) or exports another layout
        return None
    pixels = np.frombuffer(shared, dtype=np.uint8).reshape(picture.height, picture.width, 4)
    return pixels if picture.mode == "RGBA" else pixels[:, :, :3]


def pack(labels: np.ndarray, bits: int) -> bytes | None:
    """MSB-first bitstream of uint8/uint16 labels (each < 2**bits), or None without the extension."""
    if _c is None or labels.dtype not in (np.uint8, np.uint16):
        return None
    flat = np.ascontiguousarray(labels).reshape(-1)
    out = bytearray((flat.size * bits + 7) // 8)
    _c.pack(flat, flat.itemsize, flat.size, bits, out)
    return bytes(out)


def unpack(data: bytes | memoryview, n_labels: int, bits: int, dtype: np.dtype) -> tuple[np.ndarray, int] | None:
    """(labels, largest label) unpacked by the extension, or None when it is not built (then numpy is used)."""
    if _c is None:
        return None
    out = np.empty(n_labels, dtype=dtype)
    top = _c.unpack(data, n_labels, bits, out)
    return out, top


def expand(palette: np.ndarray, labels: np.ndarray, *, use_c: bool | None = None) -> np.ndarray:
    """(H, W, C) uint8 pixels: the palette entry of every label (labels must be < k)."""
    height, width = labels.shape
    k, channels = palette.shape
    if (_c is not None) if use_c is None else use_c:
        lab = np.ascontiguousarray(labels)
        out = np.empty((height, width, channels), dtype=np.uint8)
        _c.expand(np.ascontiguousarray(palette), k, channels, lab, lab.size, lab.dtype.itemsize, out)
        return out
    if channels == 3:
        # Gather 4-byte words (one aligned load per pixel), then drop the padding byte.
        padded = np.zeros((k, 4), dtype=np.uint8)
        padded[:, :3] = palette
        words = padded.view(np.uint32).reshape(k)[labels]
        return np.ascontiguousarray(words.view(np.uint8).reshape(height, width, 4)[:, :, :3])
    return palette.view(np.uint32).reshape(k)[labels].view(np.uint8).reshape(height, width, channels)
