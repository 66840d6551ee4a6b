"""Rate-distortion label choice (`--rdo DB`): a smaller file at the same k, for at most DB dB of PSNR.

The context codings code "this pixel has its left neighbour's label" in a fraction of a
bit and a label of its own in several. A pixel almost as close to its left (or upper)
neighbour's palette entry as to its own can take that entry for next to no error, and
such pixels lengthen runs. A pass in raster order lets every pixel do so when it adds at
most `tau` to its squared error; `smooth_within` finds the largest `tau` whose total
added error keeps the PSNR within the budget. It runs on the labels after quantization
and leaves the palette alone (the quantizer then drops entries no pixel uses); the
encoder alone chooses, and the decoder needs nothing new.
"""

from __future__ import annotations

import math

import numpy as np

from . import fastpath
from .names import MAX_RDO_DB  # noqa: F401  (re-exported: the command line checks the budget without numpy)

#: The search stops once tau is known within this fraction (tau itself is an integer); the capped last pass
#: spends what is left of the budget.
TAU_PRECISION = 1 / 8


def allowed_error(base_error: int, budget_db: float) -> int:
    """The added squared error that lowers the PSNR of an image of total error base_error by at most budget_db."""
    return math.floor(base_error * (10.0 ** (budget_db / 10.0) - 1.0))


def smooth_within(pixels: np.ndarray, palette: np.ndarray, labels: np.ndarray, budget_db: float) -> np.ndarray:
    """Labels (H, W) where pixels took a neighbour's label, adding at most budget_db dB of PSNR loss in all.

    The allowance per pixel grows by doubling, then by bisection to the largest measured within the budget
    (the total error is not strictly monotone in it); a last pass at the next allowance up takes its moves
    until the budget is spent, as errors are integers and one step of tau can overshoot the budget.
    """
    if budget_db <= 0.0 or labels.size == 0:
        return labels
    pixels = np.ascontiguousarray(pixels)  # once, not in every pass
    best: np.ndarray | None = None
    allowed: int | None = None

    def within(tau: int, cap: int | None = None) -> bool:
        nonlocal best, allowed
        out, base, added = fastpath.smooth(pixels, palette, labels, tau, cap)
        allowed = allowed_error(base, budget_db)
        if added > allowed:
            return False
        best = out
        return True

    low, high, tau = 0, None, 1
    top = pixels.shape[2] * 255 * 255  # no pixel's error can grow by more
    while tau <= top:
        if not within(tau):
            high = tau
            break
        low, tau = tau, tau * 2
    if high is None:
        return best
    while high - low > max(1, int(low * TAU_PRECISION)):
        middle = (low + high) // 2
        if within(middle):
            low = middle
        else:
            high = middle
    within(high, cap=allowed)  # within the cap by construction
    return best
