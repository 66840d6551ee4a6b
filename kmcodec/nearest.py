"""Exact nearest-centroid search for many points in a small box (colour space), pruned by a uniform grid.

Brute force costs points x centroids distance evaluations. Here points are binned
into grid cells; for each occupied cell only the centroids that can possibly be
nearest to some point of the cell (lower-bound distance to the cell <= the
smallest upper-bound distance) are compared, typically a handful out of
hundreds. The answer is the same as brute force: exact squared Euclidean
distance, and on ties the lowest centroid index. This is the numpy path; when
the C extension is built, `kmcodec.fastpath.nearest` does the same search faster
(sorted projection) and gives the same labels.
"""

from __future__ import annotations

import numpy as np

from . import fastpath

#: Points x centroids below which brute force is cheaper than building the grid.
BRUTE_FORCE_WORK = 1 << 21
#: Elements of a temporary (points, candidates) distance block.
BLOCK_ELEMENTS = 1 << 21
#: Coordinates are expected in [0, COORD_RANGE); values outside are clamped into the border cells.
COORD_RANGE = 256.0


def nearest_centroid(points: np.ndarray, centroids: np.ndarray, *, cell: float | None = None) -> np.ndarray:
    """Index (int32) of the nearest centroid for each point, exactly (lowest index on ties).

    points: (m, d) uint8 or float32; centroids: (k, d). Coordinates are meant to
    lie in [0, 256) (RGB(A) values or scaled OKLab); anything outside is still
    correct, the pruning just gets weaker.
    """
    pts = np.ascontiguousarray(points)
    cen = np.ascontiguousarray(centroids, dtype=np.float64)
    m, dims = pts.shape
    k = cen.shape[0]
    if k == 1 or m == 0:
        return np.zeros(m, dtype=np.int32)
    if fastpath.have_c_extension() or m * k <= BRUTE_FORCE_WORK or dims > 4:
        return fastpath.nearest(pts, cen)[0]
    out = np.zeros(m, dtype=np.int32)
    if cell is None:
        cell = _cell_size(m, k, dims)
    _grid_search(pts, cen, float(cell), out)
    return out


def _cell_size(m: int, k: int, dims: int) -> float:
    """A grid cell about as wide as the typical centroid spacing (a power of two from 2 to 32)."""
    spacing = COORD_RANGE / (k ** (1.0 / dims)) / 2.0
    return float(min(32, max(2, 1 << int(np.log2(max(spacing, 1.0))))))


def _cell_ids(points: np.ndarray, cell: float, side: int) -> np.ndarray:
    """Row-major grid cell number of each point (coordinates clamped into the grid)."""
    m, dims = points.shape
    cell_id = np.zeros(m, dtype=np.int32)
    for d in range(dims):
        coord = points[:, d]
        if coord.dtype == np.uint8 and cell <= 128:
            index = (coord >> np.uint8(int(cell).bit_length() - 1)).astype(np.int32)
        else:
            index = np.clip(np.floor_divide(coord.astype(np.float64), np.float64(cell)), 0, side - 1).astype(np.int32)
        cell_id *= side
        cell_id += index
    return cell_id


def _cell_boxes(cells: np.ndarray, cell: float, side: int, dims: int, lo: np.ndarray, hi: np.ndarray):
    """(lower, upper) corners of grid cells; border cells stretch to the points' bounding box."""
    lower = np.empty((cells.size, dims), dtype=np.float64)
    rest = cells.copy()
    for d in reversed(range(dims)):
        lower[:, d] = (rest % side) * cell
        rest //= side
    upper = lower + np.float64(cell)
    lower = np.where(lower <= 0, np.minimum(lower, lo[None, :]), lower)
    upper = np.where(upper >= side * cell, np.maximum(upper, hi[None, :]), upper)
    return lower, upper


def _grid_search(points: np.ndarray, centroids: np.ndarray, cell: float, out: np.ndarray) -> None:
    """Two-level pruning: coarse cells keep their possible centroids, fine cells choose among those."""
    m, dims = points.shape
    k = centroids.shape[0]
    lo = points.min(axis=0).astype(np.float64)
    hi = points.max(axis=0).astype(np.float64) + np.float64(1e-3)
    coarse = min(64.0, cell * 4)
    coarse_side = int(np.ceil(COORD_RANGE / coarse))
    side = int(np.ceil(COORD_RANGE / cell))
    ratio = int(coarse // cell)
    # Coarse level: candidates among all k centroids.
    coarse_id = _cell_ids(points, coarse, coarse_side)
    coarse_cells = np.flatnonzero(np.bincount(coarse_id, minlength=coarse_side**dims)).astype(np.int32)
    c_lower, c_upper = _cell_boxes(coarse_cells, coarse, coarse_side, dims, lo, hi)
    all_idx = np.broadcast_to(np.arange(k, dtype=np.int32), (coarse_cells.size, k))
    coarse_cand, coarse_count = _prune(c_lower, c_upper, centroids, all_idx, np.full(coarse_cells.size, k))
    coarse_row = np.full(coarse_side**dims, -1, dtype=np.int32)
    coarse_row[coarse_cells] = np.arange(coarse_cells.size, dtype=np.int32)
    # Fine level: candidates among the parent cell's candidates.
    cell_id = _cell_ids(points, cell, side)
    fine_cells = np.flatnonzero(np.bincount(cell_id, minlength=side**dims)).astype(np.int32)
    f_lower, f_upper = _cell_boxes(fine_cells, cell, side, dims, lo, hi)
    parent = np.zeros(fine_cells.size, dtype=np.int32)
    rest = fine_cells.copy()
    scale = 1
    for d in reversed(range(dims)):
        parent += ((rest % side) // ratio).astype(np.int32) * scale
        rest //= side
        scale *= coarse_side
    parent_rows = coarse_row[parent]
    cand, count = _prune(f_lower, f_upper, centroids, coarse_cand[parent_rows], coarse_count[parent_rows])
    row_of_cell = np.full(side**dims, -1, dtype=np.int32)
    row_of_cell[fine_cells] = np.arange(fine_cells.size, dtype=np.int32)
    point_rows = row_of_cell[cell_id]
    del cell_id, coarse_id
    # Buckets of cells by candidate count (a power of two), so the padding stays small.
    width = np.minimum(1 << np.ceil(np.log2(np.maximum(count, 1))).astype(np.int64), cand.shape[1])
    point_width = width[point_rows]
    for bucket_width in np.unique(width).tolist():
        cells_here = np.flatnonzero(width == bucket_width)
        order = np.ascontiguousarray(cand[cells_here, :bucket_width])
        bucket_row = np.full(fine_cells.size, -1, dtype=np.int32)
        bucket_row[cells_here] = np.arange(cells_here.size, dtype=np.int32)
        members = np.flatnonzero(point_width == bucket_width)
        if bucket_width == 1:
            out[members] = order[bucket_row[point_rows[members]], 0]
            continue
        step = max(1, BLOCK_ELEMENTS // bucket_width)
        for start in range(0, members.size, step):
            rows = members[start : start + step]
            cand_idx = order[bucket_row[point_rows[rows]]]
            block = points[rows].astype(np.float64)
            dist = np.zeros(cand_idx.shape, dtype=np.float64)
            for d in range(dims):
                diff = block[:, d, None] - centroids[:, d][cand_idx]
                diff *= diff
                dist += diff
            best = np.argmin(dist, axis=1)
            out[rows] = np.take_along_axis(cand_idx, best[:, None], axis=1)[:, 0]


def _prune(lower: np.ndarray, upper: np.ndarray, centroids: np.ndarray, cand: np.ndarray, count: np.ndarray):
    """Keep, per cell, the candidates that can be nearest to some point of the cell [lower, upper].

    cand: (cells, w) ascending centroid indices, padded after `count` with repeats.
    Returns the kept candidates the same way (ascending, padded with the first
    kept one) and their counts.
    """
    cells, dims = lower.shape
    width = cand.shape[1]
    keep = np.empty((cells, width), dtype=bool)
    step = max(1, BLOCK_ELEMENTS // width)
    valid_cols = np.arange(width)[None, :]
    for start in range(0, cells, step):
        lo = lower[start : start + step]
        hi = upper[start : start + step]
        idx = cand[start : start + step]
        min_d = np.zeros(idx.shape, dtype=np.float64)
        max_d = np.zeros(idx.shape, dtype=np.float64)
        for d in range(dims):
            c = centroids[:, d][idx]
            below = lo[:, d, None] - c
            above = c - hi[:, d, None]
            gap = np.maximum(np.maximum(below, above), 0)
            min_d += gap * gap
            far = np.maximum(np.abs(below), np.abs(above))
            max_d += far * far
        threshold = max_d.min(axis=1, keepdims=True)
        # A tiny slack keeps float rounding from dropping the true nearest centroid.
        ok = min_d <= threshold * np.float64(1 + 1e-5) + np.float64(1e-3)
        ok &= valid_cols < count[start : start + step, None]
        keep[start : start + step] = ok
    new_count = keep.sum(axis=1)
    new_width = int(new_count.max(initial=1))
    order = np.argsort(~keep, axis=1, kind="stable")[:, :new_width]
    kept = np.take_along_axis(cand, order, axis=1).astype(np.int32)
    pad = np.arange(new_width)[None, :] >= new_count[:, None]
    kept[pad] = np.broadcast_to(kept[:, :1], kept.shape)[pad]
    return kept, new_count
