"""The fast quantizer on real photos: determinism, valid palettes, exact labels, k-means quality, options."""

from __future__ import annotations

import numpy as np
import pytest

import kmcodec
from kmcodec import fastpath
from kmcodec.colorspace import mean_delta_e_ok
from kmcodec.quantizer import QuantizeOptionError, SpeedPlan, quantize_pixels

from conftest import skimage_image


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0**2 / mse))


def assert_valid(pixels: np.ndarray, palette: np.ndarray, labels: np.ndarray, k: int) -> None:
    """Palette of at most k distinct entries, every one used, labels in range."""
    assert palette.dtype == np.uint8 and palette.shape[1] == pixels.shape[2]
    assert 1 <= palette.shape[0] <= k
    assert labels.shape == pixels.shape[:2]
    assert int(labels.max()) < palette.shape[0]
    assert np.all(np.bincount(labels.reshape(-1), minlength=palette.shape[0]) > 0)
    assert np.unique(palette, axis=0).shape[0] == palette.shape[0]


def assert_exact_nearest(pixels: np.ndarray, palette: np.ndarray, labels: np.ndarray) -> None:
    """Every distinct colour's label is a nearest palette entry (brute force, integer arithmetic)."""
    flat = pixels.reshape(-1, pixels.shape[2]).astype(np.int64)
    colours, first = np.unique(flat, axis=0, return_index=True)
    chosen = labels.reshape(-1)[first]
    dist = ((colours[:, None, :] - palette[None, :, :].astype(np.int64)) ** 2).sum(axis=2)
    assert np.array_equal(dist[np.arange(colours.shape[0]), chosen], dist.min(axis=1))


@pytest.fixture(scope="session")
def astronaut() -> np.ndarray:
    return skimage_image("astronaut")


@pytest.mark.parametrize("k", [8, 200])
def test_palette_valid_and_labels_exact_nearest(flower: np.ndarray, k: int) -> None:
    palette, labels = quantize_pixels(flower, k)
    assert_valid(flower, palette, labels, k)
    assert palette.shape[0] == k
    assert_exact_nearest(flower, palette, labels)


def test_same_input_same_bytes(china: np.ndarray) -> None:
    half = np.ascontiguousarray(china[::2, ::2])
    first = kmcodec.encode(half, 16, seed=3)
    assert kmcodec.encode(half.copy(), 16, seed=3) == first


@pytest.mark.parametrize("name, k", [("china", 16), ("flower", 64), ("astronaut", 16)])
def test_quality_within_a_tenth_of_a_db_of_sklearn(name: str, k: int, china, flower, astronaut) -> None:
    pixels = {"china": china, "flower": flower, "astronaut": astronaut}[name]
    palette, labels = quantize_pixels(pixels, k)
    ref_palette, ref_labels = quantize_pixels(pixels, k, engine="sklearn")
    ours, reference = psnr(pixels, palette[labels]), psnr(pixels, ref_palette[ref_labels])
    assert ours >= reference - 0.1, (ours, reference)


def test_rgba_is_quantized_in_four_channels(astronaut: np.ndarray) -> None:
    alpha = np.tile(np.linspace(0, 255, astronaut.shape[1]).astype(np.uint8), (astronaut.shape[0], 1))
    rgba = np.dstack([astronaut, alpha])
    palette, labels = quantize_pixels(rgba, 32)
    assert palette.shape == (32, 4)
    assert_valid(rgba, palette, labels, 32)
    assert_exact_nearest(rgba[::4, ::4], palette, labels[::4, ::4])


def test_few_colours_give_exactly_those_colours(china: np.ndarray) -> None:
    colours = np.unique(china.reshape(-1, 3)[:: 9973], axis=0)[:5]
    image = colours[np.arange(64 * 48).reshape(64, 48) % colours.shape[0]]
    palette, labels = quantize_pixels(image, 8)
    assert sorted(map(tuple, palette.tolist())) == sorted(map(tuple, colours.tolist()))
    assert np.array_equal(palette[labels], image)


def test_k1_and_huge_k_on_a_small_photo(china: np.ndarray) -> None:
    palette, labels = quantize_pixels(china, 1)
    assert palette.shape[0] == 1 and not labels.any()
    assert np.abs(palette[0].astype(float) - china.reshape(-1, 3).mean(axis=0)).max() <= 0.5 + 1e-9
    palette, labels = quantize_pixels(china, 65536)
    assert_valid(china, palette, labels, 65536)
    assert palette.shape[0] > 4096
    assert psnr(china, palette[labels]) > 45


def test_oklab_lowers_perceptual_error(china: np.ndarray) -> None:
    half = np.ascontiguousarray(china[::2, ::2])
    rgb_palette, rgb_labels = quantize_pixels(half, 16)
    ok_palette, ok_labels = quantize_pixels(half, 16, space="oklab")
    assert mean_delta_e_ok(half, ok_palette[ok_labels]) < mean_delta_e_ok(half, rgb_palette[rgb_labels])


def test_dither_changes_labels_and_keeps_them_valid(china: np.ndarray) -> None:
    half = np.ascontiguousarray(china[::2, ::2])
    palette, labels = quantize_pixels(half, 8)
    d_palette, d_labels = quantize_pixels(half, 8, dither=1.0)
    assert_valid(half, d_palette, d_labels, 8)
    assert not np.array_equal(d_palette[d_labels], palette[labels])
    # Error diffusion trades pixel error for area error: 8x8 block averages get closer to the original's.
    def pooled(a: np.ndarray) -> np.ndarray:
        h, w = a.shape[0] // 8 * 8, a.shape[1] // 8 * 8
        return a[:h, :w].astype(np.float64).reshape(h // 8, 8, w // 8, 8, 3).mean(axis=(1, 3))

    dithered_error = np.abs(pooled(d_palette[d_labels]) - pooled(half)).mean()
    assert dithered_error < 0.95 * np.abs(pooled(palette[labels]) - pooled(half)).mean()
    assert np.array_equal(quantize_pixels(half, 8, dither=0.0)[1], labels)


def test_dither_c_and_numpy_agree() -> None:
    rng = np.random.default_rng(1)
    pixels = rng.integers(0, 256, (12, 17, 3)).astype(np.uint8)
    palette = rng.integers(0, 256, (6, 3)).astype(np.uint8)
    if not fastpath.have_c_extension():
        pytest.skip("C extension not built")
    assert np.array_equal(fastpath.dither(pixels, palette, 0.7), fastpath.dither(pixels, palette, 0.7, use_c=False))


def test_speed_knob_trades_effort_for_error(china: np.ndarray) -> None:
    plans = [SpeedPlan.for_speed(s) for s in range(1, 11)]
    assert all(a.max_points >= b.max_points and a.max_iter >= b.max_iter for a, b in zip(plans, plans[1:]))
    half = np.ascontiguousarray(china[::2, ::2])
    best = quantize_pixels(half, 32, speed=2)
    fastest = quantize_pixels(half, 32, speed=10)
    assert_valid(half, *fastest, 32)
    assert psnr(half, best[0][best[1]]) > psnr(half, fastest[0][fastest[1]])


def test_numpy_fallback_gives_the_same_palette(china: np.ndarray, monkeypatch) -> None:
    if not fastpath.have_c_extension():
        pytest.skip("C extension not built: only one path to compare")
    small = np.ascontiguousarray(china[::4, ::4])
    with_c = quantize_pixels(small, 8, speed=6)
    monkeypatch.setattr(fastpath, "_c", None)
    without_c = quantize_pixels(small, 8, speed=6)
    assert np.array_equal(with_c[0], without_c[0]) and np.array_equal(with_c[1], without_c[1])


def test_nearest_c_matches_brute_force() -> None:
    rng = np.random.default_rng(7)
    points = rng.integers(0, 256, (5000, 3)).astype(np.float64)
    centroids = np.vstack([rng.uniform(0, 255, (300, 3)), points[:20]])  # exact hits and ties included
    centroids = np.vstack([centroids, centroids[:10]])
    labels, dist = fastpath.nearest(points, centroids)
    ref_labels, ref_dist = fastpath.nearest(points, centroids, use_c=False)
    assert np.array_equal(labels, ref_labels) and np.array_equal(dist, ref_dist)


def _neighbour_cases():
    """Centroid sets the C searches from a likely centroid (its listed neighbours) meet: spread, bunched (more
    than a list holds within reach), duplicated (exact ties) and points far outside them (the full search)."""
    rng = np.random.default_rng(11)
    spread = rng.uniform(0, 255, (256, 3))
    bunched = np.vstack([rng.normal(128, 2.0, (200, 3)), rng.uniform(0, 255, (56, 3))])
    duplicated = np.vstack([np.round(rng.uniform(0, 255, (40, 3))), np.round(rng.uniform(0, 255, (40, 3)))])
    duplicated = np.vstack([duplicated, duplicated[:20]])
    rgba = rng.uniform(0, 255, (64, 4))
    return {"spread": spread, "bunched": bunched, "duplicated": duplicated, "rgba": rgba}


@pytest.mark.parametrize("case", ["spread", "bunched", "duplicated", "rgba"])
def test_nearest_from_a_likely_centroid_matches_brute_force(case: str) -> None:
    """fastpath's searches from a likely answer (the previous point's, a hint, or Hamerly's last label) stop
    by the triangle inequality; their answers, ties included, must be the brute-force ones."""
    centroids = _neighbour_cases()[case]
    k, dims = centroids.shape
    rng = np.random.default_rng(k)
    near = centroids[rng.integers(0, k, 6000)] + rng.normal(0, 3, (6000, dims))
    on = np.repeat(centroids, 3, axis=0)  # exactly on a centroid (and on its duplicates)
    far = rng.uniform(-600, 900, (2000, dims))  # outside every list's reach: the full search
    points = np.vstack([near, on, far, np.round(near)])
    ref_labels, ref_dist = fastpath.nearest(points, centroids, use_c=False)
    for hint in (None, rng.integers(0, k, len(points)), ref_labels[::-1].copy()):
        labels, dist = fastpath.nearest(points, centroids, hint=hint)
        assert np.array_equal(labels, ref_labels) and np.array_equal(dist, ref_dist)
    weights = rng.integers(1, 9, len(points)).astype(np.float64)
    assigner = fastpath.BoundedAssigner(points)
    moving = centroids.copy()
    for _ in range(4):  # first round from the previous point's label, then rescans from each point's last one
        labels, dist, sums, totals = assigner.assign(moving, weights)
        ref_labels, ref_dist = fastpath.nearest(points, moving, use_c=False)
        assert np.array_equal(labels, ref_labels) and np.array_equal(dist, ref_dist)
        assert np.array_equal(totals, np.bincount(ref_labels, weights=weights, minlength=k))
        moving = moving + rng.normal(0, 4, moving.shape)


@pytest.mark.parametrize("bad", [dict(k=0), dict(k=65537), dict(engine="x"), dict(space="hsv"), dict(speed=0),
                                 dict(speed=11), dict(dither=1.5)])
def test_bad_options_are_kmq_errors(china: np.ndarray, bad: dict) -> None:
    options = dict(k=8) | bad
    k = options.pop("k")
    with pytest.raises(QuantizeOptionError):
        quantize_pixels(china[:8, :8], k, **options)
    assert issubclass(QuantizeOptionError, kmcodec.KMQError)



@pytest.mark.parametrize("channels", [3, 4])
def test_column_wise_distances_equal_row_sums(china: np.ndarray, channels: int) -> None:
    """k-means++ adds the squared differences axis by axis (fast); the floats must equal numpy's row sums,
    so that its picks, and a seed's file, are what the plain formulation gives."""
    from kmcodec.kmeans import squared_distances_to

    rng = np.random.default_rng(channels)
    colours = np.unique(china.reshape(-1, 3)[::7], axis=0).astype(np.float64)
    if channels == 4:
        colours = np.concatenate([colours, rng.integers(0, 256, (len(colours), 1))], axis=1)
    oklab_like = rng.random((5000, channels)) * np.array([1.0, 0.4, 0.4, 1.0][:channels]) - 0.2
    for points in (colours, oklab_like):
        axes = np.ascontiguousarray(points.T)
        for index in rng.integers(0, len(points), 20).tolist():
            assert np.array_equal(squared_distances_to(axes, index), ((points - points[index]) ** 2).sum(axis=1))
