"""The raw decoder's fast paths (C unpack, pack and palette expansion) against the numpy reference paths."""

from __future__ import annotations

import numpy as np
import pytest

import kmcodec
import kmcodec.bitpack as bitpack
from kmcodec import fastpath
from kmcodec.bitpack import label_dtype


@pytest.mark.parametrize("bits", [1, 2, 3, 5, 6, 7, 9, 12, 15])
def test_pack_and_unpack_match_numpy(bits: int, monkeypatch) -> None:
    rng = np.random.default_rng(bits)
    labels = rng.integers(0, 1 << bits, 100_003).astype(label_dtype(bits))
    fast_packed = bitpack.pack_labels(labels, bits)
    fast_labels = bitpack.unpack_labels(fast_packed, labels.size, bits, 1 << bits)
    monkeypatch.setattr(fastpath, "_c", None)
    assert bitpack.pack_labels(labels, bits) == fast_packed
    assert np.array_equal(bitpack.unpack_labels(fast_packed, labels.size, bits, 1 << bits), fast_labels)
    assert np.array_equal(fast_labels, labels)


def test_unpack_reports_the_first_bad_label() -> None:
    labels = np.array([1, 2, 6, 0, 7, 1], dtype=np.uint8)
    packed = bitpack.pack_labels(labels, 3)
    with pytest.raises(kmcodec.LabelError, match="pixel 2 has label 6"):
        bitpack.unpack_labels(packed, labels.size, 3, k=6)


@pytest.mark.parametrize("k, channels", [(5, 3), (256, 3), (40, 4), (3000, 3), (3000, 4)])
def test_expand_matches_take(k: int, channels: int, china: np.ndarray) -> None:
    rng = np.random.default_rng(k)
    palette = rng.integers(0, 256, (k, channels)).astype(np.uint8)
    labels = rng.integers(0, k, china.shape[:2]).astype(label_dtype((k - 1).bit_length()))
    reference = np.take(palette, labels, axis=0)
    assert np.array_equal(fastpath.expand(palette, labels, use_c=False), reference)
    if fastpath.have_c_extension():
        assert np.array_equal(fastpath.expand(palette, labels, use_c=True), reference)


def test_decoded_photo_equals_its_labels_through_the_palette(china: np.ndarray) -> None:
    image = kmcodec.quantize(china, 64, speed=8)
    decoded = kmcodec.decode(kmcodec.encode(image))
    assert np.array_equal(decoded.to_array(), image.palette[image.labels])


@pytest.mark.parametrize("k", [16, 64, 256])
def test_thread_count_does_not_change_the_result(china: np.ndarray, k: int, monkeypatch) -> None:
    """The C loops split points over threads, and the k-means++ starts run beside the split start (k <= 64)
    on a second thread; any split must give the same palette and labels as one thread."""
    from kmcodec.quantizer import quantize_pixels

    monkeypatch.setattr(fastpath, "MAX_THREADS", 1)
    one = quantize_pixels(china, k, seed=5)
    monkeypatch.setattr(fastpath, "MAX_THREADS", 4)  # more parts than this machine may have cores
    four = quantize_pixels(china, k, seed=5)
    assert np.array_equal(one[0], four[0]) and np.array_equal(one[1], four[1])


def test_nearest_and_bounded_assignment_split_over_threads_agree(flower: np.ndarray, monkeypatch) -> None:
    colours = np.unique(flower.reshape(-1, 3), axis=0).astype(np.float64)
    rng = np.random.default_rng(3)
    centroids = colours[rng.choice(colours.shape[0], 100, replace=False)] + 0.25
    weights = rng.integers(1, 50, colours.shape[0]).astype(np.float64)
    results = []
    for threads in (1, 3):
        monkeypatch.setattr(fastpath, "MAX_THREADS", threads)
        labels, dist = fastpath.nearest(colours, centroids)
        assigner = fastpath.BoundedAssigner(colours)
        first = [np.copy(part) for part in assigner.assign(centroids, weights)]  # the assigner reuses its arrays
        second = assigner.assign(centroids * 0.99 + 1.0, weights)  # bounds carried over, partial rescans
        results.append([labels, dist, *first, *second])
    for mine, theirs in zip(*results):
        assert np.array_equal(mine, theirs)
    assert np.array_equal(results[0][0], results[0][2])  # nearest and the bounded scan agree


@pytest.mark.parametrize("k", [1, 7, 64, 300])
def test_split_start_c_matches_numpy(china: np.ndarray, k: int, monkeypatch) -> None:
    from kmcodec.kmeans import split_start
    from kmcodec.quantizer import colour_histogram, reduce_histogram

    if not fastpath.have_c_extension():
        pytest.skip("C extension not built: only one path to compare")
    histogram = colour_histogram(np.ascontiguousarray(china[::2, ::2]))
    points, weights = reduce_histogram(
        histogram.colours.astype(np.float32), histogram.colours, histogram.counts, 4096
    )  # merged cells: fractional coordinates
    fast = split_start(points, weights, k)
    monkeypatch.setattr(fastpath, "_c", None)
    slow = split_start(points, weights, k)
    assert fast.shape == (k, 3) and np.array_equal(fast, slow)


@pytest.mark.parametrize("k", [2, 16, 64, 300])
@pytest.mark.parametrize("channels", [3, 4])
def test_kmeans_plus_plus_c_matches_numpy(china: np.ndarray, k: int, channels: int, monkeypatch) -> None:
    """The C k-means++ (all trials of a step in one pass, a loop for colours and one for any dimension) picks
    the same centres as the numpy code, on merged cells with fractional coordinates and uneven weights."""
    from kmcodec.kmeans import kmeans_plus_plus
    from kmcodec.quantizer import colour_histogram, reduce_histogram

    if not fastpath.have_c_extension():
        pytest.skip("C extension not built: only one path to compare")
    pixels = np.ascontiguousarray(china[::2, ::2])
    if channels == 4:
        alpha = (np.arange(pixels.shape[1], dtype=np.uint8) * 5)[None, :, None].repeat(pixels.shape[0], 0)
        pixels = np.concatenate([pixels, alpha], axis=2)
    histogram = colour_histogram(pixels)
    points, weights = reduce_histogram(
        histogram.colours.astype(np.float32), histogram.colours, histogram.counts, 4096
    )
    fast = kmeans_plus_plus(points, weights, k, seed=5)
    monkeypatch.setattr(fastpath, "_c", None)
    slow = kmeans_plus_plus(points, weights, k, seed=5)
    assert fast.shape == (k, channels) and np.array_equal(fast, slow)
    assert np.unique(fast, axis=0).shape[0] == k  # k distinct points of the input
    assert all((points == centre).all(axis=1).any() for centre in fast)


@pytest.mark.skipif(not fastpath.have_c_extension(), reason="the C extension is not built")
@pytest.mark.parametrize("size", [(0, 0), (1, 1), (523, 522), (1100, 1000)])
def test_histogram_matches_numpy_unique_by_sort_and_by_table(china: np.ndarray, size: tuple[int, int]) -> None:
    """Up to 2^20 pixels the C histogram sorts the keys, above it counts in a 2^24 table: both must give
    np.unique's distinct colours and counts."""
    rng = np.random.default_rng(size[0])
    height, width = size
    tiled = np.resize(china, (height, width, 3)).astype(np.int16) + rng.integers(-2, 3, (height, width, 3))
    pixels = np.clip(tiled, 0, 255).astype(np.uint8).reshape(-1, 3)
    result = fastpath.histogram_rgb(pixels)
    assert result is not None
    keys, counts = result
    expected_keys, expected_counts = np.unique(
        (pixels[:, 0].astype(np.uint32) << 16) | (pixels[:, 1].astype(np.uint32) << 8) | pixels[:, 2],
        return_counts=True)
    assert np.array_equal(keys, expected_keys) and np.array_equal(counts, expected_counts)


def _rgbx(pixels: np.ndarray, pad: int = 0) -> np.ndarray:
    """The (H, W, 3) RGB view of 4-byte pixels holding `pixels`, as Pillow stores RGB (its fourth byte `pad`)."""
    padded = np.full((*pixels.shape[:2], 4), pad, dtype=np.uint8)
    padded[:, :, :3] = pixels
    return padded[:, :, :3]


@pytest.mark.skipif(not fastpath.have_c_extension(), reason="the C extension is not built")
@pytest.mark.parametrize("size", [(1, 2), (523, 522), (1100, 1000)])
def test_histogram_and_map_read_4_byte_pixels_in_place(china: np.ndarray, size: tuple[int, int]) -> None:
    """An RGB view of RGBX rows reaches the C loops without a copy (stride 4) and counts and maps as packed pixels."""
    height, width = size
    packed = np.ascontiguousarray(np.resize(china, (height, width, 3)))
    view = _rgbx(packed, pad=0xA5)  # a pad byte that would change every key if it were read
    data, stride = fastpath.rgb_bytes(view.reshape(-1, 3))
    assert stride == 4 and np.shares_memory(data, view)
    assert fastpath.rgb_bytes(packed.reshape(-1, 3))[1] == 3
    keys, counts = fastpath.histogram_rgb(view.reshape(-1, 3))
    expected_keys, expected_counts = fastpath.histogram_rgb(packed.reshape(-1, 3))
    assert np.array_equal(keys, expected_keys) and np.array_equal(counts, expected_counts)
    key_labels = np.arange(keys.size) % 251
    for dtype in (np.uint8, np.uint16):
        mapped = fastpath.map_rgb(view.reshape(-1, 3), keys, key_labels, np.dtype(dtype))
        assert np.array_equal(mapped, fastpath.map_rgb(packed.reshape(-1, 3), keys, key_labels, np.dtype(dtype)))


def test_quantizing_4_byte_pixels_gives_the_packed_pixels_result(china: np.ndarray) -> None:
    from kmcodec.quantizer import quantize_pixels

    view = _rgbx(china)
    for k in (16, 64):
        palette, labels = quantize_pixels(view, k)
        expected_palette, expected_labels = quantize_pixels(china, k)
        assert np.array_equal(palette, expected_palette) and np.array_equal(labels, expected_labels)


@pytest.mark.skipif(not fastpath.have_c_extension(), reason="the C extension is not built")
def test_c_loops_refuse_other_strides_and_short_buffers() -> None:
    from kmcodec import _fastpath

    pixels = np.zeros(4 * 10, dtype=np.uint8)
    with pytest.raises(ValueError):
        _fastpath.histogram(pixels, 10, 5)
    with pytest.raises(ValueError):
        _fastpath.histogram(pixels[: 4 * 9 + 2], 10, 4)  # one byte short of the tenth pixel
    assert _fastpath.histogram(pixels[: 4 * 9 + 3], 10, 4)[1] == np.array([10], dtype=np.int64).tobytes()
    out = np.zeros(10, dtype=np.uint8)
    keys, labels = np.zeros(1, dtype=np.uint32), np.zeros(1, dtype=np.uint16)
    with pytest.raises(ValueError):
        _fastpath.map_rgb(pixels[: 4 * 9 + 2], 10, keys, 1, labels, out, 1, 1, 4)


@pytest.mark.skipif(not fastpath.have_c_extension(), reason="the C extension is not built")
def test_arrow_pixels_share_pillows_rgb_and_rgba_memory(china: np.ndarray) -> None:
    from PIL import Image

    rgba = np.dstack([china, (np.arange(china.size // 3) % 256).reshape(china.shape[:2]).astype(np.uint8)])
    for array in (china, rgba):
        picture = Image.fromarray(array)
        shared = fastpath.arrow_pixels(picture)
        if shared is None:
            pytest.skip("this Pillow cannot export images through Arrow (Pillow < 11.2)")
        assert np.array_equal(shared, array) and not shared.flags.writeable
        assert shared.strides == (4 * array.shape[1], 4, 1)
        picture.close()
        del picture
        assert np.array_equal(shared, array)  # the export holds Pillow's pixels, not the image object
    assert fastpath.arrow_pixels(Image.fromarray(china[:, :, 0])) is None  # one byte a pixel: not these layouts


@pytest.mark.skipif(not fastpath.have_c_extension(), reason="the C extension is not built")
def test_arrow_pixels_give_none_when_pillow_cannot_share_and_refuse_foreign_capsules(china: np.ndarray) -> None:
    from PIL import Image

    from kmcodec import _fastpath

    big = Image.new("RGB", (2100, 2100))  # 17.6 MB of RGBX: over Pillow's 16 MB block, so rows in two blocks
    if not hasattr(big, "__arrow_c_array__") or Image.core.get_use_block_allocator() == 0:
        assert fastpath.arrow_pixels(big) is None  # Pillow < 11.2 exports nothing; here rows are in two blocks
    grey = Image.fromarray(china[:, :, 0])
    if hasattr(grey, "__arrow_c_array__"):
        with pytest.raises(ValueError, match="4 uint8"):
            _fastpath.arrow_pixels(*grey.__arrow_c_array__())
    with pytest.raises(ValueError):  # not capsules at all
        _fastpath.arrow_pixels(object(), object())


def test_a_failing_k_means_plus_plus_start_fails_the_quantization(china: np.ndarray, monkeypatch) -> None:
    """The k-means++ starts run on another thread: their error must reach the caller, not be lost there."""
    from kmcodec import quantizer

    def broken(*args, **kwargs):
        raise MemoryError("no room for the k-means++ start")

    monkeypatch.setattr(quantizer, "kmeans_plus_plus", broken)
    with pytest.raises(MemoryError, match="k-means\\+\\+"):
        quantizer.quantize_pixels(china, 16)
