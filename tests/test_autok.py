"""Auto-k: the chosen k meets its target and is the smallest (or largest) that does, checked independently."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from kmcodec import api
from kmcodec.autok import choose_k_for_quality, choose_k_for_size
from kmcodec.cli import main
from kmcodec.codings import CODINGS_BY_NAME
from kmcodec.errors import TargetError

from conftest import sklearn_image, skimage_image


def _small(pixels: np.ndarray, size=(64, 48)) -> np.ndarray:
    return np.asarray(Image.fromarray(pixels).resize(size, Image.LANCZOS))


def _psnr(original: np.ndarray, k: int) -> float:
    """PSNR of the image quantized to k colours, measured per pixel, through the public API."""
    decoded = api.decode(api.encode(original, k)).to_array().astype(np.float64)
    mse = float(np.mean((decoded - original) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def test_quality_target_is_met_by_the_smallest_k():
    name, target = "china.jpg", 25.0
    pixels = _small(sklearn_image(name))
    choice = choose_k_for_quality(pixels, target)
    assert choice.psnr >= target
    assert _psnr(pixels, choice.k) >= target  # the file itself meets the target
    assert api.decode(choice.data).k <= choice.k
    assert choice.k > 1 and _psnr(pixels, choice.k - 1) < target  # and one colour fewer does not
    # the search is cheaper than trying every k up to the answer
    assert len(choice.probes) < choice.k


def test_quality_target_out_of_reach_is_a_clear_error():
    pixels = _small(skimage_image("astronaut"))
    with pytest.raises(TargetError, match="cannot reach PSNR >= 60 dB with k <= 8"):
        choose_k_for_quality(pixels, 60.0, max_k=8)


def test_image_with_few_colours_is_lossless_at_its_colour_count():
    pixels = np.asarray(Image.fromarray(skimage_image("camera")).resize((64, 64)).quantize(5).convert("RGB"))
    choice = choose_k_for_quality(pixels, 99.0)
    assert choice.k == 5 and np.isinf(choice.psnr)
    assert np.array_equal(api.decode(choice.data).to_array(), pixels)


SIZE_CASES = [("raw", 1_500), ("raw", 3_100)] + [
    (coding, 1_200) for coding in sorted(set(CODINGS_BY_NAME) | {api.DEFAULT_CODING}) if coding != "raw"
]


@pytest.mark.parametrize("coding, budget", SIZE_CASES)
def test_size_budget_is_met_by_the_largest_k(coding, budget):
    pixels = _small(sklearn_image("china.jpg"))
    choice = choose_k_for_size(pixels, budget, coding=coding, max_k=128)
    assert len(choice.data) <= budget
    assert api.decode(choice.data).to_array().shape == pixels.shape
    assert 1 < choice.k < 128  # the budgets are chosen so the answer is inside the range
    # one colour more does not fit: a real encode of k+1, not the search's own formula
    assert len(api.encode(pixels, choice.k + 1, coding=coding)) > budget


def test_size_budget_below_the_smallest_file_is_a_clear_error():
    pixels = _small(sklearn_image("china.jpg"))
    smallest = len(api.encode(pixels, 1))  # one colour: header, one palette entry, no labels
    assert choose_k_for_size(pixels, smallest).k == 1
    with pytest.raises(TargetError, match="even k=1"):
        choose_k_for_size(pixels, smallest - 1)


def test_cli_reports_the_chosen_k(tmp_path, capsys):
    source = tmp_path / "flower.png"
    Image.fromarray(_small(sklearn_image("flower.jpg"))).save(source)
    assert main(["encode", str(source), str(tmp_path / "f.kmq"), "--quality", "26"]) == 0
    out = capsys.readouterr().out
    written = api.read(tmp_path / "f.kmq")
    assert f"auto-k: k={written.k} chosen for PSNR >= 26 dB" in out
    assert main(["encode", str(source), "-d", str(tmp_path / "batch"), "--max-bytes", "2000", "-j", "1"]) == 0
    out = capsys.readouterr().out
    assert (tmp_path / "batch" / "flower.kmq").stat().st_size <= 2000
    assert "chosen for size <= 2,000 bytes" in out and "auto k from" in out


def test_quality_target_on_an_image_with_alpha():
    rgb = _small(skimage_image("astronaut"), (48, 48))
    alpha = np.tile(np.linspace(0, 255, 48).astype(np.uint8), (48, 1))[:, :, None]  # a fade to transparent
    pixels = np.concatenate([rgb, alpha], axis=2)
    choice = choose_k_for_quality(pixels, 22.0)
    decoded = api.decode(choice.data)
    assert decoded.channels == 4
    assert _psnr(pixels, choice.k) >= 22.0 > _psnr(pixels, choice.k - 1)


@pytest.mark.parametrize("channels", [3, 4])
def test_each_colours_pixel_has_that_colour(channels):
    """pixel_of_each_colour: for every distinct colour of the histogram, the index of a pixel of that colour."""
    from kmcodec.autok import pixel_of_each_colour
    from kmcodec.quantizer import colour_histogram

    pixels = _small(sklearn_image("flower.jpg"), (160, 120))
    if channels == 4:
        alpha = np.random.default_rng(2).integers(0, 3, pixels.shape[:2], dtype=np.uint8) * 127
        pixels = np.dstack([pixels, alpha])
    histogram = colour_histogram(pixels)
    where = pixel_of_each_colour(pixels, histogram)
    assert where.shape == (histogram.colours.shape[0],)
    assert np.array_equal(pixels.reshape(-1, channels)[where], histogram.colours)


def test_the_search_counts_the_colours_once_and_takes_the_readers_counts(tmp_path, monkeypatch, capsys):
    """Every probe quantizes with the one histogram; from the CLI, a plain RGB PNG over 2^20 pixels brings its
    own counts (pngread), so the colours are not counted at all; the result is the same either way."""
    from kmcodec import autok, quantizer

    pixels = np.tile(sklearn_image("china.jpg"), (3, 2, 1))  # 1.6 MP
    counted = []
    real_count = quantizer.colour_histogram

    def counting(image):
        counted.append(image.shape)
        return real_count(image)

    monkeypatch.setattr(quantizer, "colour_histogram", counting)
    monkeypatch.setattr(autok, "colour_histogram", counting)
    choice = choose_k_for_quality(pixels, 30.0)
    assert len(choice.probes) >= 3 and counted == [pixels.shape]
    counted.clear()
    path, out = tmp_path / "big.png", tmp_path / "big.kmq"
    Image.fromarray(pixels).save(path)
    assert main(["encode", str(path), str(out), "--quality", "30", "-q"]) == 0
    assert counted == []
    assert out.read_bytes() == choice.data
