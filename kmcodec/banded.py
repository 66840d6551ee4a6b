"""The band layer of codings 4 to 7 (spec sections 5.3-5.6): labels cut into horizontal bands coded independently.

Independent bands are what lets one image be coded and decoded on several cores at
once: each band is a standalone label image for the context coder, so the bands of a
file go to parallel threads (the compiled kernel releases the GIL). This module knows
the band tables and the threads; it does not know how one band is coded. Codings 4 to 6
cut bands of equal rows; coding 7's table says how many rows each band has, so an
encoder can cut bands that take the same time to decode (balanced_band_heights).
"""

from __future__ import annotations

import struct
from typing import Callable

import numpy as np

from .errors import CodingError
from .parallel import available_cores, run_in_threads

#: The most bands a payload may have (spec 5.3): every band costs the decoder a fresh model.
MAX_BANDS = 64
#: The reference encoder gives each band at least this many pixels (2 MiP): measured on 4 MP photos
#: at k = 64, two bands cost 0.0-0.4 % in size against one, four bands up to 1 %.
PIXELS_PER_BAND = 1 << 21

_COUNT = struct.Struct(">H")


def band_count_for(width: int, height: int) -> int:
    """How many bands the reference encoder uses: one per PIXELS_PER_BAND pixels, at least 1, at most 64 and height."""
    return max(1, min(MAX_BANDS, height, (width * height) // PIXELS_PER_BAND))


def band_rows(height: int, bands: int) -> list[tuple[int, int]]:
    """The rows [start, stop) of each band: band i starts at floor(i * height / bands)."""
    edges = [i * height // bands for i in range(bands + 1)]
    return list(zip(edges[:-1], edges[1:]))


def encode_bands(labels: np.ndarray, width: int, height: int, code_band: Callable[[np.ndarray, int], bytes],
                 bands: int | None = None, workers: int | None = None) -> bytes:
    """Code flat labels band by band with code_band(band_labels, band_height); return the band table and streams.

    bands defaults to the reference encoder's choice (band_count_for); any 1..min(64, height) is valid.
    """
    return encode_band_streams(width, height, lambda start, stop: code_band(labels[start * width : stop * width], stop - start),
                               bands, workers)


def encode_band_streams(width: int, height: int, code_rows: Callable[[int, int], bytes], bands: int | None = None,
                        workers: int | None = None) -> bytes:
    """The band table and streams of a width x height label image whose rows [start, stop) code_rows codes.

    encode_bands gives it rows of a flat array; coding 6 gives it the columns of the image it transposes.
    """
    bands = band_count_for(width, height) if bands is None else bands
    if not 1 <= bands <= min(MAX_BANDS, height):
        raise ValueError(f"bands must be between 1 and {min(MAX_BANDS, height)}, not {bands}")
    rows = band_rows(height, bands)
    streams = _code_bands(rows, code_rows, workers)
    table = _COUNT.pack(len(rows)) + struct.pack(f">{len(rows)}I", *(len(stream) for stream in streams))
    return table + b"".join(streams)


def _code_bands(rows: list[tuple[int, int]], code_rows: Callable[[int, int], bytes], workers: int | None) -> list[bytes]:
    """code_rows(start, stop) for every band's rows, on `workers` threads (all cores by default)."""
    tasks = [lambda start=start, stop=stop: code_rows(start, stop) for start, stop in rows]
    return run_in_threads(tasks, available_cores() if workers is None else workers)


def _band_table_size(payload: bytes, height: int, extent: str, offset: int, bytes_per_band: int) -> tuple[int, int]:
    """The band count of a band table and where the table ends, checked against the payload (spec 5.3, 5.6):
    1 to 64 bands and at most `height` (the coded image's rows, named `extent` in messages)."""
    if len(payload) < _COUNT.size:
        raise CodingError(f"payload: a banded context payload of {len(payload) + offset} bytes has no band count "
                          f"(2 bytes at payload offset {offset})")
    (bands,) = _COUNT.unpack_from(payload)
    if not 1 <= bands <= min(MAX_BANDS, height):
        raise CodingError(f"payload: band count {bands} at payload offset {offset} is not between 1 and "
                          f"{min(MAX_BANDS, height)} (64, and at most the {extent} {height})")
    table_end = _COUNT.size + bytes_per_band * bands
    if len(payload) < table_end:
        raise CodingError(f"payload: the band table of {bands} bands needs {table_end + offset} bytes, "
                          f"the payload has {len(payload) + offset}")
    return bands, table_end


def split_bands(payload: bytes, width: int, height: int, min_stream_bytes: Callable[[int], int], unit: str = "rows",
                offset: int = 0) -> list[tuple[int, int, memoryview]]:
    """Parse and check the band table (spec 5.3) before anything is allocated: (start row, stop row, stream) per band.

    min_stream_bytes(pixels) is the shortest stream that can hold a band of that many pixels;
    a shorter one is rejected here, so a tiny payload cannot make the decoder allocate a large image.
    Coding 6 passes its payload after the model byte (offset 1, for the messages) and unit "columns".
    """
    bands, table_end = _band_table_size(payload, height, 'height' if unit == 'rows' else 'width', offset, 4)
    lengths = struct.unpack_from(f">{bands}I", payload, _COUNT.size)
    return _band_streams(payload, table_end, band_rows(height, bands), lengths, width, min_stream_bytes, unit, offset)


def _band_streams(payload: bytes, table_end: int, rows: list[tuple[int, int]], lengths: tuple[int, ...], width: int,
                  min_stream_bytes: Callable[[int], int], unit: str, offset: int) -> list[tuple[int, int, memoryview]]:
    """(start row, stop row, stream) per band, from the streams after a band table ending at table_end: the lengths
    must add up to the payload, and each stream must be long enough for its band (min_stream_bytes)."""
    if table_end + sum(lengths) != len(payload):
        raise CodingError(f"payload: the band table declares {sum(lengths)} bytes of streams after its "
                          f"{table_end + offset} bytes, the payload holds {len(payload) - table_end}")
    view = memoryview(payload)
    parts = []
    position = table_end
    for index, ((start, stop), length) in enumerate(zip(rows, lengths)):
        needed = min_stream_bytes((stop - start) * width)
        if length < needed:
            raise CodingError(f"payload: band {index} ({unit} {start}-{stop - 1}) has a {length}-byte stream, "
                              f"too short to hold {(stop - start) * width} labels (at least {needed} bytes)")
        parts.append((start, stop, view[position : position + length]))
        position += length
    return parts


def balanced_band_heights(costs: np.ndarray, bands: int) -> list[int]:
    """Row counts of `bands` bands (each at least one row) whose summed row costs are as equal as the rows allow:
    band i ends at the first row where the running cost reaches (i + 1) / bands of the total."""
    height = len(costs)
    bands = max(1, min(bands, height))
    running = np.cumsum(np.asarray(costs, dtype=np.float64))
    total = running[-1] if height else 0.0
    if total <= 0:
        return [stop - start for start, stop in band_rows(height, bands)]
    ends = np.searchsorted(running, total * np.arange(1, bands) / bands) + 1
    edges = [0]
    for index, end in enumerate(ends.tolist(), start=1):
        # at least one row for this band and for each band after it
        edges.append(min(max(end, edges[-1] + 1), height - (bands - index)))
    edges.append(height)
    return [stop - start for start, stop in zip(edges[:-1], edges[1:])]


def encode_sized_band_streams(width: int, heights: list[int], code_rows: Callable[[int, int], bytes],
                              workers: int | None = None) -> bytes:
    """Coding 7's band table (spec 5.6) and streams: the band count, each band's row count, each stream's length,
    then the streams; code_rows(start, stop) codes rows [start, stop) of a label image `width` wide."""
    if not 1 <= len(heights) <= MAX_BANDS or min(heights) < 1:
        raise ValueError(f"1 to {MAX_BANDS} bands of at least one row each, not {heights}")
    edges = np.cumsum([0, *heights]).tolist()
    streams = _code_bands(list(zip(edges[:-1], edges[1:])), code_rows, workers)
    table = (_COUNT.pack(len(heights)) + struct.pack(f">{len(heights)}I", *heights)
             + struct.pack(f">{len(heights)}I", *(len(stream) for stream in streams)))
    return table + b"".join(streams)


def split_sized_bands(payload: bytes, width: int, height: int, min_stream_bytes: Callable[[int], int],
                      unit: str = "rows", offset: int = 0) -> list[tuple[int, int, memoryview]]:
    """Parse and check coding 7's band table (spec 5.6) before anything is allocated: (start row, stop row, stream)
    per band, as split_bands does for the tables of codings 4 to 6 (offset: where `payload` starts in the
    coding's payload, for the messages)."""
    bands, table_end = _band_table_size(payload, height, unit, offset, 8)
    heights = struct.unpack_from(f">{bands}I", payload, _COUNT.size)
    lengths = struct.unpack_from(f">{bands}I", payload, _COUNT.size + 4 * bands)
    for index, rows in enumerate(heights):
        if rows < 1:
            raise CodingError(f"payload: band {index} has 0 {unit} (payload offset {offset + 2 + 4 * index}); "
                              f"every band has at least one")
    if sum(heights) != height:
        raise CodingError(f"payload: the band table's {unit} add up to {sum(heights)}, the image has {height}")
    edges = np.cumsum([0, *heights]).tolist()
    return _band_streams(payload, table_end, list(zip(edges[:-1], edges[1:])), lengths, width, min_stream_bytes, unit,
                         offset)


def decode_bands(parts: list[tuple[int, int, memoryview]], width: int, out: np.ndarray,
                 decode_band: Callable[[memoryview, int, np.ndarray], None], workers: int | None = None) -> None:
    """Decode every band into its rows of the flat label array `out`, bands in parallel threads."""
    decode_band_streams(parts, lambda stream, start, stop: decode_band(stream, stop - start, out[start * width : stop * width]),
                        workers)


def decode_band_streams(parts: list[tuple[int, int, memoryview]], decode_rows: Callable[[memoryview, int, int], None],
                        workers: int | None = None, unit: str = "rows") -> None:
    """Run decode_rows(stream, start, stop) for every band of split_bands, in parallel threads; a band's
    CodingError names the band and its rows (unit: "columns" for coding 6, whose coded rows are columns)."""

    def task(index: int, start: int, stop: int, stream: memoryview) -> Callable[[], None]:
        def run() -> None:
            try:
                decode_rows(stream, start, stop)
            except CodingError as exc:
                raise CodingError(f"payload: band {index} ({unit} {start}-{stop - 1}): {exc}") from None
        return run

    tasks = [task(index, *part) for index, part in enumerate(parts)]
    run_in_threads(tasks, available_cores() if workers is None else workers)
