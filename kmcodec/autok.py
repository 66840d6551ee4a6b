"""Choose k automatically: the smallest k that meets a PSNR target, or the largest k whose file fits a size.

The search never encodes a file per candidate. The colour histogram is computed once (or
taken from the PNG reader, which counts the colours as it reads) and given to every probe's
quantizer, which would otherwise count the colours again; each probe quantizes to one k and
measures its PSNR on the histogram (distinct colours weighted by their pixel counts, each
colour's label read at one of its pixels, no per-pixel work). File sizes come from the coding's
length formula when it has one (raw: 40 + k*C + ceil(n*b/8)), and from one real encode
per probe otherwise. Probes go up by powers of two until the goal flips, then home in
on the crossing inside the last octave (see _first_passing), so the answer k always has
a probed neighbour k-1 that misses the goal (or k+1 that does not fit).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import numpy as np

from . import api
from .codings import CODINGS_BY_NAME
from .container import HEADER_SIZE, MAX_K, TRAILER_SIZE, Header
from .errors import TargetError
from .image import KMQImage
from .metrics import psnr_from_mse
from .names import DEFAULT_MAX_K
from .quantizer import DEFAULT_ENGINE, PIXEL_CHUNK, ColourHistogram, colour_histogram, pixel_keys, quantize_pixels



@dataclass(frozen=True)
class Probe:
    """One candidate k tried by the search: its PSNR (dB) and file size (bytes, None if not needed)."""

    k: int
    psnr: float
    size: int | None


@dataclass(frozen=True)
class KChoice:
    """The result of a search: the chosen k, its quantized image and encoded bytes, and every probe made."""

    k: int
    image: KMQImage
    data: bytes
    psnr: float
    goal: str
    probes: tuple[Probe, ...]

    def describe(self) -> str:
        """One line for people: the chosen k, what it achieves, and how many probes it took."""
        quality = "lossless" if math.isinf(self.psnr) else f"PSNR {self.psnr:.2f} dB"
        return f"k={self.k} chosen for {self.goal}: {quality}, {len(self.data):,} bytes, {len(self.probes)} probes"


def pixel_of_each_colour(pixels: np.ndarray, histogram: ColourHistogram) -> np.ndarray:
    """For each distinct colour of the histogram (colour_histogram(pixels)), the index of one pixel of that colour.

    Without dithering every pixel of a colour gets the same label, so a quantization is measured on the
    distinct colours by looking up one pixel of each. RGB finds each pixel's colour through a table over the
    24-bit keys, other channel counts by a search in the sorted keys; the pixels are taken in chunks.
    """
    channels = pixels.shape[2]
    flat = pixels.reshape(-1, channels)
    distinct = histogram.keys.size
    table = None
    if channels == 3:
        table = np.empty(1 << 24, dtype=np.int32)  # only the pages of keys that occur are touched
        table[histogram.keys] = np.arange(distinct, dtype=np.int32)
    pixel = np.empty(distinct, dtype=np.int64)
    for start in range(0, flat.shape[0], PIXEL_CHUNK):
        keys = pixel_keys(flat[start : start + PIXEL_CHUNK])
        colour = table[keys] if table is not None else np.searchsorted(histogram.keys, keys)
        pixel[colour] = np.arange(start, start + keys.size, dtype=np.int64)  # any pixel of the colour will do
    return pixel


class _Prober:
    """Quantizes one image at candidate k values and remembers each result, measuring it on the histogram."""

    def __init__(
        self,
        pixels: np.ndarray,
        *,
        coding: str,
        seed: int,
        engine: str,
        quantize_options: Mapping[str, Any] | None = None,
        histogram: ColourHistogram | None = None,
    ) -> None:
        self.pixels = pixels
        self.coding = coding
        self.seed = seed
        self.engine = engine
        self.quantize_options = dict(quantize_options or {})
        self.histogram = colour_histogram(pixels) if histogram is None else histogram
        # dithering and rdo give pixels of one colour different labels: then measure every pixel
        self.per_pixel = bool(self.quantize_options.get("dither")) or bool(self.quantize_options.get("rdo"))
        self.pixel_of_colour = None if self.per_pixel else pixel_of_each_colour(pixels, self.histogram)
        self.colours = self.histogram.colours.astype(np.float64)
        self.counts = self.histogram.counts.astype(np.float64)
        self.distinct = self.histogram.colours.shape[0]
        self.results: dict[int, tuple[KMQImage, float]] = {}
        self.sizes: dict[int, int] = {}
        self.encoded: dict[int, bytes] = {}

    def image(self, k: int) -> tuple[KMQImage, float]:
        """The image quantized to k colours and its PSNR (computed once per k)."""
        if k not in self.results:
            palette, labels = quantize_pixels(
                self.pixels, k, seed=self.seed, engine=self.engine, histogram=self.histogram, **self.quantize_options
            )
            if self.per_pixel:
                mse = float(np.mean((np.take(palette, labels, axis=0).astype(np.float64) - self.pixels) ** 2))
            else:
                colour_labels = labels.reshape(-1)[self.pixel_of_colour]
                errors = ((self.colours - palette[colour_labels].astype(np.float64)) ** 2).sum(axis=1)
                mse = float((errors * self.counts).sum() / (self.counts.sum() * self.pixels.shape[2]))
            self.results[k] = (KMQImage(palette, labels), psnr_from_mse(mse))
        return self.results[k]

    def formula_size(self, k: int) -> int | None:
        """The file size at palette size k from the coding's length formula, or None if it has none
        (a coding whose payload depends on the labels, or a choice among codings such as 'auto')."""
        coding = CODINGS_BY_NAME.get(self.coding)
        if coding is None:
            return None
        height, width, channels = self.pixels.shape
        header = Header(width=width, height=height, channels=channels, k=k, coding=coding.id, payload_length=0)
        payload = coding.expected_length(header)
        return None if payload is None else HEADER_SIZE + k * channels + payload + TRAILER_SIZE

    def size(self, k: int) -> int:
        """The real encoded size at k (one quantize and one encode, remembered)."""
        if k not in self.sizes:
            image, _ = self.image(k)
            data = api.encode(image, coding=self.coding)
            self.encoded[k] = data
            self.sizes[k] = len(data)
        return self.sizes[k]

    def data(self, k: int) -> bytes:
        """The encoded file at k."""
        if k not in self.encoded:
            self.size(k)
        return self.encoded[k]

    def probes(self) -> tuple[Probe, ...]:
        return tuple(Probe(k, psnr, self.sizes.get(k)) for k, (_, psnr) in sorted(self.results.items()))


def _first_passing(upper: int, measure: Callable[[int], float], threshold: float) -> int | None:
    """Smallest k in 1..upper with measure(k) >= threshold, for a measure that grows with k.

    Tries k = 1, 2, 4, ... (and upper) until one passes. Inside the last octave it guesses
    where the threshold is crossed by interpolating the measure linearly in log2 k (PSNR and
    coded size are close to linear there), then checks the guess's neighbour, so the answer
    usually costs two probes instead of a bisection's log2 k; a guess that fails to halve
    the bracket is followed by a plain bisection step, which bounds the worst case.
    """
    values: dict[int, float] = {}

    def passes(candidate: int) -> bool:
        values[candidate] = measure(candidate)
        return values[candidate] >= threshold

    failing, candidate = 0, 1
    while True:
        candidate = min(candidate, upper)
        if passes(candidate):
            break
        if candidate == upper:
            return None
        failing, candidate = candidate, candidate * 2
    passing = candidate
    bisect_next = False
    while passing - failing > 1:
        width = passing - failing
        guess = (failing + passing) // 2 if bisect_next else _interpolate(failing, passing, values, threshold)
        if passes(guess):
            passing = guess
            neighbour = guess - 1
        else:
            failing = guess
            neighbour = guess + 1
        if failing < neighbour < passing:
            if passes(neighbour):
                passing = neighbour
            else:
                failing = neighbour
        bisect_next = (passing - failing) * 2 > width
    return passing


def _interpolate(failing: int, passing: int, values: dict[int, float], threshold: float) -> int:
    """Guess the k in (failing, passing) where the measure crosses threshold, linear in log2 k."""
    low, high = values.get(failing), values[passing]
    if failing == 0 or low is None or not (math.isfinite(low) and math.isfinite(high)) or high <= low:
        return (failing + passing) // 2
    fraction = (threshold - low) / (high - low)
    guess = round(2 ** (math.log2(failing) + fraction * (math.log2(passing) - math.log2(failing))))
    return min(max(guess, failing + 1), passing - 1)


def _search_limit(prober: _Prober, max_k: int) -> int:
    if not 1 <= max_k <= MAX_K:
        raise ValueError(f"max_k must be 1 to {MAX_K}, got {max_k}")
    return min(max_k, prober.distinct)  # at k = distinct colours the image is already lossless


def choose_k_for_quality(
    pixels: np.ndarray,
    target_psnr: float,
    *,
    max_k: int = DEFAULT_MAX_K,
    coding: str = api.DEFAULT_CODING,
    seed: int = 0,
    engine: str = DEFAULT_ENGINE,
    quantize_options: Mapping[str, Any] | None = None,
    histogram: ColourHistogram | None = None,
) -> KChoice:
    """The smallest k (up to max_k) whose quantized image reaches target_psnr dB; raise TargetError if none does."""
    prober = _Prober(pixels, coding=coding, seed=seed, engine=engine, quantize_options=quantize_options,
                     histogram=histogram)
    upper = _search_limit(prober, max_k)
    k = _first_passing(upper, lambda candidate: prober.image(candidate)[1], target_psnr)
    goal = f"PSNR >= {target_psnr:g} dB"
    if k is None:
        best = prober.image(upper)[1]
        raise TargetError(f"cannot reach {goal} with k <= {upper} (k={upper} gives {best:.2f} dB); raise --max-k")
    image, psnr = prober.image(k)
    return KChoice(k, image, prober.data(k), psnr, goal, prober.probes())


def choose_k_for_size(
    pixels: np.ndarray,
    max_bytes: int,
    *,
    max_k: int = DEFAULT_MAX_K,
    coding: str = api.DEFAULT_CODING,
    seed: int = 0,
    engine: str = DEFAULT_ENGINE,
    quantize_options: Mapping[str, Any] | None = None,
    histogram: ColourHistogram | None = None,
) -> KChoice:
    """The largest k (up to max_k) whose .kmq file is at most max_bytes; raise TargetError if even k=1 is larger.

    With a fixed-length coding (raw) the size is a formula and only the chosen k is quantized;
    otherwise every probe is a real quantize and encode with the chosen coding.
    """
    prober = _Prober(pixels, coding=coding, seed=seed, engine=engine, quantize_options=quantize_options,
                     histogram=histogram)
    upper = _search_limit(prober, max_k)
    goal = f"size <= {max_bytes:,} bytes"
    fixed = prober.formula_size(1) is not None

    def size(candidate: int) -> float:
        return float(prober.formula_size(candidate) if fixed else prober.size(candidate))

    first_too_big = _first_passing(upper, size, max_bytes + 1)
    k = upper if first_too_big is None else first_too_big - 1
    if k < 1:
        smallest = prober.formula_size(1) if fixed else prober.size(1)
        raise TargetError(f"cannot meet {goal}: even k=1 takes {smallest:,} bytes")
    image, psnr = prober.image(k)
    data = prober.data(k)
    if len(data) > max_bytes:  # a coding whose size is not monotone in k: say so rather than overshoot
        raise TargetError(f"cannot meet {goal}: k={k} takes {len(data):,} bytes")
    return KChoice(k, image, data, psnr, goal, prober.probes())


def choose_k(
    pixels: np.ndarray,
    *,
    quality: float | None = None,
    max_bytes: int | None = None,
    max_k: int = DEFAULT_MAX_K,
    coding: str = api.DEFAULT_CODING,
    seed: int = 0,
    engine: str = DEFAULT_ENGINE,
    quantize_options: Mapping[str, Any] | None = None,
    histogram: ColourHistogram | None = None,
) -> KChoice:
    """Dispatch to the quality or the size search; exactly one of quality and max_bytes must be given.

    quantize_options are further keyword arguments of quantize_pixels (colour space, dithering, ...);
    histogram is colour_histogram(pixels) where the caller has it (the PNG reader counts the colours).
    """
    if (quality is None) == (max_bytes is None):
        raise ValueError("give exactly one of quality (PSNR in dB) and max_bytes")
    options = dict(max_k=max_k, coding=coding, seed=seed, engine=engine, quantize_options=quantize_options,
                   histogram=histogram)
    if quality is not None:
        return choose_k_for_quality(pixels, quality, **options)
    assert max_bytes is not None
    return choose_k_for_size(pixels, max_bytes, **options)


def quantize_and_encode(
    pixels: np.ndarray,
    *,
    k: int | None = None,
    quality: float | None = None,
    max_bytes: int | None = None,
    max_k: int = DEFAULT_MAX_K,
    coding: str = api.DEFAULT_CODING,
    seed: int = 0,
    engine: str = DEFAULT_ENGINE,
    quantize_options: Mapping[str, Any] | None = None,
    histogram: ColourHistogram | None = None,
) -> tuple[KMQImage, bytes, KChoice | None]:
    """Quantize to a fixed k, or to the k auto-k picks for quality or max_bytes, and encode it.

    Returns (image, file bytes, the KChoice when auto-k chose, else None): the one path the
    single-file and batch encoders share. `histogram` is the pixels' colour_histogram if the caller has
    it (the PNG reader counts colours as it decodes).
    """
    if k is None:
        choice = choose_k(
            pixels, quality=quality, max_bytes=max_bytes, max_k=max_k, coding=coding, seed=seed, engine=engine,
            quantize_options=quantize_options, histogram=histogram,
        )
        return choice.image, choice.data, choice
    palette, labels = quantize_pixels(
        pixels, k, seed=seed, engine=engine, histogram=histogram, **dict(quantize_options or {})
    )
    image = KMQImage(palette, labels)
    return image, api.encode(image, coding=coding), None


__all__ = [
    "DEFAULT_MAX_K",
    "KChoice",
    "Probe",
    "choose_k",
    "choose_k_for_quality",
    "choose_k_for_size",
    "quantize_and_encode",
]
