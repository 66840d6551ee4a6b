"""The palette order the quantizer writes: the label tree's subtrees are regions of colour space."""

from __future__ import annotations

import numpy as np
import pytest

import kmcodec
from kmcodec.image import KMQImage
from kmcodec.palette_order import SPLIT_DEPTH, tree_order
from kmcodec.quantizer import quantize_pixels

from conftest import skimage_image


def separated(palette: np.ndarray, low: np.ndarray, high: np.ndarray) -> bool:
    """Whether some colour axis has every `low` entry at or below every `high` entry."""
    return any(palette[low, axis].max() <= palette[high, axis].min() for axis in range(palette.shape[1]))


def check_tree(palette: np.ndarray, low: int, high: int, level: int, depth: int = SPLIT_DEPTH) -> None:
    """Every node of the label tree above `depth` cuts its entries across one axis, 2^(level-1) on the low side."""
    if high - low <= 1 or depth == 0:
        return
    middle = min(high, low + (1 << (level - 1)))
    if middle < high:
        assert separated(palette, np.arange(low, middle), np.arange(middle, high)), (low, middle, high)
    check_tree(palette, low, middle, level - 1, depth - 1)
    if middle < high:
        check_tree(palette, middle, high, level - 1, depth - 1)


@pytest.mark.parametrize("k", [1, 2, 3, 5, 16, 17, 64, 100, 256, 300, 1000])
def test_tree_order_is_a_permutation_that_cuts_every_node_across_an_axis(k: int) -> None:
    rng = np.random.default_rng(k)
    palette = rng.integers(0, 256, (k, 3)).astype(np.uint8)
    usage = rng.integers(0, 1000, k)
    order = tree_order(palette, usage)
    assert sorted(order.tolist()) == list(range(k))
    assert np.array_equal(order, tree_order(palette, usage))  # deterministic
    check_tree(palette[order].astype(np.int64), 0, k, max(1, (k - 1).bit_length()))


def test_two_colour_families_take_the_two_halves_of_the_label_range() -> None:
    """Eight dark and eight light greys, interleaved: the first label bit tells them apart."""
    greys = np.array([10, 240, 20, 230, 30, 220, 40, 210, 50, 200, 60, 190, 70, 180, 80, 170], dtype=np.uint8)
    palette = np.repeat(greys[:, None], 3, axis=1)
    ordered = palette[tree_order(palette, np.ones(16))][:, 0]
    assert set(ordered[:8]) == {10, 20, 30, 40, 50, 60, 70, 80}
    assert set(ordered[8:]) == {170, 180, 190, 200, 210, 220, 230, 240}


@pytest.mark.parametrize("dither", [0.0, 0.8])
def test_the_quantizer_writes_its_palette_in_tree_order(china: np.ndarray, dither: float) -> None:
    palette, labels = quantize_pixels(china, 64, dither=dither)
    check_tree(palette.astype(np.int64), 0, palette.shape[0], 6)
    assert np.all(np.bincount(labels.reshape(-1), minlength=palette.shape[0]) > 0)


@pytest.mark.parametrize("name", ["china", "coffee"])
def test_tree_order_makes_k_256_photos_smaller_than_order_by_use(name: str, china: np.ndarray) -> None:
    """What the order is for: coding 4 (auto at k = 256) writes china 1.4 %, coffee 1.9 % smaller."""
    pixels = china if name == "china" else skimage_image("coffee")
    palette, labels = quantize_pixels(pixels, 256)
    by_use = np.argsort(-np.bincount(labels.reshape(-1), minlength=palette.shape[0]), kind="stable")
    renumber = np.empty_like(by_use)
    renumber[by_use] = np.arange(by_use.size)
    tree_bytes = len(kmcodec.encode(KMQImage(palette, labels), coding="context"))
    use_bytes = len(kmcodec.encode(KMQImage(palette[by_use], renumber[labels].astype(labels.dtype)), coding="context"))
    assert tree_bytes < 0.995 * use_bytes, (tree_bytes, use_bytes)
