"""Quality measures against independent references: scikit-image's CIELAB and CIEDE2000, per-pixel PSNR."""

from __future__ import annotations

import numpy as np
import pytest

from kmcodec import api
from kmcodec.metrics import compare_images, delta_e_2000, srgb_to_lab

from conftest import sklearn_image


def test_lab_and_ciede2000_match_scikit_image():
    color = pytest.importorskip("skimage.color")
    original = sklearn_image("flower.jpg")[::4, ::4]
    quantized = api.quantize(original, 8).to_array()
    ours = delta_e_2000(srgb_to_lab(original.reshape(-1, 3)), srgb_to_lab(quantized.reshape(-1, 3)))
    theirs = color.deltaE_ciede2000(color.rgb2lab(original), color.rgb2lab(quantized)).reshape(-1)
    # assert_allclose (np.allclose's tolerances) names the worst pixel. This test failed now and then in the
    # oldest-versions suite, never alone: the ΔE of the image to itself (last line) came out 2e-15, as the same
    # colour's Lab came out differently from two calls through OpenBLAS; srgb_to_lab no longer calls BLAS.
    np.testing.assert_allclose(srgb_to_lab(original.reshape(-1, 3)), color.rgb2lab(original).reshape(-1, 3),
                               rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-3)
    quality = compare_images(original, quantized)
    assert quality.delta_e == pytest.approx(theirs.mean(), abs=1e-3)
    mse = np.mean((original.astype(np.float64) - quantized) ** 2)
    assert quality.psnr == pytest.approx(10 * np.log10(255**2 / mse), rel=1e-9)
    assert np.isinf(compare_images(original, original).psnr) and compare_images(original, original).delta_e == 0
