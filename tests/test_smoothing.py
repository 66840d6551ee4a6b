"""Rate-distortion label choice (--rdo): the C pass against the Python one, its rules, the PSNR budget, the options."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

import kmcodec
from kmcodec import fastpath, smoothing
from kmcodec.autok import choose_k_for_quality, choose_k_for_size
from kmcodec.cli import main
from kmcodec.errors import KMQError
from kmcodec.quantizer import quantize_pixels
from kmcodec.smoothing import allowed_error, smooth_within

from conftest import gnome_background, skimage_image


def squared_errors(pixels: np.ndarray, palette: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Each pixel's squared error against its palette entry, summed over channels (int64)."""
    return ((pixels.astype(np.int64) - palette.astype(np.int64)[labels]) ** 2).sum(axis=-1)


def psnr(pixels: np.ndarray, palette: np.ndarray, labels: np.ndarray) -> float:
    mse = squared_errors(pixels, palette, labels).sum() / pixels.size
    return float(10 * np.log10(255.0**2 / mse))


@pytest.fixture(scope="module")
def flower_k64(flower: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    palette, labels = quantize_pixels(flower, 64)
    return flower, palette, labels


@pytest.mark.parametrize("channels, k, tau", [(3, 12, 0), (3, 12, 40), (3, 300, 200), (4, 9, 60), (1, 5, 30)])
def test_c_and_python_passes_agree(china: np.ndarray, channels: int, k: int, tau: int) -> None:
    """The C pass and the Python fallback give the same labels and error sums, for 1-4 channels, both label
    widths, with and without a cap."""
    crop = china[100:130, 200:245]
    pixels = np.concatenate([crop, crop[..., :1]], axis=2) if channels == 4 else crop[..., :channels]
    palette, labels = quantize_pixels(np.ascontiguousarray(pixels), k)
    assert labels.dtype == (np.uint16 if palette.shape[0] > 256 else np.uint8)
    for cap in (None, tau * 20):
        by_c = fastpath.smooth(pixels, palette, labels, tau, cap, use_c=True)
        by_python = fastpath.smooth(pixels, palette, labels, tau, cap, use_c=False)
        assert np.array_equal(by_c[0], by_python[0]) and by_c[1:] == by_python[1:]
    assert by_c[1] == squared_errors(pixels, palette, labels).sum()


def test_the_c_and_python_weight_tables_are_one_table() -> None:
    if not fastpath.have_c_extension():
        pytest.skip("the C extension is not built")
    assert fastpath._c.MOVE_WEIGHT == fastpath.MOVE_WEIGHT


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_c_and_python_passes_agree_on_any_input(data) -> None:
    """Random sizes (edges included), channels, label widths, palettes with repeated entries, allowances and caps."""
    height, width = data.draw(st.integers(1, 9)), data.draw(st.integers(1, 9))
    channels = data.draw(st.integers(1, 4))
    k = data.draw(st.sampled_from([1, 2, 3, 7, 40, 257, 300]))
    seed = data.draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (height, width, channels), dtype=np.uint8)
    palette = rng.integers(0, 4, (k, channels), dtype=np.uint8) * 85  # few distinct values: ties happen
    labels = rng.integers(0, k, (height, width)).astype(np.uint8 if k <= 256 else np.uint16)
    tau = data.draw(st.sampled_from([0, 1, 7, 100, 5000, 10**6]))
    cap = data.draw(st.sampled_from([None, 0, 50, 10**5]))
    by_c = fastpath.smooth(pixels, palette, labels, tau, cap, use_c=True)
    by_python = fastpath.smooth(pixels, palette, labels, tau, cap, use_c=False)
    assert np.array_equal(by_c[0], by_python[0]) and by_c[1:] == by_python[1:]
    assert by_c[0].dtype == labels.dtype and (by_c[0] < k).all()
    assert cap is None or by_c[2] <= cap


def test_four_byte_pixels_are_read_in_place(flower_k64) -> None:
    """An RGB view of 4-byte pixels (Pillow's RGBX storage) gives the pass what a packed copy gives."""
    pixels, palette, labels = flower_k64
    rgbx = np.zeros(pixels.shape[:2] + (4,), dtype=np.uint8)
    rgbx[..., :3] = pixels
    view = rgbx[..., :3]
    assert view.strides[1:] == (4, 1)
    by_view, by_copy = fastpath.smooth(view, palette, labels, 40), fastpath.smooth(pixels, palette, labels, 40)
    assert np.array_equal(by_view[0], by_copy[0]) and by_view[1:] == by_copy[1:]


def test_a_pass_moves_pixels_only_to_a_neighbours_label_within_its_allowance(flower_k64) -> None:
    """Moves go to a neighbour's label (W, N, NW, NE), never away from the left one's, and add at most
    tau x weight: 3 tau for a pixel that was none of its neighbours, 0.3 tau for one that was its upper one."""
    pixels, palette, labels = flower_k64
    tau = 30
    smoothed, base, added = fastpath.smooth(pixels, palette, labels, tau)
    before, after = squared_errors(pixels, palette, labels), squared_errors(pixels, palette, smoothed)
    moved = smoothed != labels
    assert 0.02 < moved.mean() < 0.9
    assert (after - before)[moved].max() <= 3 * tau and (after[~moved] == before[~moved]).all()
    assert added == (after - before).sum() and base == before.sum()
    padded = np.pad(smoothed.astype(np.int64), 1, constant_values=-1)
    west, north = padded[1:-1, :-2], padded[:-2, 1:-1]
    north_west, north_east = padded[:-2, :-2], padded[:-2, 2:]
    took = [(smoothed == near) & (labels != near) for near in (west, north, north_west, north_east)]
    assert (moved <= (took[0] | took[1] | took[2] | took[3])).all()
    assert not (moved & (labels == west)).any()  # a pixel with its left neighbour's label stays
    was_north = moved & (labels == north) & (labels != west)
    assert was_north.any() and (after - before)[was_north].max() * 10 <= 3 * tau
    # tau 0 moves only exact ties, which add nothing
    assert fastpath.smooth(pixels, palette, labels, 0)[2] == 0


def test_a_capped_pass_stops_taking_moves_at_the_cap(flower_k64) -> None:
    pixels, palette, labels = flower_k64
    free, _, added = fastpath.smooth(pixels, palette, labels, 50)
    cap = added // 3
    for use_c in (True, False):
        capped, _, capped_added = fastpath.smooth(pixels[:120], palette, labels[:120], 50, cap // 4, use_c=use_c)
        assert capped_added <= cap // 4
    capped, _, capped_added = fastpath.smooth(pixels, palette, labels, 50, cap)
    assert cap - 150 < capped_added <= cap
    assert (capped != labels).sum() < (free != labels).sum()


def test_a_label_not_below_k_is_refused(flower_k64) -> None:
    pixels, palette, labels = flower_k64
    bad = labels.copy()
    bad[5, 7] = palette.shape[0]
    for use_c in (True, False):
        with pytest.raises(ValueError, match="not below k"):
            fastpath.smooth(pixels[:10, :10], palette, bad[:10, :10], 5, use_c=use_c)


@pytest.mark.parametrize("budget", [0.02, 0.1, 0.5, 2.0])
def test_the_psnr_budget_holds_and_buys_a_smaller_payload(flower_k64, budget: float) -> None:
    pixels, palette, labels = flower_k64
    smoothed = smooth_within(pixels, palette, labels, budget)
    drop = psnr(pixels, palette, labels) - psnr(pixels, palette, smoothed)
    assert 0.0 <= drop <= budget
    assert drop > 0.8 * budget  # the budget is spent: the capped last pass takes moves until it is
    base = squared_errors(pixels, palette, labels).sum()
    assert squared_errors(pixels, palette, smoothed).sum() - base <= allowed_error(base, budget)
    header = kmcodec.Header(width=pixels.shape[1], height=pixels.shape[0], channels=3, k=palette.shape[0],
                            coding=0, payload_length=0)
    from kmcodec.codings import encode_labels

    sizes = [len(encode_labels(chosen.reshape(-1), header, "context2")[1]) for chosen in (labels, smoothed)]
    assert sizes[1] < sizes[0] * (0.97 if budget >= 0.1 else 0.995)


@pytest.mark.parametrize("start", [1, 2, 40, 5000])
def test_the_search_spends_the_budget_from_any_start(flower_k64, start: int) -> None:
    """Bracketing upwards from a low start or downwards from a high one ends within the budget, and spends it."""
    pixels, palette, labels = flower_k64
    tau, smoothed = smoothing._largest_allowance(pixels, palette, labels, 0.2, start)
    drop = psnr(pixels, palette, labels) - psnr(pixels, palette, smoothed)
    assert 0.16 < drop <= 0.2
    assert fastpath.smooth(pixels, palette, labels, tau)[2] <= allowed_error(
        squared_errors(pixels, palette, labels).sum(), 0.2)


def test_more_budget_smaller_file_on_a_large_photo() -> None:
    """On a 16 MP gnome-backgrounds photo cropped to 1 MP (where the search starts from a sample of the rows),
    files shrink as the budget grows, and each budget is spent but not exceeded."""
    assert 768 * 1366 > smoothing.SAMPLE_ABOVE
    with Image.open(gnome_background("wood-l.webp")) as picture:
        pixels = np.asarray(picture.convert("RGB"))[:768, :1366]
    plain = kmcodec.quantize(pixels, 64)
    sizes, drops = [], []
    for budget in (0.0, 0.1, 0.3):
        image = kmcodec.quantize(pixels, 64, rdo=budget)
        sizes.append(len(kmcodec.encode(image)))
        drops.append(psnr(pixels, plain.palette, plain.labels) - psnr(pixels, image.palette, image.labels))
    assert sizes[0] > sizes[1] > sizes[2]
    assert drops[0] == 0.0 and 0.08 < drops[1] <= 0.1 and 0.24 < drops[2] <= 0.3


def test_label_counts_in_chunks_equal_one_bincount(flower_k64, monkeypatch) -> None:
    """The quantizer and `kmcodec info` count labels in chunks (no int64 copy of a big image's labels)."""
    from kmcodec import image as image_module

    _, palette, labels = flower_k64
    monkeypatch.setattr(image_module, "_COUNT_CHUNK_LABELS", 1000)
    counts = image_module.label_counts(labels, palette.shape[0])
    assert np.array_equal(counts, np.bincount(labels.reshape(-1), minlength=palette.shape[0]))


def test_the_api_file_decodes_to_what_was_smoothed(china: np.ndarray) -> None:
    """encode(rdo=) stores labels whose palette is distinct and used, and decoding gives the smoothed image."""
    plain = kmcodec.decode(kmcodec.encode(china, 32))
    data = kmcodec.encode(china, 32, rdo=0.2)
    smoothed = kmcodec.decode(data)
    assert len(data) < len(kmcodec.encode(china, 32))
    assert np.unique(smoothed.palette, axis=0).shape[0] == smoothed.k
    assert np.bincount(smoothed.labels.reshape(-1), minlength=smoothed.k).min() > 0
    drop = psnr(china, plain.palette, plain.labels) - psnr(china, smoothed.palette, smoothed.labels)
    assert 0.0 < drop <= 0.2
    assert kmcodec.encode(china, 32, rdo=0.2) == data  # deterministic


def test_rgba_images_are_smoothed_in_all_four_channels() -> None:
    astronaut = skimage_image("astronaut")[::2, ::2]
    rgba = np.dstack([astronaut, 255 - astronaut[..., 1]])
    plain = kmcodec.quantize(rgba, 16)
    smoothed = kmcodec.quantize(rgba, 16, rdo=0.3)
    assert smoothed.channels == 4
    drop = psnr(rgba, plain.palette, plain.labels) - psnr(rgba, smoothed.palette, smoothed.labels)
    assert 0.0 < drop <= 0.3


def test_auto_k_for_quality_measures_the_smoothed_labels(flower: np.ndarray) -> None:
    """With rdo, auto-k measures every pixel (one colour no longer means one label) and still meets the target."""
    pixels = flower[::2, ::2]
    choice = choose_k_for_quality(pixels, 30.0, quantize_options={"rdo": 0.3})
    assert psnr(pixels, choice.image.palette, choice.image.labels) >= 30.0
    assert abs(choice.psnr - psnr(pixels, choice.image.palette, choice.image.labels)) < 1e-6


def test_auto_k_for_size_buys_a_larger_k_and_a_better_psnr_with_rdo(flower: np.ndarray) -> None:
    pixels = flower[::2, ::2]
    plain = choose_k_for_size(pixels, 9000)
    smoothed = choose_k_for_size(pixels, 9000, quantize_options={"rdo": 0.2})
    assert len(smoothed.data) <= 9000 and len(plain.data) <= 9000
    assert smoothed.k > plain.k and smoothed.psnr > plain.psnr + 0.2


def test_rdo_with_dither_on_the_command_line_is_a_usage_error_that_writes_nothing(tmp_path: Path, china: np.ndarray,
                                                                                   capsys) -> None:
    """Options that undo each other are a usage error (exit 2, before any work), as the README says."""
    source = tmp_path / "china.png"
    Image.fromarray(china[:40, :60]).save(source)
    out = tmp_path / "out.kmq"
    with pytest.raises(SystemExit) as stopped:
        main(["encode", str(source), str(out), "-k", "8", "--rdo", "0.1", "--dither", "0.5"])
    assert stopped.value.code == 2
    error = capsys.readouterr().err
    assert "kmcodec: error: encode: --rdo and --dither do not go together" in error and "Traceback" not in error
    assert sorted(path.name for path in tmp_path.iterdir()) == ["china.png"]


def test_the_c_pass_refuses_what_it_cannot_do_safely(flower_k64) -> None:
    """A stride it cannot read, an allowance past 2^40 (its products would overflow), short buffers."""
    pixels, palette, labels = flower_k64
    crop, own = np.ascontiguousarray(pixels[:4, :4]), np.ascontiguousarray(labels[:4, :4])
    out = np.empty_like(own)
    c = fastpath._c
    if c is None:
        pytest.skip("the C extension is not built")
    args = (crop, 4, 4, 3, palette, palette.shape[0], own, out, 1)
    assert c.smooth(*args, 10) == fastpath.smooth(crop, palette, own, 10)[1:]
    for bad in [(2**41,), (10, -1, 2), (10, -1, 5)]:
        with pytest.raises(ValueError, match="bad sizes"):
            c.smooth(*args, *bad)
    with pytest.raises(ValueError, match="buffer too small"):
        c.smooth(crop[:2], *args[1:], 10)


def test_an_image_stored_exactly_stays_exact(china: np.ndarray) -> None:
    """With no more colours than k the error is zero, so no budget allows a move: the file stays lossless."""
    few = (china[:60, :80] // 64) * 64  # at most 64 colours
    image = kmcodec.quantize(few, 64, rdo=2.0)
    assert np.array_equal(image.to_array(), few)
    assert image == kmcodec.quantize(few, 64)


@pytest.mark.parametrize("options, message", [(dict(rdo=-0.1), "rdo must be 0 to 10"),
                                              (dict(rdo=10.5), "rdo must be 0 to 10"),
                                              (dict(rdo=0.1, dither=0.5), "rdo and dither do not go together")])
def test_bad_rdo_options_are_kmq_errors(china: np.ndarray, options: dict, message: str) -> None:
    with pytest.raises(KMQError, match=message):
        kmcodec.quantize(china[:20, :20], 8, **options)


def test_the_command_line_option(tmp_path: Path, china: np.ndarray, capsys) -> None:
    source = tmp_path / "china.png"
    Image.fromarray(china).save(source)
    plain, smoothed = tmp_path / "plain.kmq", tmp_path / "rdo.kmq"
    assert main(["encode", str(source), str(plain), "-k", "16", "-q"]) == 0
    assert main(["encode", str(source), str(smoothed), "-k", "16", "--rdo", "0.25", "-q"]) == 0
    assert smoothed.read_bytes() == kmcodec.encode(source, 16, rdo=0.25)
    assert smoothed.stat().st_size < plain.stat().st_size
    with pytest.raises(SystemExit) as exit_info:
        main(["encode", str(source), str(tmp_path / "bad.kmq"), "-k", "16", "--rdo", "12"])
    assert exit_info.value.code == 2
    assert "rdo must be a number of dB, 0 to 10" in capsys.readouterr().err
    assert not (tmp_path / "bad.kmq").exists()
