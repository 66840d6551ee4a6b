"""The label codings of the payload (spec section 5): a registry mapping the header's coding byte to a codec.

Each coding turns a flat label array into payload bytes and back. Raw (0) is the
bit-packed stream itself; deflate (1) and lzma (2) compress the labels laid out
one per byte (two, big-endian, when b > 8) with the standard library; context1 (3)
is the context-modelling range coder of spec section 5.2, in a compiled kernel,
context (4) is the same coder run on independent horizontal bands (spec 5.3) so
that several cores share the work, context2 (5) is coding 4's band layer with a
model of joint neighbour contexts (spec 5.4), context-columns (6) codes the
transposed image with either model (spec 5.5), for images that repeat more down
their columns, and context3 (7) codes either orientation in bands of equal decoding
cost, with models 4 and 5, model 6, which codes escaped labels from the bottom of
the label tree up where that takes fewer decisions, or model 7, which asks whether a
label is one of its neighbours before asking which (spec 5.6). auto writes coding 7.
Every decoder is bounded: it never produces (or allocates for) more labels than
the header declares.
"""

from __future__ import annotations

import functools
import lzma
import math
import struct
import zlib
from dataclasses import dataclass
from types import ModuleType
from typing import Callable

import numpy as np

from . import banded, parallel, xzblocks
from .bitpack import label_dtype, pack_labels, packed_size, unpack_labels
from .container import Header
from .errors import CodingError, HeaderError, LabelError
from .names import AUTO, CODING_CHOICES  # noqa: F401  (re-exported: the registry's names live in names.py)


@functools.cache
def strict_inflate() -> ModuleType:
    """ISA-L's inflate (python-isal, a dependency: the same zlib streams, 2-2.5x faster than zlib's on labels) where
    it reports the bytes after a stream in unused_data, as coding 1's decoder needs to reject them; python-isal
    before 1.9 leaves unused_data empty, and there (or without it) zlib's inflate does the job. Chosen at the first
    deflate decode (importing isal and the probe cost about 3 ms), not at import."""
    try:
        from isal import isal_zlib
    except ImportError:  # pragma: no cover - python-isal is a dependency
        return zlib
    labels = bytes(range(256)) * 4
    probe = isal_zlib.decompressobj()
    probe.decompress(zlib.compress(labels) + b"?", len(labels))  # as _bounded_inflate asks, then one byte more
    return isal_zlib if probe.eof and probe.unused_data == b"?" else zlib


try:
    from . import _ctxcoder
except ImportError:  # not built: the context coding then says how to get it
    _ctxcoder = None

#: How to get the compiled context coder when it is missing.
BUILD_HINT = "install kmcodec with `pip install .` (or run `python setup.py build_ext --inplace` in a checkout)"


@dataclass(frozen=True)
class Coding:
    """One payload coding: its header id, its name, and its encode/decode functions."""

    id: int
    name: str
    #: encode(labels: flat ndarray, header_without_length) -> payload bytes
    encode: Callable[[np.ndarray, Header], bytes]
    #: decode(payload, header) -> flat label array (validated: every label < k)
    decode: Callable[[bytes, Header], np.ndarray]
    #: the payload length the header must declare, or None if any length is possible
    expected_length: Callable[[Header], int | None]


def _raw_encode(labels: np.ndarray, header: Header) -> bytes:
    return pack_labels(labels, header.label_bits)


def _raw_decode(payload: bytes, header: Header) -> np.ndarray:
    return unpack_labels(payload, header.pixel_count, header.label_bits, header.k)


def _raw_expected_length(header: Header) -> int:
    return packed_size(header.pixel_count, header.label_bits)


RAW = Coding(0, "raw", _raw_encode, _raw_decode, _raw_expected_length)


def label_bytes(labels: np.ndarray, bits: int) -> bytes:
    """The byte layout of spec section 5.2: one byte per label (b <= 8) or two, big-endian (b > 8)."""
    flat = np.ascontiguousarray(labels).reshape(-1)
    return flat.astype(np.uint8 if bits <= 8 else ">u2", copy=False).tobytes()


def labels_from_bytes(data: bytes, header: Header) -> np.ndarray:
    """Turn the byte layout back into labels, checking every label is < k."""
    bits = header.label_bits
    labels = np.frombuffer(data, dtype=np.uint8 if bits <= 8 else ">u2").astype(label_dtype(bits), copy=False)
    if labels.size and header.k < (256 if bits <= 8 else 65536):  # a byte holds labels up to 255, not 2**b - 1
        top = int(labels.max())
        if top >= header.k:
            where = int(np.argmax(labels >= header.k))
            raise LabelError(f"payload: pixel {where} has label {int(labels[where])} >= k = {header.k}")
    return labels


def _layout_size(header: Header) -> int:
    return header.pixel_count * (1 if header.label_bits <= 8 else 2)


def _bounded_inflate(decompressor, payload: bytes, size: int, name: str,
                     library_error: type[Exception] = zlib.error) -> bytes:
    """Decompress into at most `size` bytes (never allocating more); reject a stream that holds more or fewer
    bytes, does not finish, or is followed by left-over bytes."""
    try:
        out = decompressor.decompress(payload, size)
        if not decompressor.eof:
            tail = getattr(decompressor, "unconsumed_tail", b"")  # zlib hands back input it did not use
            if decompressor.decompress(tail, 1):
                raise CodingError(f"payload: the {name} stream holds more than the {size} bytes of labels declared")
    except (library_error, zlib.error, lzma.LZMAError, EOFError) as exc:
        raise CodingError(f"payload: the {name} stream cannot be decoded: {exc}") from None
    if not decompressor.eof:
        raise CodingError(f"payload: the {name} stream ends early, after {len(out)} of {size} bytes of labels")
    if len(out) != size:
        raise CodingError(f"payload: the {name} stream holds {len(out)} bytes of labels, the header declares {size}")
    if decompressor.unused_data:
        raise CodingError(f"payload: {len(decompressor.unused_data)} bytes are left over after the {name} stream")
    return out


def _deflate_encode(labels: np.ndarray, header: Header) -> bytes:
    return zlib.compress(label_bytes(labels, header.label_bits), 9)


def _deflate_decode(payload: bytes, header: Header) -> np.ndarray:
    inflate = strict_inflate()
    out = _bounded_inflate(inflate.decompressobj(), payload, _layout_size(header), "deflate", inflate.error)
    return labels_from_bytes(out, header)


def _lzma_encode(labels: np.ndarray, header: Header) -> bytes:
    # independent blocks of >= 1 MiB, coded in parallel, so that decoders can decode them in parallel
    return xzblocks.compress(label_bytes(labels, header.label_bits))


def _lzma_decode(payload: bytes, header: Header) -> np.ndarray:
    size = _layout_size(header)
    out = xzblocks.decompress_blocks(payload, size)  # multi-block streams with sizes: block by block, in parallel
    if out is None:  # any other stream, and any stream the fast path rejects: liblzma decides, and says why
        decompressor = lzma.LZMADecompressor(format=lzma.FORMAT_XZ, memlimit=1 << 28)
        out = _bounded_inflate(decompressor, payload, size, "lzma")
    return labels_from_bytes(out, header)


def _any_length(header: Header) -> None:
    return None


def _context_kernel():
    if _ctxcoder is None:
        raise CodingError(f"the context coding needs kmcodec's compiled kernel kmcodec._ctxcoder, which is missing: {BUILD_HINT}")
    return _ctxcoder


#: The kernel's context models: coding 3 is one stream of model 3 (spec 5.2), coding 4 bands of model 4 (5.3.1),
#: coding 5 bands of model 5 (5.4.1).
CONTEXT1_MODEL = 3
BAND_MODEL = 4
JOINT_BAND_MODEL = 5
#: Coding 6 (spec 5.5) codes the transposed image's bands with either banded model; its first byte says which.
COLUMN_MODELS = (BAND_MODEL, JOINT_BAND_MODEL)
#: Model 6 (spec 5.6.1): model 5 with escaped labels coded bottom-up where that pays; labels of at most 8 bits.
CLIMB_MODEL = 6
CLIMB_MODEL_MAX_BITS = 8
#: Model 7 (spec 5.6.2): model 4 that asks "one of the neighbours?" before asking which, for images whose labels are
#: mostly none of their neighbours' (one decision there where model 4 asks up to four).
ESCAPE_FIRST_MODEL = 7
#: Coding 7 (spec 5.6): an orientation byte, a model byte, then bands with their row counts.
CONTEXT3_MODELS = (BAND_MODEL, JOINT_BAND_MODEL, CLIMB_MODEL, ESCAPE_FIRST_MODEL)
BY_ROWS, BY_COLUMNS = 0, 1


def _flat_labels(labels: np.ndarray, header: Header) -> np.ndarray:
    return np.ascontiguousarray(labels.reshape(-1), dtype=label_dtype(header.label_bits))


def _context_encode(labels: np.ndarray, header: Header) -> bytes:
    return _context_kernel().encode(_flat_labels(labels, header), header.width, header.height, header.k, CONTEXT1_MODEL)


#: Every context-coded label costs at least 0.0013 bits (no model probability exceeds 65475/65536),
#: so a valid stream of n labels has at least n / 5970 bytes; shorter ones are rejected before the labels are allocated.
CONTEXT_MIN_PIXELS_PER_BYTE = 16384


def _context_min_bytes(pixels: int) -> int:
    return pixels // CONTEXT_MIN_PIXELS_PER_BYTE


def _decode_stream(kernel, stream, width: int, height: int, k: int, out: np.ndarray, model: int) -> None:
    """Decode one context stream of width x height labels into out, turning the kernel's complaint into CodingError."""
    try:
        kernel.decode(stream, width, height, k, out, model)
    except ValueError as exc:
        raise CodingError(f"the context stream cannot be decoded: {exc}") from None


def _context_decode(payload: bytes, header: Header) -> np.ndarray:
    kernel = _context_kernel()
    if header.k > 1 and len(payload) < _context_min_bytes(header.pixel_count):
        raise CodingError(
            f"payload: a context stream of {len(payload)} bytes cannot hold {header.pixel_count} labels "
            f"(at least 1 byte per {CONTEXT_MIN_PIXELS_PER_BYTE} labels)"
        )
    out = np.empty(header.pixel_count, dtype=label_dtype(header.label_bits))
    try:
        _decode_stream(kernel, payload, header.width, header.height, header.k, out, CONTEXT1_MODEL)
    except CodingError as exc:
        raise CodingError(f"payload: {exc}") from None
    return out


def _single_colour(payload: bytes, header: Header, name: str) -> np.ndarray:
    """The labels of a k = 1 image in a banded coding (spec 5.3-5.5): all 0, from a payload that must be empty."""
    if payload:
        raise CodingError(f"payload: a k = 1 {name} payload must be empty, this one has {len(payload)} bytes")
    return np.zeros(header.pixel_count, dtype=label_dtype(header.label_bits))


def _banded_encoder(model: int) -> Callable[[np.ndarray, Header], bytes]:
    """The encoder of a banded context coding (spec 5.3): every band coded with `model`."""
    def encode(labels: np.ndarray, header: Header) -> bytes:
        kernel = _context_kernel()
        if header.k == 1:
            return b""
        width, k = header.width, header.k
        return banded.encode_bands(_flat_labels(labels, header), width, header.height,
                                   lambda band, rows: kernel.encode(band, width, rows, k, model))
    return encode


def _banded_decoder(model: int) -> Callable[..., np.ndarray]:
    """The decoder of a banded context coding (spec 5.3): bands decoded with `model` on up to `workers` threads."""
    def decode(payload: bytes, header: Header, workers: int | None = None) -> np.ndarray:
        kernel = _context_kernel()
        if header.k == 1:
            return _single_colour(payload, header, "banded context")
        width, k = header.width, header.k
        parts = banded.split_bands(payload, width, header.height, _context_min_bytes)
        out = np.empty(header.pixel_count, dtype=label_dtype(header.label_bits))
        banded.decode_bands(parts, width, out,
                            lambda stream, rows, band: _decode_stream(kernel, stream, width, rows, k, band, model),
                            workers=workers)
        return out
    return decode


def _encode_columns(labels: np.ndarray, header: Header, model: int) -> bytes:
    """Coding 6 with one model (spec 5.5): the model byte, then the band table and streams of the transposed label
    image, whose rows are the image's columns (each band's columns transposed in C as its thread codes it)."""
    kernel = _context_kernel()
    if header.k == 1:
        return b""
    width, height, k = header.width, header.height, header.k
    grid = _flat_labels(labels, header).reshape(height, width)

    def code_columns(start: int, stop: int) -> bytes:
        band = np.empty((stop - start, height), dtype=grid.dtype)
        kernel.transpose(grid[:, start:stop], band)
        return kernel.encode(band, height, stop - start, k, model)

    return bytes([model]) + banded.encode_band_streams(height, width, code_columns)


def _columns_encode(labels: np.ndarray, header: Header) -> bytes:
    """Coding 6 as `--coding context-columns` writes it: with the model auto would weigh (both, on small images,
    keeping the smaller)."""
    payloads = _at_once([lambda model=model: _encode_columns(labels, header, model) for model in _models_for(header)])
    return min(payloads, key=len)


def _columns_decode(payload: bytes, header: Header, workers: int | None = None) -> np.ndarray:
    """Decode coding 6 (spec 5.5): check the model byte and the band table, decode each band of columns into a
    scratch array in its thread and transpose it into place."""
    kernel = _context_kernel()
    if header.k == 1:
        return _single_colour(payload, header, "context-columns")
    if not payload:
        raise CodingError("payload: a context-columns payload is empty; it starts with its model byte (4 or 5)")
    model = payload[0]
    if model not in COLUMN_MODELS:
        raise CodingError(f"payload: model {model} at payload offset 0 is not 4 or 5")
    parts = banded.split_bands(memoryview(payload)[1:], header.height, header.width, _context_min_bytes,
                               unit="columns", offset=1)
    return _decode_band_parts(kernel, parts, header, model, True, workers)


def _decode_band_parts(kernel, parts: list[tuple[int, int, memoryview]], header: Header, model: int, columns: bool,
                       workers: int | None) -> np.ndarray:
    """The labels of checked bands (banded.split_bands or split_sized_bands), decoded with `model` in parallel
    threads: bands of rows straight into place, bands of columns into a scratch array that their thread transposes
    into place (codings 6 and 7)."""
    width, height, k = header.width, header.height, header.k
    out = np.empty(header.pixel_count, dtype=label_dtype(header.label_bits))  # only once the band table holds up
    grid = out.reshape(height, width)

    def decode_rows(stream: memoryview, start: int, stop: int) -> None:
        if columns:
            band = np.empty((stop - start, height), dtype=out.dtype)
            _decode_stream(kernel, stream, height, stop - start, k, band, model)
            kernel.transpose(band, grid[:, start:stop])
        else:
            _decode_stream(kernel, stream, width, stop - start, k, out[start * width : stop * width], model)

    banded.decode_band_streams(parts, decode_rows, workers=workers, unit="columns" if columns else "rows")
    return out


def _row_costs(image: np.ndarray, k: int, model: int) -> np.ndarray:
    """Each row's estimated decoding cost under `model` (the kernel's row_costs), the rows cut in one chunk per core."""
    kernel = _context_kernel()
    height, width = image.shape
    costs = np.empty(height, dtype=np.uint64)
    cores = max(1, min(parallel.available_cores(), height))
    edges = [i * height // cores for i in range(cores + 1)]
    _at_once([lambda a=a, b=b: kernel.row_costs(image[a:b], width, b - a, k, costs[a:b], model)
              for a, b in zip(edges[:-1], edges[1:])])
    return costs


def _encode_context3(labels: np.ndarray, header: Header, model: int, columns: bool) -> bytes:
    """Coding 7 with one model and orientation (spec 5.6): the orientation and model bytes, then the bands of the
    label image (or of its transpose, whose rows are the image's columns) cut where their estimated decoding
    costs balance, so that the threads that decode them finish together."""
    kernel = _context_kernel()
    if header.k == 1:
        return b""
    width, height, k = header.width, header.height, header.k
    grid = _flat_labels(labels, header).reshape(height, width)
    if columns:  # transposed a strip of columns per core (16.8 MP: 15-17 ms on one core, 8 on two)
        image = np.empty((width, height), dtype=grid.dtype)
        strips = max(1, min(parallel.available_cores(), width))
        edges = [i * width // strips for i in range(strips + 1)]
        _at_once([lambda a=a, b=b: kernel.transpose(grid[:, a:b], image[a:b]) for a, b in zip(edges[:-1], edges[1:])])
    else:
        image = grid
    rows, row_width = image.shape
    bands = banded.band_count_for(row_width, rows)
    heights = [rows] if bands == 1 else banded.balanced_band_heights(_row_costs(image, k, model), bands)

    def code_rows(start: int, stop: int) -> bytes:
        return kernel.encode(image[start:stop], row_width, stop - start, k, model)

    return bytes([BY_COLUMNS if columns else BY_ROWS, model]) + banded.encode_sized_band_streams(
        row_width, heights, code_rows)


#: Model 7 takes model 4's place where at least this share of a centred window's labels is none of its neighbours
#: (W, N, NW, NE). Against model 4 on the corpus at k = 256 (one 2 MiP slice, one thread): pixels-l (80 % such
#: labels) -20 % encoding and -13 % decoding time for -0.1 % in size, hubble (81 %) -21 % and -0.2 %, china (40 %)
#: -6 % and -0.3 %, astronaut (26 %) -2 % and -0.4 %; flower, wood, grid, adwaita and retina (9-15 %) +3 to +24 %
#: in time and -0.2 to +0.5 % in size.
ESCAPE_FIRST_MIN_SHARE = 0.25
#: The window escape_share looks at: the centred block of at most this many labels.
ESCAPE_SAMPLE_LABELS = 1 << 18


def _centred_window(labels: np.ndarray, header: Header, target: int) -> np.ndarray:
    """The centred, about square block of about `target` labels (all of them on a small image), as a 2-D view."""
    width, height = header.width, header.height
    window_height = min(height, max(1, math.isqrt(target)))
    window_width = min(width, max(1, target // window_height))
    top, left = (height - window_height) // 2, (width - window_width) // 2
    grid = _flat_labels(labels, header).reshape(height, width)
    return grid[top : top + window_height, left : left + window_width]


def escape_share(labels: np.ndarray, header: Header) -> float:
    """The share of labels, in a centred window, that are none of their neighbours W, N, NW and NE (the labels a
    context model codes by their bits rather than by a question); 0 when the window has no inner pixels."""
    window = _centred_window(labels, header, min(header.pixel_count, ESCAPE_SAMPLE_LABELS))
    if window.shape[0] < 2 or window.shape[1] < 3:
        return 0.0
    inner = window[1:, 1:-1]
    named = ((inner == window[1:, :-2]) | (inner == window[:-1, 1:-1]) | (inner == window[:-1, :-2])
             | (inner == window[:-1, 2:]))
    return 1.0 - float(np.count_nonzero(named)) / named.size


def context3_models(labels: np.ndarray, header: Header) -> tuple[int, ...]:
    """The models coding 7 weighs: on small images 4, 5 and 6 (4 and 5 when labels are over 8 bits, which model 6
    does not code), and 7 too where escape_share is at least ESCAPE_FIRST_MIN_SHARE; on larger ones the one model
    the label width favours, as for codings 4 and 5 (context_codings_for): model 6 up to 6 bits, above that model 4,
    or model 7 where escapes abound (it codes them faster)."""
    escapes = escape_share(labels, header) >= ESCAPE_FIRST_MIN_SHARE
    if header.pixel_count <= AUTO_BOTH_CONTEXTS_MAX_LABELS:
        models = (BAND_MODEL, JOINT_BAND_MODEL) + ((CLIMB_MODEL,) if header.label_bits <= CLIMB_MODEL_MAX_BITS else ())
        return models + ((ESCAPE_FIRST_MODEL,) if escapes else ())
    if header.label_bits <= JOINT_MODEL_MAX_BITS:
        return (CLIMB_MODEL,)
    return (ESCAPE_FIRST_MODEL,) if escapes else (BAND_MODEL,)


def context3_jobs(labels: np.ndarray, header: Header, models: tuple[int, ...] | None = None) -> list[Callable[[], bytes]]:
    """The coding-7 payloads auto weighs, as jobs: every model of context3_models (or of `models`, its answer when
    the caller has it) in both orientations on small images; on larger ones the one model, in the orientation
    prefers_columns picks."""
    models = context3_models(labels, header) if models is None else models
    if len(models) > 1:
        return [lambda model=model, columns=columns: _encode_context3(labels, header, model, columns)
                for model in models for columns in (False, True)]
    return [one_context3_job(labels, header, models[0])[0]]


def one_context3_job(labels: np.ndarray, header: Header, model: int) -> tuple[Callable[[], bytes], float]:
    """The coding-7 job of one model, in the orientation whose centred window codes smaller (prefers_columns), and
    the payload size that window predicts (its smaller size scaled to the whole image)."""
    by_rows, by_columns, window_labels = window_sizes(labels, header, model)
    columns = by_columns < by_rows
    return (lambda: _encode_context3(labels, header, model, columns)), min(by_rows, by_columns) * (
        header.pixel_count / window_labels)


def shortest_form(payload: bytes, header: Header) -> tuple[Coding, bytes]:
    """A coding-7 payload in the shortest coding that holds it: a payload of model 4 or 5 whose bands are the
    equal ones of codings 4 to 6 is the same band streams as coding 4 or 5 (by rows) or 6 (by columns), with 5 or
    6 bytes less of header and table; anything else (models 6 and 7, or bands cut by cost) stays coding 7."""
    if header.k == 1 or payload[1] not in ROW_CODING_OF_MODEL:
        return CONTEXT3, payload
    columns, model = payload[0] == BY_COLUMNS, payload[1]
    (bands,) = struct.unpack_from(">H", payload, 2)
    heights = struct.unpack_from(f">{bands}I", payload, 4)
    rows = header.width if columns else header.height
    if [stop - start for start, stop in banded.band_rows(rows, bands)] != list(heights):
        return CONTEXT3, payload
    banded_payload = payload[2:4] + payload[4 + 4 * bands :]  # the band count, the lengths, the streams
    if columns:
        return CONTEXT_COLUMNS, bytes([model]) + banded_payload
    return ROW_CODING_OF_MODEL[model], banded_payload


def _context3_encode(labels: np.ndarray, header: Header) -> bytes:
    """Coding 7 as `--coding context3` writes it: the smallest of the payloads auto weighs (context3_jobs)."""
    if header.k == 1:
        return b""
    return min(_at_once(context3_jobs(labels, header)), key=len)


def _context3_decode(payload: bytes, header: Header, workers: int | None = None) -> np.ndarray:
    """Decode coding 7 (spec 5.6): check the orientation and model bytes and the band table, then decode the bands
    in parallel threads, each band of columns into a scratch array that its thread transposes into place."""
    kernel = _context_kernel()
    if header.k == 1:
        return _single_colour(payload, header, "context3")
    if len(payload) < 2:
        raise CodingError(f"payload: a context3 payload of {len(payload)} bytes has no orientation and model bytes "
                          f"(2 bytes at payload offset 0)")
    orientation, model = payload[0], payload[1]
    if orientation not in (BY_ROWS, BY_COLUMNS):
        raise CodingError(f"payload: orientation {orientation} at payload offset 0 is not 0 (rows) or 1 (columns)")
    if model not in CONTEXT3_MODELS:
        raise CodingError(f"payload: model {model} at payload offset 1 is not 4, 5, 6 or 7")
    if model == CLIMB_MODEL and header.label_bits > CLIMB_MODEL_MAX_BITS:
        raise CodingError(f"payload: model 6 at payload offset 1 codes labels of at most 8 bits, these have "
                          f"{header.label_bits} (k = {header.k})")
    columns = orientation == BY_COLUMNS
    row_width, rows = (header.height, header.width) if columns else (header.width, header.height)
    parts = banded.split_sized_bands(memoryview(payload)[2:], row_width, rows, _context_min_bytes,
                                     unit="columns" if columns else "rows", offset=2)
    return _decode_band_parts(kernel, parts, header, model, columns, workers)


#: The most payload bytes band_layout reads: coding 7's bytes and table at 64 bands.
LAYOUT_PREFIX_BYTES = 4 + 8 * banded.MAX_BANDS


def band_layout(prefix: bytes, header: Header) -> dict | None:
    """How a banded context payload (codings 4 to 7) cuts the image, from its first LAYOUT_PREFIX_BYTES bytes:
    orientation ("rows" or "columns"), model, and each band's rows (or columns); None for other codings, k = 1,
    or a prefix too short to say (a damaged file is the decoder's to report)."""
    if header.coding not in (CONTEXT.id, CONTEXT2.id, CONTEXT_COLUMNS.id, CONTEXT3.id) or header.k == 1:
        return None
    try:
        if header.coding == CONTEXT3.id:
            columns, model = prefix[0] == BY_COLUMNS, prefix[1]
            (bands,) = struct.unpack_from(">H", prefix, 2)
            heights = list(struct.unpack_from(f">{bands}I", prefix, 4))
        else:
            columns = header.coding == CONTEXT_COLUMNS.id
            model = prefix[0] if columns else BAND_MODEL if header.coding == CONTEXT.id else JOINT_BAND_MODEL
            (bands,) = struct.unpack_from(">H", prefix, 1 if columns else 0)
            heights = [stop - start for start, stop in banded.band_rows(header.width if columns else header.height, bands)]
    except (IndexError, struct.error):
        return None
    return {"orientation": "columns" if columns else "rows", "model": model, "band_heights": heights}


DEFLATE = Coding(1, "deflate", _deflate_encode, _deflate_decode, _any_length)
LZMA = Coding(2, "lzma", _lzma_encode, _lzma_decode, _any_length)
CONTEXT1 = Coding(3, "context1", _context_encode, _context_decode, _any_length)
CONTEXT = Coding(4, "context", _banded_encoder(BAND_MODEL), _banded_decoder(BAND_MODEL), _any_length)
CONTEXT2 = Coding(5, "context2", _banded_encoder(JOINT_BAND_MODEL), _banded_decoder(JOINT_BAND_MODEL), _any_length)
CONTEXT_COLUMNS = Coding(6, "context-columns", _columns_encode, _columns_decode, _any_length)
CONTEXT3 = Coding(7, "context3", _context3_encode, _context3_decode, _any_length)

CODINGS: dict[int, Coding] = {c.id: c for c in (RAW, DEFLATE, LZMA, CONTEXT1, CONTEXT, CONTEXT2, CONTEXT_COLUMNS,
                                                 CONTEXT3)}
CODINGS_BY_NAME: dict[str, Coding] = {c.name: c for c in CODINGS.values()}


def coding_for_id(coding_id: int) -> Coding:
    """Return the coding with this header id, or raise CodingError if it is not implemented."""
    try:
        return CODINGS[coding_id]
    except KeyError:
        known = ", ".join(f"{c.id} ({c.name})" for c in CODINGS.values())
        raise CodingError(f"header: unsupported coding {coding_id} at offset 10 (this decoder knows {known})") from None


#: auto weighs deflate and lzma in two steps. A level-1 deflate probe (3-15 ms on 4-16 MP, run beside the context
#: coder) overestimates deflate 9 by 1.07-2.8x on the corpus; where it is more than FIRST_PROBE_GATE times the
#: context payload, which settles most photos, neither is tried (on the corpus LZMA is at least 0.22x that probe
#: and never came within 1.4x of context there). Otherwise small images (up to AUTO_LZMA_MAX_LABELS labels) code
#: both, on two cores (tens of ms); on bigger ones a level-6 probe (within 1.24x of deflate 9 on every corpus
#: image, up to ~80 ms on 16.8 MP) decides whether deflate 9 (0.65 s on 16.8 MP labels) may come within
#: DEFLATE_WORTH_TRYING of context.
FIRST_PROBE_LEVEL = 1
PROBE_LEVEL = 6
DEFLATE_WORTH_TRYING = 1.25
FIRST_PROBE_GATE = 2.5


#: auto tries xz only up to this many labels: at preset 9 it costs about 2 s per million labels (31 s on a
#: 16.8 MP noise-like image, where it beat context by 2 %), far past the second auto may add to an encode.
AUTO_LZMA_MAX_LABELS = 1 << 19


#: auto's deflate probe compresses at most this many labels (in PROBE_BLOCKS row blocks spread over the
#: image) and scales the result up: on 16.8 MP a probe of every label took 0.6-0.9 s, a sample ~50 ms.
PROBE_LABELS = 1 << 20
PROBE_BLOCKS = 16
#: The level-6 probe (the second) compresses half as many labels as the first, in half as many blocks of the
#: same height (deflate starts each block cold: 16 blocks of half the height overestimated a 4 MP photo by 18 %):
#: zlib's level 6 takes 15-57 ms over PROBE_LABELS (2-5x level 1), and over half of them its estimate moved by at
#: most 0.14 of the context payload on the corpus images over 2^21 labels (k = 16, 64, 256), where the rule it
#: serves compares it with 1.25 and the nearest image is at 1.52.
SECOND_PROBE_LABELS = PROBE_LABELS // 2
SECOND_PROBE_BLOCKS = PROBE_BLOCKS // 2

#: On images over AUTO_BOTH_CONTEXTS_MAX_LABELS labels auto codes one banded context coding: context2
#: (model 5) up to this many label bits, context (model 4) above. On the corpus (tools/bench_size.py) model 5
#: is 0.6-21 % smaller at k = 16 and 64 on every image over 2^19 pixels, but -0.7 to +1.4 % on 0.3 MP photos
#: at k = 64 (too few pixels to fill its joint tables) and -6.9 to +3.4 % at k = 256 (larger on 10 of 12
#: images), where its joint tree contexts keep only the labels' top 6 bits. Smaller images get both, as
#: coding them is cheap.
JOINT_MODEL_MAX_BITS = 6
AUTO_BOTH_CONTEXTS_MAX_LABELS = 1 << 19


def context_codings_for(header: Header) -> tuple[Coding, ...]:
    """The banded context codings (by rows) auto weighs: both on small images, else the one the label width favours."""
    if header.pixel_count <= AUTO_BOTH_CONTEXTS_MAX_LABELS:
        return CONTEXT, CONTEXT2
    return (CONTEXT2,) if header.label_bits <= JOINT_MODEL_MAX_BITS else (CONTEXT,)


#: The row coding of each banded model; coding 6 holds either model's bands of columns.
ROW_CODING_OF_MODEL = {BAND_MODEL: CONTEXT, JOINT_BAND_MODEL: CONTEXT2}


def _models_for(header: Header) -> tuple[int, ...]:
    return tuple(BAND_MODEL if coding is CONTEXT else JOINT_BAND_MODEL for coding in context_codings_for(header))


#: On images over AUTO_BOTH_CONTEXTS_MAX_LABELS auto codes one orientation, rows (coding 4 or 5) or columns
#: (coding 6): the one that codes a centred window of the image smaller, a window of a 16th of the image and at
#: most this many labels, coded both ways on two cores (11 ms on a 4 MP photo at k = 64, 24 ms on pixels-l at
#: k = 256; 18-22 and 46 ms with a window of 2^18). On the corpus the window picked the smaller orientation
#: wherever the two differ by more than 1 % (wood, coffee and pixels-l, where columns are 2-5 % smaller, and grid,
#: where rows are 1-2 % smaller); where it picked wrong, they were within 0.9 %. A window of 2^17 labels (was 2^18)
#: picks as 2^18 and 2^16 do on every corpus image over 2^21 labels at k = 16, 64 and 256. Small images code both
#: orientations and keep the smaller.
ORIENTATION_SAMPLE_LABELS = 1 << 17
ORIENTATION_SAMPLE_FRACTION = 16


def prefers_columns(labels: np.ndarray, header: Header, model: int) -> bool:
    """Whether coding the labels by columns (coding 6) looks smaller than by rows, judged on a centred window."""
    by_rows, by_columns, _ = window_sizes(labels, header, model)
    return by_columns < by_rows


def window_sizes(labels: np.ndarray, header: Header, model: int) -> tuple[int, int, int]:
    """The bytes that `model` codes a centred window of the image in, by rows and by columns (on two cores), and the
    window's label count."""
    kernel = _context_kernel()
    k = header.k
    target = max(1, min(header.pixel_count // ORIENTATION_SAMPLE_FRACTION, ORIENTATION_SAMPLE_LABELS))
    window = np.ascontiguousarray(_centred_window(labels, header, target))
    window_height, window_width = window.shape
    transposed = np.empty((window_width, window_height), dtype=window.dtype)
    kernel.transpose(window, transposed)
    by_rows, by_columns = _at_once([
        lambda: kernel.encode(window, window_width, window_height, k, model),
        lambda: kernel.encode(transposed, window_height, window_width, k, model),
    ])
    return len(by_rows), len(by_columns), window.size


def probe_sample(labels: np.ndarray, header: Header, labels_wanted: int = PROBE_LABELS,
                 blocks: int = PROBE_BLOCKS) -> tuple[bytes, float]:
    """The label bytes a deflate probe compresses (every label, or about `labels_wanted` in `blocks` row blocks
    spread over the image) and the factor that scales a compressed size of them up to the whole image."""
    width, height = header.width, header.height
    rows_wanted = max(1, labels_wanted // width)
    if rows_wanted * 2 > height:
        return label_bytes(labels, header.label_bits), 1.0
    grid = np.asarray(labels).reshape(height, width)
    block = max(1, rows_wanted // blocks)
    starts = np.linspace(0, height - block, blocks).astype(int)
    sample = np.concatenate([grid[start : start + block] for start in starts])
    return label_bytes(sample, header.label_bits), height / sample.shape[0]


def deflate_probe(labels: np.ndarray, header: Header, level: int = PROBE_LEVEL,
                  sample: tuple[bytes, float] | None = None) -> float:
    """A quick estimate of deflate's size: `level` over probe_sample's bytes (pass them to reuse them), scaled up."""
    data, scale = probe_sample(labels, header) if sample is None else sample
    return len(zlib.compress(data, level)) * scale


def second_probe_size(labels: np.ndarray, header: Header) -> float:
    """auto's second estimate of deflate's size: level PROBE_LEVEL over a sample of SECOND_PROBE_LABELS labels."""
    sample = probe_sample(labels, header, SECOND_PROBE_LABELS, SECOND_PROBE_BLOCKS)
    return deflate_probe(labels, header, PROBE_LEVEL, sample)


def encode_labels(labels: np.ndarray, header: Header, coding: str) -> tuple[Coding, bytes]:
    """Code a flat label array with the named coding, or with the smallest of all for 'auto'; return both.

    auto always weighs raw (its size is known without packing) and coding 7 (context3_jobs): on small
    images three or four models (context3_models) in both orientations, on larger ones one model in the
    orientation prefers_columns picks, with the deflate probes beside its bands; a coding-7 payload that
    coding 4, 5 or 6 can hold (model 4 or 5 in equal bands) is written in that coding, a few bytes shorter
    (shortest_form). It weighs the standard-library codings where a probe says
    they may win: deflate, and lzma up to AUTO_LZMA_MAX_LABELS labels (see FIRST_PROBE_GATE). Without the
    context kernel it weighs both of those. Codings that do not depend on each other run at once, on all
    cores. Ties go to the lower coding id.
    """
    _check_below_k(labels, header.k)
    if coding != AUTO:
        chosen = coding_for_name(coding)
        return chosen, chosen.encode(labels, header)
    small = labels.size <= AUTO_LZMA_MAX_LABELS
    candidates: list[tuple[Coding, bytes | None]] = [(RAW, None)]  # raw is packed only if it wins
    later: list[Coding] = [LZMA, DEFLATE] if small else [DEFLATE]  # the longest first: threads take the next one free
    if _ctxcoder is not None:
        sample = probe_sample(labels, header)

        def probe() -> float:
            return deflate_probe(labels, header, FIRST_PROBE_LEVEL, sample)

        models = context3_models(labels, header)
        second_probe = None
        if len(models) > 1:  # small: every model by rows and by columns, one band each, and the probe, on all cores
            *payloads, first_probe = _at_once([*context3_jobs(labels, header, models), probe])
        else:  # the bands of the one context coding take every core; the probes run beside them
            job, estimate = one_context3_job(labels, header, models[0])

            def probes() -> tuple[float, float | None]:
                """The first probe, and the second where the window's estimate of the context size says the rule
                below will ask for it (the rule itself waits for the real size, and probes again if this guessed
                wrong)."""
                first = probe()
                wanted = not small and first < FIRST_PROBE_GATE * estimate
                return first, second_probe_size(labels, header) if wanted else None

            payload, (first_probe, second_probe) = _at_once([job, probes])
            payloads = [payload]
        candidates += [shortest_form(payload, header) for payload in payloads]
        context = len(min(payloads, key=len))

        def second() -> float:
            return second_probe_size(labels, header) if second_probe is None else second_probe

        if first_probe >= FIRST_PROBE_GATE * context or (not small and second() >= DEFLATE_WORTH_TRYING * context):
            later = []
    candidates += zip(later, _at_once([lambda c=c: c.encode(labels, header) for c in later]))
    raw_size = packed_size(header.pixel_count, header.label_bits)
    chosen, payload = min(candidates, key=lambda pair: (raw_size if pair[1] is None else len(pair[1]), pair[0].id))
    return chosen, RAW.encode(labels, header) if payload is None else payload


def _check_below_k(labels: np.ndarray, k: int) -> None:
    """Refuse labels >= k before any coding sees them: raw would store a wrong pixel, the others a file no decoder
    accepts. A KMQImage checks this when it is made; this catches labels changed behind its back (one pass over
    the labels, well under a millisecond at 4 MP)."""
    if labels.size and int(labels.max()) >= k:
        where = int(np.argmax(labels.reshape(-1) >= k))
        raise LabelError(f"label {int(labels.reshape(-1)[where])} at pixel {where} is not below k = {k}")


def _at_once(jobs: list[Callable[[], object]]) -> list:
    """Run independent jobs (coders that release the GIL) on all cores; their results in order."""
    return parallel.run_in_threads(jobs, parallel.available_cores())


def coding_for_name(name: str) -> Coding:
    """Return the coding with this name (as on the command line), or raise CodingError."""
    try:
        return CODINGS_BY_NAME[name]
    except KeyError:
        raise CodingError(f"unknown coding {name!r} (choose from {', '.join(CODINGS_BY_NAME)})") from None


def check_payload_length(header: Header) -> None:
    """Reject an unknown coding or an impossible payload length before the payload is read."""
    coding = coding_for_id(header.coding)
    expected = coding.expected_length(header)
    if expected is not None and header.payload_length != expected:
        raise HeaderError(
            f"header: payload_length is {header.payload_length} at offset 24, "
            f"a {coding.name} payload of {header.width}x{header.height} labels of {header.label_bits} bits "
            f"is {expected} bytes"
        )
