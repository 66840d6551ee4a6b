"""Read a plain 8-bit RGB or RGBA PNG on two cores: one thread inflates while another unfilters and counts colours.

Pillow decodes a PNG on one core, inflating and then unfiltering each piece in turn (0.30 s for a 16.8 MP photo
here), and the quantizer then counts its colours on one core (80 ms more). This reader splits that work into a
pipeline: a thread inflates the IDAT stream (with ISA-L's inflate, python-isal, where it is installed: 0.13 s
against zlib's 0.22 s on that photo), and the calling thread undoes the row filters and counts each new row's
colours in C (kmcodec._fastpath.png_rows) as the rows arrive.

It takes only the plain case, where its pixels are by construction those Pillow would give: bit depth 8, colour
type 2 (RGB) or 6 (RGBA), not interlaced, every chunk's CRC right but IDAT's (which Pillow does not check
either), nothing after IEND, and besides the image data only the few metadata chunks Pillow reads past, well
formed (FIXED_LENGTH_CHUNKS, tEXt, iCCP): nothing that could change the pixels or their orientation (PLTE,
tRNS, eXIf, APNG's chunks, an XMP or raw-EXIF text chunk) and nothing it does not know. Anything else, a
damaged file included, gives None, and the caller reads the file with Pillow, which applies every check and
says what is wrong. It never allocates more than the header declares, and only after the caller's pixel limit
and Pillow's own have been checked, and after the compressed data is large enough to hold that many pixels at
deflate's best ratio.
"""

from __future__ import annotations

import mmap
import queue
import struct
import threading
import zlib
from dataclasses import dataclass
from pathlib import Path

try:  # ISA-L's inflate: the same zlib streams, about 1.7x faster than zlib's here
    from isal import isal_zlib as _inflate
except ImportError:  # pragma: no cover - python-isal is a dependency; zlib does the same job more slowly
    _inflate = zlib

try:
    from . import _fastpath as _c
except ImportError:  # pragma: no cover - without the C extension every PNG goes to Pillow
    _c = None

SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: Ancillary chunks read past, with the only body length each may have: they change nothing of the pixels or
#: their orientation, and Pillow reads them as metadata, refusing some of them when cut short (gAMA, pHYs).
#: Any other chunk, these with another length, or any of them after the image data (but tEXt and tIME, which
#: Pillow reads there too), sends the file to Pillow.
FIXED_LENGTH_CHUNKS = {b"gAMA": 4, b"cHRM": 32, b"sRGB": 1, b"pHYs": 9, b"bKGD": 6, b"tIME": 7}
AFTER_IMAGE_CHUNKS = frozenset([b"tEXt", b"tIME"])
#: Text keywords Pillow takes an orientation from (Image.getexif): EXIF stored as text under "exif" (which
#: PngImagePlugin keeps as the image's EXIF) or as a raw profile, and XMP.
ORIENTING_KEYWORDS = (b"exif", b"Raw profile type", b"XML:com.adobe.xmp")
#: The most text a file read here may carry (Pillow refuses more than 64 MB; the reader gives back far less).
MAX_TEXT_BYTES = 1 << 20
#: Pillow refuses an ICC profile that inflates to more than this (PngImagePlugin.MAX_TEXT_CHUNK).
MAX_ICC_PROFILE_BYTES = 1 << 20
#: Colour types read here, with their bytes a pixel: RGB and RGBA.
CHANNELS_OF_COLOUR_TYPE = {2: 3, 6: 4}
#: deflate never expands data by more than this factor (its longest match, 258 bytes, in a code of 2 bits
#: or more); a stream shorter than expected/this cannot hold the picture, and is left to Pillow at once.
DEFLATE_MAX_RATIO = 1032
#: The reader counts an RGB picture's colours only above this many pixels: below it the quantizer's histogram
#: sorts the keys in a few milliseconds, and a count table's 64 MiB would cost more (fastpath's
#: HISTOGRAM_SORT_MAX_PIXELS).
COUNT_MIN_PIXELS = 1 << 20
#: Inflated bytes handed from the inflating thread to the unfiltering one at a time, and how many such pieces
#: may wait: the pipeline holds at most about 16 MiB besides the picture.
PIECE_BYTES = 1048576
PIECES_WAITING = 16
#: Compressed bytes given to the inflater at a time, at least (_blocks).
INPUT_BLOCK_BYTES = 1 << 20


@dataclass(frozen=True)
class DecodedPNG:
    """A PNG's pixels, (height, width, channels) row-major in `pixels`, and for an RGB picture of more than
    COUNT_MIN_PIXELS its colour counts: `keys` (u32 bytes, 24-bit colours ascending) and `counts` (i64
    bytes), as fastpath.histogram_rgb gives them (else None)."""

    width: int
    height: int
    channels: int
    pixels: mmap.mmap
    keys: bytes | None
    counts: bytes | None


@dataclass(frozen=True)
class _Layout:
    width: int
    height: int
    channels: int
    idat: list[memoryview]


def _chunks(data: mmap.mmap):
    """(type, body) of each chunk after the signature, up to and including IEND; ValueError for any damage that
    Pillow would refuse too (IDAT's CRCs aside: see below)."""
    view = memoryview(data)
    pos = len(SIGNATURE)
    while True:
        if pos + 12 > len(data):
            raise ValueError("truncated chunk")
        length, kind = struct.unpack_from(">I4s", data, pos)
        end = pos + 12 + length
        if length > 0x7FFFFFFF or end > len(data):
            raise ValueError("truncated chunk")
        body = view[pos + 8 : end - 4]
        # IDAT's CRCs are not checked, as Pillow does not check them: the zlib stream's own Adler-32 covers the
        # data, and a check here would hand the GIL over once per chunk while the main thread imports
        if kind != b"IDAT" and zlib.crc32(body, zlib.crc32(kind)) != struct.unpack_from(">I", data, end - 4)[0]:
            raise ValueError("chunk CRC mismatch")
        yield kind, body
        pos = end
        if kind == b"IEND":
            if pos != len(data):
                raise ValueError("bytes after IEND")
            return


def _plain_layout(data: mmap.mmap) -> _Layout | None:
    """The layout of a PNG this reader takes (module docstring), or None."""
    if data[: len(SIGNATURE)] != SIGNATURE:
        return None
    try:
        chunks = list(_chunks(data))
    except ValueError:
        return None
    if len(chunks) < 3 or chunks[0][0] != b"IHDR" or len(chunks[0][1]) != 13:
        return None
    width, height, depth, colour_type, compression, filtering, interlace = struct.unpack(">IIBBBBB", chunks[0][1])
    channels = CHANNELS_OF_COLOUR_TYPE.get(colour_type)
    if channels is None or depth != 8 or compression or filtering or interlace or not width or not height:
        return None
    if len(chunks[-1][1]):
        return None  # IEND carries nothing
    if sum(len(body) for kind, body in chunks if kind == b"tEXt") > MAX_TEXT_BYTES:
        return None
    idat: list[memoryview] = []
    idat_done = False
    for kind, body in chunks[1:-1]:
        if kind == b"IDAT":
            if idat_done:
                return None  # IDAT chunks must be consecutive
            idat.append(body)
            continue
        idat_done = bool(idat)
        if (idat_done and kind not in AFTER_IMAGE_CHUNKS) or not _harmless(kind, body):
            return None
    if not idat:
        return None
    return _Layout(width, height, channels, idat)


def _harmless(kind: bytes, body: memoryview) -> bool:
    """Whether an ancillary chunk is one this reader reads past (FIXED_LENGTH_CHUNKS, tEXt, iCCP) and well formed
    as Pillow wants it: a text chunk not one Pillow takes an orientation from, an ICC profile that inflates."""
    if kind in FIXED_LENGTH_CHUNKS:
        return len(body) == FIXED_LENGTH_CHUNKS[kind]
    if kind == b"tEXt":  # the keyword runs to the first NUL, or is the whole chunk (as Pillow reads it)
        keyword = bytes(body).split(b"\0", 1)[0]
        return not keyword.startswith(ORIENTING_KEYWORDS)
    if kind == b"iCCP":
        name_end = bytes(body[:80]).find(b"\0")
        if name_end < 1 or len(body) < name_end + 2 or body[name_end + 1] != 0:  # a name, then method 0
            return False
        inflater = zlib.decompressobj()
        try:
            inflater.decompress(body[name_end + 2 :], MAX_ICC_PROFILE_BYTES)
        except zlib.error:
            return False
        return not inflater.unconsumed_tail
    return False


def read_png(path: Path, max_pixels: int | None) -> DecodedPNG | None:
    """The pixels of the plain PNG at `path` (module docstring), or None: not such a PNG, damaged, above
    `max_pixels`, or without the C extension. Runs on the calling thread and one more."""
    if _c is None:
        return None
    try:  # mapped, not read: the pages come in as the CRC check and the inflater reach them
        with open(path, "rb") as handle:
            data = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
    except (OSError, ValueError):  # ValueError: an empty file cannot be mapped
        return None
    layout = _plain_layout(data)
    if layout is None:
        return None
    width, height, channels = layout.width, layout.height, layout.channels
    if max_pixels is not None and width * height > max_pixels:
        return None
    row_bytes = width * channels
    expected = height * (row_bytes + 1)
    if sum(len(part) for part in layout.idat) * DEFLATE_MAX_RATIO < expected:
        return None
    pixels = mmap.mmap(-1, height * row_bytes)  # zero pages, given out as the rows are written
    counted = channels == 3 and width * height > COUNT_MIN_PIXELS
    counter = _unfilter_while_inflating(layout, pixels, counted, expected)
    if counter is None:
        return None
    if not counted:
        return DecodedPNG(width, height, channels, pixels, None, None)
    keys, counts = _c.colour_counts(counter)
    return DecodedPNG(width, height, channels, pixels, keys, counts)


def _unfilter_while_inflating(layout: _Layout, pixels: mmap.mmap, counted: bool, expected: int):
    """Inflate the IDAT stream on a thread and unfilter its rows here as they come, counting their colours if
    `counted`; the colour counter (or False when not counting) if the stream held exactly the picture's rows
    and its filters were all valid, else None."""
    pieces: queue.Queue = queue.Queue(PIECES_WAITING)
    stop = threading.Event()
    outcome: list[bool] = []

    def inflate() -> None:
        ok = False
        try:
            ok = _inflate_into(layout.idat, expected, pieces, stop)
        except Exception:  # noqa: BLE001 - a damaged stream: the caller reads the file with Pillow
            ok = False
        finally:
            outcome.append(ok)
            _put(pieces, None, stop)

    thread = threading.Thread(target=inflate, name="kmcodec-inflate", daemon=True)
    thread.start()
    counter = None
    row_stride = layout.width * layout.channels + 1
    carry = bytearray()  # the start of a row whose end is in the next piece
    row = 0
    try:
        counter = _c.colour_counter() if counted else None  # 64 MiB mapped while the first piece inflates
        while True:
            piece = pieces.get()
            if piece is None:
                break
            start = 0
            if carry:
                start = min(row_stride - len(carry), len(piece))
                carry += piece[:start]
                if len(carry) < row_stride:
                    continue
                if row >= layout.height:
                    return None
                _c.png_rows(carry, 1, layout.width, layout.channels, pixels, row, counter)
                carry.clear()
                row += 1
            rows = (len(piece) - start) // row_stride
            if rows:
                if row + rows > layout.height:
                    return None
                _c.png_rows(memoryview(piece)[start : start + rows * row_stride], rows, layout.width,
                            layout.channels, pixels, row, counter)
                row += rows
            carry += piece[start + rows * row_stride :]
    except ValueError:  # a filter type above 4
        return None
    finally:
        stop.set()
        while thread.is_alive():  # let a blocked put() finish so the thread can end
            try:
                pieces.get_nowait()
            except queue.Empty:
                thread.join(0.001)
        thread.join()
    if not (outcome and outcome[0]) or row != layout.height or carry:
        return None
    return counter if counted else False


def _put(pieces: queue.Queue, item: bytes | None, stop: threading.Event) -> bool:
    """Hand a piece over, unless the reader has stopped; False then."""
    while not stop.is_set():
        try:
            pieces.put(item, timeout=0.05)
            return True
        except queue.Full:
            continue
    return False


def _blocks(idat: list[memoryview]):
    """The IDAT chunks' data, small chunks joined into blocks of about INPUT_BLOCK_BYTES: one inflate call a
    block, where a writer's chunks of 8-64 KiB would make hundreds, each handing the GIL over. A chunk that is a
    block by itself is passed as it is, without a copy."""
    block: list[memoryview] = []
    size = 0
    for part in idat:
        block.append(part)
        size += len(part)
        if size >= INPUT_BLOCK_BYTES:
            yield block[0] if len(block) == 1 else b"".join(block)
            block, size = [], 0
    if block:
        yield block[0] if len(block) == 1 else b"".join(block)


def _inflate_into(idat: list[memoryview], expected: int, pieces: queue.Queue, stop: threading.Event) -> bool:
    """Inflate the IDAT chunks' zlib stream into pieces of at most PIECE_BYTES; True when it ends exactly after
    `expected` bytes (never inflating more than one piece past them)."""
    inflater = _inflate.decompressobj()
    produced = 0
    for data in _blocks(idat):
        if inflater.eof:
            return False  # the stream ended before the last IDAT chunk
        while data:
            piece = inflater.decompress(data, PIECE_BYTES)
            if not piece and len(inflater.unconsumed_tail) == len(data):
                return False  # no progress (not seen; a guard against spinning)
            data = inflater.unconsumed_tail
            produced += len(piece)
            if produced > expected or (inflater.eof and (data or inflater.unused_data)):
                return False
            if piece and not _put(pieces, piece, stop):
                return False
            if inflater.eof:
                break
    while not inflater.eof:  # input used up; output may still be held back inside the inflater
        piece = inflater.decompress(b"", PIECE_BYTES)
        if not piece:
            return False  # the stream is cut short
        produced += len(piece)
        if produced > expected or not _put(pieces, piece, stop):
            return False
    return produced == expected
