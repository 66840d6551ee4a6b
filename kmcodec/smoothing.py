"""Rate-distortion label choice (`--rdo DB`): a smaller file at the same k, for at most DB dB of PSNR.

The context codings code "this pixel has its left neighbour's label" in a fraction of a
bit, "its upper neighbour's" in about a bit, and a label none of its neighbours has in
several. A pixel almost as close to a neighbour's palette entry as to its own can take
that entry for next to no error, and such pixels lengthen runs. A pass in raster order
lets every pixel do so when it adds at most `tau` times what the move saves the coder
(fastpath.MOVE_WEIGHT: most for a pixel none of its neighbours has, least for one that
already has its upper neighbour's label); `smooth_within` finds the largest `tau` whose
total added error keeps the PSNR within the budget. It runs on the labels after
quantization and leaves the palette alone (the quantizer then drops entries no pixel
uses); the encoder alone chooses, and the decoder needs nothing new.
"""

from __future__ import annotations

import math

import numpy as np

from . import fastpath

#: The search stops once tau is known within this fraction (tau itself is an integer); the capped last pass
#: spends what is left of the budget.
TAU_PRECISION = 1 / 8
#: On images of more than SAMPLE_ABOVE pixels the search first runs on a sample (blocks of SAMPLE_BLOCK rows,
#: one every SAMPLE_EVERY rows), and the full image's search starts from the allowance found there: 2-7
#: passes over a 4 MP image instead of up to 15.
SAMPLE_ABOVE = 1 << 20
SAMPLE_BLOCK = 16
SAMPLE_EVERY = 128


def allowed_error(base_error: int, budget_db: float) -> int:
    """The added squared error that lowers the PSNR of an image of total error base_error by at most budget_db."""
    return math.floor(base_error * (10.0 ** (budget_db / 10.0) - 1.0))


def smooth_within(pixels: np.ndarray, palette: np.ndarray, labels: np.ndarray, budget_db: float) -> np.ndarray:
    """Labels (H, W) where pixels took a neighbour's label, adding at most budget_db dB of PSNR loss in all.

    The allowance per pixel is bracketed from a start (1, or what a sample of the rows gives on big images),
    then bisected to the largest measured within the budget (the total error is not strictly monotone in
    it); a last pass at the next allowance up takes its moves until the budget is spent, as errors are
    integers and one step of tau can overshoot the budget.
    """
    if budget_db <= 0.0 or labels.size == 0:
        return labels
    start = 1
    if labels.size > SAMPLE_ABOVE and labels.shape[0] >= 2 * SAMPLE_EVERY:
        rows = np.concatenate([np.arange(top, top + SAMPLE_BLOCK)
                               for top in range(0, labels.shape[0] - SAMPLE_BLOCK + 1, SAMPLE_EVERY)])
        start = max(1, _largest_allowance(pixels[rows], palette, labels[rows], budget_db, 1)[0])
    return _largest_allowance(pixels, palette, labels, budget_db, start)[1]


def _largest_allowance(pixels: np.ndarray, palette: np.ndarray, labels: np.ndarray, budget_db: float, start: int
                       ) -> tuple[int, np.ndarray]:
    """(tau, labels): the search of smooth_within from the allowance `start`, and the labels it settles on."""
    best = labels
    allowed: int | None = None

    def within(tau: int, cap: int | None = None) -> bool:
        nonlocal best, allowed
        out, base, added = fastpath.smooth(pixels, palette, labels, tau, cap)
        allowed = allowed_error(base, budget_db)
        if added > allowed:
            return False
        best = out
        return True

    top = pixels.shape[2] * 255 * 255 * 10  # from here no move is refused (the smallest weight is 3 tenths)
    if within(start):  # bracket upwards: low within the budget, high over it (or past top)
        low, high = start, None
        while high is None and low < top:
            step = max(low + 1, low * 2 if start == 1 else low * 3 // 2)
            if within(step):
                low = step
            else:
                high = step
        if high is None:
            return low, best
    else:  # bracket downwards
        high, low = start, None
        while low is None:
            step = high * 2 // 3
            if step == 0:
                low = 0  # tau 0 moves only exact ties: never over the budget (its labels come with the last pass)
            elif within(step):
                low = step
            else:
                high = step
    while high - low > max(1, int(low * TAU_PRECISION)):
        middle = (low + high) // 2
        if within(middle):
            low = middle
        else:
            high = middle
    within(high, cap=allowed)  # within the cap by construction
    return low, best
