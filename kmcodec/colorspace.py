"""sRGB <-> OKLab (Björn Ottosson's perceptual colour space), scaled so coordinates fit the 0-255 box.

Clustering in OKLab makes equal distances look about equally different, so the
palette spends its entries where the eye notices errors. The scaled coordinates
are (L, a + 0.5, b + 0.5) x 255: one unit is about 0.004 OKLab, and all sRGB
colours land inside [0, 256), which the nearest-centroid grid expects.
"""

from __future__ import annotations

import numpy as np

OKLAB_SCALE = 255.0
OKLAB_OFFSET = np.array([0.0, 0.5, 0.5], dtype=np.float32)

_RGB_TO_LMS = np.array(
    [
        [0.4122214708, 0.5363325363, 0.0514459929],
        [0.2119034982, 0.6806995451, 0.1073969566],
        [0.0883024619, 0.2817188376, 0.6299787005],
    ],
    dtype=np.float32,
)
_LMS_TO_LAB = np.array(
    [
        [0.2104542553, 0.7936177850, -0.0040720468],
        [1.9779984951, -2.4285922050, 0.4505937099],
        [0.0259040371, 0.7827717662, -0.8086757660],
    ],
    dtype=np.float32,
)
_LAB_TO_LMS = np.array(
    [
        [1.0, 0.3963377774, 0.2158037573],
        [1.0, -0.1055613458, -0.0638541728],
        [1.0, -0.0894841775, -1.2914855480],
    ],
    dtype=np.float64,
)
_LMS_TO_RGB = np.array(
    [
        [4.0767416621, -3.3077115913, 0.2309699292],
        [-1.2684380046, 2.6097574011, -0.3413193965],
        [-0.0041960863, -0.7034186147, 1.7076147010],
    ],
    dtype=np.float64,
)


def _srgb_to_linear_table() -> np.ndarray:
    v = np.arange(256, dtype=np.float64) / 255.0
    return np.where(v <= 0.04045, v / 12.92, ((v + 0.055) / 1.055) ** 2.4).astype(np.float32)


_LINEAR = _srgb_to_linear_table()


def srgb_to_oklab(rgb: np.ndarray) -> np.ndarray:
    """OKLab (L, a, b) float32 of (..., 3) uint8 sRGB colours (unscaled: L in 0..1)."""
    linear = _LINEAR[rgb]
    lms = linear @ _RGB_TO_LMS.T
    np.cbrt(lms, out=lms)
    return lms @ _LMS_TO_LAB.T


def oklab_to_srgb(lab: np.ndarray) -> np.ndarray:
    """sRGB (..., 3) float64 in 0..255 (clipped to the gamut) of OKLab colours."""
    lms = np.asarray(lab, dtype=np.float64) @ _LAB_TO_LMS.T
    lms = lms * lms * lms
    linear = np.clip(lms @ _LMS_TO_RGB.T, 0.0, 1.0)
    srgb = np.where(linear <= 0.0031308, 12.92 * linear, 1.055 * np.power(linear, 1 / 2.4) - 0.055)
    return np.clip(srgb * 255.0, 0.0, 255.0)


def to_features(colours: np.ndarray, space: str) -> np.ndarray:
    """Coordinates (float32, in about 0..255) in which k-means measures distance, for (m, 3|4) uint8 colours.

    'rgb' is the colours themselves; 'oklab' is scaled OKLab, with alpha (if
    any) kept as a fourth coordinate in 0..255.
    """
    if space == "rgb":
        return colours.astype(np.float32)
    lab = srgb_to_oklab(colours[:, :3])
    lab += OKLAB_OFFSET
    lab *= np.float32(OKLAB_SCALE)
    if colours.shape[1] == 4:
        lab = np.concatenate([lab, colours[:, 3:].astype(np.float32)], axis=1)
    return np.ascontiguousarray(lab, dtype=np.float32)


def from_features(features: np.ndarray, space: str) -> np.ndarray:
    """Colours (float64, 0..255, not yet rounded) of feature-space points; the inverse of to_features."""
    features = np.asarray(features, dtype=np.float64)
    if space == "rgb":
        return np.clip(features, 0.0, 255.0)
    lab = features[:, :3] / OKLAB_SCALE - OKLAB_OFFSET
    rgb = oklab_to_srgb(lab)
    if features.shape[1] == 4:
        rgb = np.concatenate([rgb, np.clip(features[:, 3:], 0.0, 255.0)], axis=1)
    return rgb


def mean_delta_e_ok(reference: np.ndarray, other: np.ndarray) -> float:
    """Mean OKLab distance (x 100, the usual ΔE_OK scale) between two (..., 3|4) uint8 images' RGB colours."""
    a = srgb_to_oklab(reference[..., :3].reshape(-1, 3))
    b = srgb_to_oklab(other[..., :3].reshape(-1, 3))
    return float(np.sqrt(((a - b) ** 2).sum(axis=1)).mean() * 100.0)
