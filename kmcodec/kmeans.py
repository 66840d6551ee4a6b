"""Weighted k-means on a colour histogram: a variance-minimizing split start, then Lloyd iterations.

Every point is a distinct colour (or a small cell of colours) weighted by its
pixel count, so the objective is exactly k-means over the image's pixels at a
fraction of the cost. The start splits the box of largest squared error at the
position that minimizes the error of its two halves (Wu's greedy criterion),
which lands close to a good local optimum; Lloyd iterations then converge.
"""

from __future__ import annotations

import heapq

import numpy as np

from . import fastpath
from .nearest import nearest_centroid
from .pcg64 import Pcg64Stream


def split_start(points: np.ndarray, weights: np.ndarray, k: int) -> np.ndarray:
    """k starting centroids (float64) by repeatedly splitting the cluster of largest weighted squared error.

    Ties of error go to the older cluster; a cluster of one point or no error is left whole. The
    centroids are the clusters' weighted means, ordered by each cluster's first member. The C
    extension and the numpy code below make the same sums in the same order (sequential, as
    np.cumsum does), so they return the same bits.
    """
    n = points.shape[0]
    if k >= n:
        return points.astype(np.float64)
    data = np.ascontiguousarray(points, dtype=np.float64)
    w = np.ascontiguousarray(weights, dtype=np.float64)
    fast = fastpath.split_start(data, w, k)
    if fast is not None:
        return fast
    heap: list[tuple[float, int, np.ndarray]] = []
    counter = 0

    def push(index: np.ndarray) -> None:
        nonlocal counter
        heapq.heappush(heap, (-_sse(data[index], w[index]), counter, index))
        counter += 1

    push(np.arange(n))
    finished: list[np.ndarray] = []
    while heap and len(heap) + len(finished) < k:
        neg_sse, _, index = heapq.heappop(heap)
        if index.size < 2 or neg_sse == 0.0:
            finished.append(index)
            continue
        ordered, cut = _best_split(data[index], w[index])
        index = index[ordered]
        push(index[:cut])
        push(index[cut:])
    groups = finished + [entry[2] for entry in heap]
    groups.sort(key=lambda g: int(g[0]))  # order by first member, so the result does not depend on heap ties
    centroids = np.empty((len(groups), points.shape[1]), dtype=np.float64)
    for i, index in enumerate(groups):
        total, sums = _sequential_sums(data[index], w[index])
        centroids[i] = sums / total
    return centroids


def _sequential_sums(x: np.ndarray, w: np.ndarray) -> tuple[float, np.ndarray]:
    """(sum of w, sum of w * x per axis), each added up in point order."""
    return np.cumsum(w)[-1], np.cumsum(w[:, None] * x, axis=0)[-1]


def _squared_norms(v: np.ndarray) -> np.ndarray:
    """Squared length of each row, summed over the axes in order."""
    total = v[:, 0] * v[:, 0]
    for a in range(1, v.shape[1]):
        total = total + v[:, a] * v[:, a]
    return total


def _sse(x: np.ndarray, w: np.ndarray) -> float:
    """Weighted squared error of points about their weighted mean (sequential sums)."""
    total, sums = _sequential_sums(x, w)
    return float(np.cumsum(w * _squared_norms(x - sums / total))[-1])


def squared_distances_to(axes: np.ndarray, index: int) -> np.ndarray:
    """|x - x[index]|^2 for every point x, given the points as one row per axis: the axes' squares are added
    in order, so the floats equal ((x - x[index]) ** 2).sum(axis=1), five times faster for three axes."""
    total = (axes[0] - axes[0, index]) ** 2
    for axis in axes[1:]:
        total += (axis - axis[index]) ** 2
    return total


def kmeans_plus_plus(points: np.ndarray, weights: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Greedy weighted k-means++ start (as scikit-learn does it: 2 + ln k trials per centre, keep the best).

    The C extension and the numpy code below draw the same random numbers and make the same sums in
    the same order (sequential, as np.cumsum does), so they pick the same centres.
    """
    x = np.ascontiguousarray(points, dtype=np.float64)
    w = np.ascontiguousarray(weights, dtype=np.float64)
    n = x.shape[0]
    if k >= n:
        return x.copy()
    trials = 2 + int(np.log(k))
    # np.random.default_rng(seed): first = rng.choice(n, p=w / w.sum()), then rng.random((k - 1) * trials)
    # (the same numbers as drawing `trials` of them for each centre), without numpy.random's import
    stream = Pcg64Stream(seed)
    cdf = np.cumsum(w / w.sum())
    cdf /= cdf[-1]
    first = int(np.searchsorted(cdf, stream.random(1)[0], side="right"))
    uniforms = np.array(stream.random((k - 1) * trials), dtype=np.float64)
    fast = fastpath.kmeans_plus_plus(x, w, k, first, uniforms, trials)
    if fast is not None:
        return x[fast]
    axes = np.ascontiguousarray(x.T)  # one contiguous array per axis: numpy is slow summing rows of 3
    centres = [first]
    closest = squared_distances_to(axes, first)
    for step in range(1, k):
        running = np.cumsum(w * closest)
        total = running[-1]
        if not total > 0:
            break
        picks = np.searchsorted(running, uniforms[(step - 1) * trials : step * trials] * total)
        picks = np.minimum(picks, n - 1)
        best_cost, best_pick, best_closest = np.inf, -1, closest
        for pick in picks.tolist():
            candidate = np.minimum(closest, squared_distances_to(axes, pick))
            cost = float(np.cumsum(w * candidate)[-1])
            if cost < best_cost:
                best_cost, best_pick, best_closest = cost, pick, candidate
        if best_pick < 0:  # every cost was NaN
            break
        centres.append(best_pick)
        closest = best_closest
    return x[centres]


def _best_split(x: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, int]:
    """(stable order along the axis of largest variance, cut): the cut maximizes the between-halves term.

    The error of a split is const - |sum_L|^2/w_L - |sum_R|^2/w_R; only cuts between distinct
    coordinates count (equal points stay together); without one the cut is the middle.
    """
    total, sums = _sequential_sums(x, w)
    diff = x - sums / total
    variance = np.cumsum(w[:, None] * (diff * diff), axis=0)[-1]
    axis = int(np.argmax(variance))
    order = np.argsort(x[:, axis], kind="stable")
    xs = x[order]
    ws = w[order]
    cum_w_all = np.cumsum(ws)
    cum_wx_all = np.cumsum(ws[:, None] * xs, axis=0)
    cum_w, cum_wx = cum_w_all[:-1], cum_wx_all[:-1]
    right_w = cum_w_all[-1] - cum_w
    gain = _squared_norms(cum_wx) / cum_w + _squared_norms(cum_wx_all[-1] - cum_wx) / np.maximum(right_w, 1e-300)
    gain[xs[1:, axis] == xs[:-1, axis]] = -np.inf
    if not np.isfinite(gain).any():
        return order, xs.shape[0] // 2
    return order, int(np.argmax(gain)) + 1


#: Up to this many centroids Lloyd rounds use Hamerly's bounds with full scans; above, the pruned grid.
BOUNDED_MAX_K = 1024


def lloyd(
    points: np.ndarray, weights: np.ndarray, centroids: np.ndarray, *, max_iter: int, tol: float = 1e-5
) -> tuple[np.ndarray, float]:
    """Weighted Lloyd iterations from `centroids`; return (centroids float64, weighted squared error).

    (No BLAS calls in the loop: OpenBLAS threads spin when the machine is busy, and these vectors are small.)

    Stops when the weighted error improves by less than `tol` (relative) or after
    max_iter rounds. An empty cluster is moved to the point with the largest error.
    """
    centroids = centroids.astype(np.float64)
    k = centroids.shape[0]
    x = np.ascontiguousarray(points, dtype=np.float64)
    weights = np.ascontiguousarray(weights, dtype=np.float64)
    if k <= BOUNDED_MAX_K:
        assign = fastpath.BoundedAssigner(x).assign
    else:
        assign = lambda c, w: _assign(x, c, w)  # noqa: E731
    labels, dist, sums, totals = assign(centroids, weights)
    previous = np.inf
    for _ in range(max_iter):
        error = float((weights * dist).sum())
        if previous - error <= tol * error:
            break
        previous = error
        occupied = totals > 0
        centroids[occupied] = sums[occupied] / totals[occupied, None]
        empty = np.flatnonzero(~occupied)
        if empty.size:
            worst = np.argsort(-(weights * dist), kind="stable")[: empty.size]
            centroids[empty[: worst.size]] = x[worst]
        labels, dist, sums, totals = assign(centroids, weights)
    return centroids, float((weights * dist).sum())


def _assign(x: np.ndarray, centroids: np.ndarray, weights: np.ndarray):
    """Nearest centroid of every point, the squared distance to it, and each cluster's weighted sums and weight."""
    if fastpath.have_c_extension():
        labels, dist = fastpath.nearest(x, centroids)
    else:
        labels = nearest_centroid(x, centroids)
        diff = x - centroids[labels]
        dist = (diff * diff).sum(axis=1)
    k, dims = centroids.shape
    totals = np.bincount(labels, weights=weights, minlength=k)
    sums = np.stack([np.bincount(labels, weights=weights * x[:, d], minlength=k) for d in range(dims)], 1)
    return labels, dist, sums, totals


def weighted_means(points: np.ndarray, weights: np.ndarray, labels: np.ndarray, fallback: np.ndarray) -> np.ndarray:
    """Weighted mean of the points of each label; `fallback` rows for labels no point has."""
    k, dims = fallback.shape
    totals = np.bincount(labels, weights=weights, minlength=k)
    result = fallback.astype(np.float64).copy()
    occupied = totals > 0
    for d in range(dims):
        sums = np.bincount(labels, weights=weights * points[:, d], minlength=k)
        result[occupied, d] = sums[occupied] / totals[occupied]
    return result
