"""Image quality measures: PSNR and mean CIEDE2000 colour difference between an image and its quantized copy.

Both are computed over the distinct (original colour, decoded colour) pairs weighted by
their pixel counts, which is exact and much cheaper than per-pixel work on photos.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

_SRGB_TO_XYZ = np.array(
    [[0.412453, 0.357580, 0.180423], [0.212671, 0.715160, 0.072169], [0.019334, 0.119193, 0.950227]]
)
_D65_WHITE = np.array([0.95047, 1.0, 1.08883])


@dataclass(frozen=True)
class Quality:
    """How close a decoded image is to its original: PSNR in dB (inf if identical) and mean ΔE2000."""

    psnr: float
    delta_e: float


def psnr_from_mse(mse: float, peak: float = 255.0) -> float:
    """PSNR in dB of a mean squared error on 8-bit samples; inf for a perfect copy."""
    return float("inf") if mse <= 0 else float(10.0 * np.log10(peak * peak / mse))


def srgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """Convert (n, 3) 8-bit sRGB colours to CIELAB (D65 white), float64."""
    c = np.asarray(rgb, dtype=np.float64) / 255.0
    linear = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    # The 3 x 3 product written out, not `@`: OpenBLAS may take another kernel for the same product from one call to
    # the next (seen with numpy 1.24's OpenBLAS 0.3.21, in the full test suite only), and the same colour must give
    # the same Lab every time, so that its ΔE to itself is 0 (it came out 2e-15 in three of four runs of the
    # oldest-versions suite). numpy's elementwise operations round the same input the same way every time.
    t = sum(linear[:, [j]] * _SRGB_TO_XYZ[:, j] for j in range(3)) / _D65_WHITE
    delta = 6.0 / 29.0
    f = np.where(t > delta**3, np.cbrt(t), t / (3 * delta**2) + 4.0 / 29.0)
    return np.stack([116.0 * f[:, 1] - 16.0, 500.0 * (f[:, 0] - f[:, 1]), 200.0 * (f[:, 1] - f[:, 2])], axis=1)


def delta_e_2000(lab1: np.ndarray, lab2: np.ndarray) -> np.ndarray:
    """CIEDE2000 colour difference between two (n, 3) arrays of CIELAB colours (Sharma et al. 2005)."""
    L1, a1, b1 = np.asarray(lab1, dtype=np.float64).T
    L2, a2, b2 = np.asarray(lab2, dtype=np.float64).T
    c_bar = (np.hypot(a1, b1) + np.hypot(a2, b2)) / 2.0
    g = 0.5 * (1.0 - np.sqrt(c_bar**7 / (c_bar**7 + 25.0**7)))
    a1p, a2p = (1.0 + g) * a1, (1.0 + g) * a2
    c1p, c2p = np.hypot(a1p, b1), np.hypot(a2p, b2)
    h1p = np.degrees(np.arctan2(b1, a1p)) % 360.0
    h2p = np.degrees(np.arctan2(b2, a2p)) % 360.0
    chroma_zero = (c1p * c2p) == 0
    dh = h2p - h1p
    dh = np.where(dh > 180.0, dh - 360.0, np.where(dh < -180.0, dh + 360.0, dh))
    dh = np.where(chroma_zero, 0.0, dh)
    d_l = L2 - L1
    d_c = c2p - c1p
    d_h = 2.0 * np.sqrt(c1p * c2p) * np.sin(np.radians(dh / 2.0))
    l_bar = (L1 + L2) / 2.0
    cp_bar = (c1p + c2p) / 2.0
    h_sum = h1p + h2p
    h_bar = np.where(
        chroma_zero,
        h_sum,
        np.where(
            np.abs(h1p - h2p) <= 180.0,
            h_sum / 2.0,
            np.where(h_sum < 360.0, (h_sum + 360.0) / 2.0, (h_sum - 360.0) / 2.0),
        ),
    )
    t = (
        1.0
        - 0.17 * np.cos(np.radians(h_bar - 30.0))
        + 0.24 * np.cos(np.radians(2.0 * h_bar))
        + 0.32 * np.cos(np.radians(3.0 * h_bar + 6.0))
        - 0.20 * np.cos(np.radians(4.0 * h_bar - 63.0))
    )
    d_theta = 30.0 * np.exp(-(((h_bar - 275.0) / 25.0) ** 2))
    r_c = 2.0 * np.sqrt(cp_bar**7 / (cp_bar**7 + 25.0**7))
    s_l = 1.0 + 0.015 * (l_bar - 50.0) ** 2 / np.sqrt(20.0 + (l_bar - 50.0) ** 2)
    s_c = 1.0 + 0.045 * cp_bar
    s_h = 1.0 + 0.015 * cp_bar * t
    r_t = -np.sin(np.radians(2.0 * d_theta)) * r_c
    return np.sqrt((d_l / s_l) ** 2 + (d_c / s_c) ** 2 + (d_h / s_h) ** 2 + r_t * (d_c / s_c) * (d_h / s_h))


def _colour_keys(pixels: np.ndarray) -> np.ndarray:
    """Pack each pixel's 3 or 4 bytes into one uint64 key (row-major order)."""
    flat = pixels.reshape(-1, pixels.shape[-1])
    keys = np.zeros(flat.shape[0], dtype=np.uint64)
    for channel in range(flat.shape[1]):
        keys = (keys << np.uint64(8)) | flat[:, channel].astype(np.uint64)
    return keys


def _keys_to_colours(keys: np.ndarray, channels: int) -> np.ndarray:
    colours = np.empty((keys.size, channels), dtype=np.uint8)
    for channel in range(channels):
        shift = np.uint64(8 * (channels - 1 - channel))
        colours[:, channel] = (keys >> shift) & np.uint64(255)
    return colours


def compare_images(original: np.ndarray, decoded: np.ndarray) -> Quality:
    """PSNR over all channels and mean ΔE2000 over the colour channels of two (H, W, C) uint8 images."""
    if original.shape != decoded.shape:
        raise ValueError(f"images differ in shape: {original.shape} vs {decoded.shape}")
    channels = original.shape[-1]
    # one key per (original, decoded) pair: 2 x 32 bits fits in 64; RGB pairs use 48 bits
    pair_keys = (_colour_keys(original) << np.uint64(8 * channels)) | _colour_keys(decoded)
    unique, counts = np.unique(pair_keys, return_counts=True)
    first = _keys_to_colours(unique >> np.uint64(8 * channels), channels)
    second = _keys_to_colours(unique & np.uint64((1 << (8 * channels)) - 1), channels)
    squared = ((first.astype(np.float64) - second) ** 2).sum(axis=1)
    mse = float((squared * counts).sum() / (counts.sum() * channels))
    delta = delta_e_2000(srgb_to_lab(first[:, :3]), srgb_to_lab(second[:, :3]))
    return Quality(psnr=psnr_from_mse(mse), delta_e=float((delta * counts).sum() / counts.sum()))
