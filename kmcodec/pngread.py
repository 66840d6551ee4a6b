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
tRNS, eXIf, APNG's chunks, a text chunk Pillow takes EXIF or XMP from) and nothing it does not know. Anything else, a
damaged file included, gives None, and the caller reads the file with Pillow, which applies every check and
says what is wrong. It never allocates more than the header declares, and only after the caller's pixel limit
and Pillow's own have been checked and the file is long enough to hold that many pixels at deflate's best
ratio; it reads metadata chunks of at most MAX_METADATA_BYTES, and the image data in blocks.
"""

from __future__ import annotations

import mmap
import os
import queue
import struct
import threading
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Iterator

try:  # ISA-L's inflate: the same zlib streams, about 1.7x faster than zlib's here
    from isal import isal_zlib as _inflate
except ImportError:  # pragma: no cover - python-isal is a dependency; zlib does the same job more slowly
    _inflate = zlib

try:
    from . import _fastpath as _c
except ImportError:  # pragma: no cover - without the C extension every PNG goes to Pillow
    _c = None

if TYPE_CHECKING:  # numpy is imported where the pixels are handed over, not when a prefetch thread starts
    import numpy as np

    from .quantizer import ColourHistogram

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
#: The most text a file read here may carry (Pillow refuses more than 64 MB; the reader gives back far less),
#: the largest metadata chunk it reads, and how many metadata chunks it reads before or after the image data.
MAX_TEXT_BYTES = 1 << 20
MAX_METADATA_BYTES = 1 << 20
MAX_METADATA_CHUNKS = 256
#: Pillow refuses an ICC profile that inflates to more than this (PngImagePlugin.MAX_TEXT_CHUNK).
MAX_ICC_PROFILE_BYTES = 1 << 20
#: Colour types read here, with their bytes a pixel: RGB and RGBA.
CHANNELS_OF_COLOUR_TYPE = {2: 3, 6: 4}
#: deflate never expands data by more than this factor (its longest match, 258 bytes, in a code of 2 bits
#: or more); a file shorter than the picture's rows / this cannot hold them, and is left to Pillow at once.
DEFLATE_MAX_RATIO = 1032
#: The reader counts an RGB picture's colours only above this many pixels: below it the quantizer's histogram
#: sorts the keys in a few milliseconds, and a count table's 64 MiB would cost more (fastpath's
#: HISTOGRAM_SORT_MAX_PIXELS).
COUNT_MIN_PIXELS = 1 << 20
#: Inflated bytes handed from the inflating thread to the unfiltering one at a time, and how many such pieces
#: may wait: the pipeline holds at most about 16 MiB besides the picture.
PIECE_BYTES = 1 << 20
PIECES_WAITING = 16
#: Compressed bytes given to the inflater at a time (_idat_blocks).
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

    def array(self) -> np.ndarray:
        """The pixels as a read-only (height, width, channels) uint8 numpy array over the reader's memory (numpy
        is imported here, so that a prefetch thread's read does not wait for it)."""
        import numpy as np

        pixels = np.frombuffer(self.pixels, dtype=np.uint8).reshape(self.height, self.width, self.channels)
        pixels.flags.writeable = False
        return pixels

    def histogram(self) -> ColourHistogram | None:
        """The colour counts as the quantizer's ColourHistogram, or None where the reader did not count them."""
        if self.keys is None:
            return None
        import numpy as np

        from .quantizer import rgb_histogram

        return rgb_histogram(np.frombuffer(self.keys, dtype=np.uint32), np.frombuffer(self.counts, dtype=np.int64))


@dataclass(frozen=True)
class _Layout:
    """What the chunks before the image data say: the picture's size and channels, the first IDAT chunk's
    length (the file is read up to its body), and the text seen so far."""

    width: int
    height: int
    channels: int
    first_idat_length: int
    text_bytes: int


def _chunk_header(handle: BinaryIO) -> tuple[int, bytes]:
    """(body length, type) of the next chunk; ValueError if the file ends or the length is not PNG's."""
    header = handle.read(8)
    if len(header) < 8:
        raise ValueError("truncated chunk")
    length, kind = struct.unpack(">I4s", header)
    if length > 0x7FFFFFFF:
        raise ValueError("chunk length over 2^31 - 1")
    return length, kind


def _checked_body(handle: BinaryIO, length: int, kind: bytes) -> bytes:
    """The body of a metadata chunk (at most MAX_METADATA_BYTES), its CRC checked; ValueError otherwise."""
    if length > MAX_METADATA_BYTES:
        raise ValueError("metadata chunk too large for this reader")
    data = handle.read(length + 4)
    if len(data) < length + 4:
        raise ValueError("truncated chunk")
    body = data[:length]
    if zlib.crc32(body, zlib.crc32(kind)) != struct.unpack_from(">I", data, length)[0]:
        raise ValueError("chunk CRC mismatch")
    return body


def _read_head(handle: BinaryIO) -> _Layout:
    """Read a PNG up to the body of its first IDAT chunk; its layout if it is one this reader takes (module
    docstring) so far. ValueError for anything else, damage included."""
    if handle.read(len(SIGNATURE)) != SIGNATURE:
        raise ValueError("not a PNG")
    length, kind = _chunk_header(handle)
    if kind != b"IHDR" or length != 13:
        raise ValueError("no IHDR first")
    width, height, depth, colour_type, compression, filtering, interlace = struct.unpack(
        ">IIBBBBB", _checked_body(handle, length, kind))
    channels = CHANNELS_OF_COLOUR_TYPE.get(colour_type)
    if channels is None or depth != 8 or compression or filtering or interlace or not width or not height:
        raise ValueError("not 8-bit RGB or RGBA, or interlaced")
    text_bytes = 0
    for _ in range(MAX_METADATA_CHUNKS):
        length, kind = _chunk_header(handle)
        if kind == b"IDAT":
            return _Layout(width, height, channels, length, text_bytes)
        text_bytes = _read_metadata(handle, length, kind, text_bytes, before_image=True)
    raise ValueError("too many chunks")


def _check_tail(handle: BinaryIO, length: int, kind: bytes, text_bytes: int) -> None:
    """Read the chunks after the image data, from the header (length, kind) already read, to IEND and the end of
    the file; ValueError unless they are ones this reader takes there (AFTER_IMAGE_CHUNKS) and IEND is empty."""
    for _ in range(MAX_METADATA_CHUNKS):
        if kind == b"IEND":
            if length or _checked_body(handle, length, kind) or handle.read(1):
                raise ValueError("IEND with a body, or bytes after IEND")
            return
        text_bytes = _read_metadata(handle, length, kind, text_bytes, before_image=False)
        length, kind = _chunk_header(handle)
    raise ValueError("too many chunks")


def _read_metadata(handle: BinaryIO, length: int, kind: bytes, text_bytes: int, before_image: bool) -> int:
    """Read one metadata chunk and check it is one this reader reads past there (_harmless; after the image data
    only AFTER_IMAGE_CHUNKS) within the text budget; the text read so far, this chunk's included. ValueError
    otherwise."""
    body = _checked_body(handle, length, kind)
    text_bytes += len(body) if kind == b"tEXt" else 0
    if not (before_image or kind in AFTER_IMAGE_CHUNKS) or not _harmless(kind, body) or text_bytes > MAX_TEXT_BYTES:
        raise ValueError(f"{kind!r} is not a chunk this reader takes there")
    return text_bytes


def _harmless(kind: bytes, body: bytes) -> bool:
    """Whether an ancillary chunk is one this reader reads past (FIXED_LENGTH_CHUNKS, tEXt, iCCP) and well formed
    as Pillow wants it: a text chunk not one Pillow takes an orientation from, an ICC profile that inflates."""
    if kind in FIXED_LENGTH_CHUNKS:
        return len(body) == FIXED_LENGTH_CHUNKS[kind]
    if kind == b"tEXt":  # the keyword runs to the first NUL, or is the whole chunk (as Pillow reads it)
        keyword = body.split(b"\0", 1)[0]
        return not keyword.startswith(ORIENTING_KEYWORDS)
    if kind == b"iCCP":
        name_end = body[:80].find(b"\0")
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
    """The pixels of the plain PNG at `path` (module docstring), or None: not a regular file, not such a PNG,
    damaged, above `max_pixels`, or without the C extension. Runs on the calling thread and one more.

    The file is read, not mapped: a mapped file cut short by another program while it is read would kill the
    process (SIGBUS) where a read only comes up short."""
    if _c is None or not path.is_file():  # a FIFO can be read once only (and its open waits for a writer)
        return None
    try:
        handle = open(path, "rb")  # noqa: SIM115 - closed below, after the inflating thread has ended
    except OSError:
        return None
    with handle:
        try:
            layout = _read_head(handle)
            file_bytes = os.fstat(handle.fileno()).st_size
        except (OSError, ValueError):  # not a PNG this reader takes, or damaged: Pillow reads it
            return None
        width, height, channels = layout.width, layout.height, layout.channels
        if max_pixels is not None and width * height > max_pixels:
            return None
        row_bytes = width * channels
        expected = height * (row_bytes + 1)
        if file_bytes * DEFLATE_MAX_RATIO < expected:
            return None
        pixels = mmap.mmap(-1, height * row_bytes)  # zero pages, given out as the rows are written
        counted = channels == 3 and width * height > COUNT_MIN_PIXELS
        read, counter = _unfilter_while_inflating(handle, layout, pixels, counted, expected)
    if not read:
        return None
    if counter is None:
        return DecodedPNG(width, height, channels, pixels, None, None)
    keys, counts = _c.colour_counts(counter)
    return DecodedPNG(width, height, channels, pixels, keys, counts)


def _unfilter_while_inflating(handle: BinaryIO, layout: _Layout, pixels: mmap.mmap, counted: bool, expected: int):
    """Read and inflate the IDAT stream on a thread, from `handle` at the first IDAT chunk's body on, and unfilter
    its rows here as they come, counting their colours if `counted`. Returns (whether the stream held exactly the
    picture's rows, its filters were all valid and the chunks after it are ones this reader takes; the colour
    counter, or None when not counting)."""
    pieces: queue.Queue = queue.Queue(PIECES_WAITING)
    stop = threading.Event()
    outcome: list[bool] = []

    def inflate() -> None:
        ok = False
        try:
            ok = _inflate_into(_idat_blocks(handle, layout), expected, pieces, stop)
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
                    return False, None
                _c.png_rows(carry, 1, layout.width, layout.channels, pixels, row, counter)
                carry.clear()
                row += 1
            rows = (len(piece) - start) // row_stride
            if rows:
                if row + rows > layout.height:
                    return False, None
                _c.png_rows(memoryview(piece)[start : start + rows * row_stride], rows, layout.width,
                            layout.channels, pixels, row, counter)
                row += rows
            carry += piece[start + rows * row_stride :]
    except ValueError:  # a filter type above 4
        return False, None
    finally:
        stop.set()
        while thread.is_alive():  # let a blocked put() finish so the thread can end
            try:
                pieces.get_nowait()
            except queue.Empty:
                thread.join(0.001)
        thread.join()
    return bool(outcome and outcome[0]) and row == layout.height and not carry, counter


def _put(pieces: queue.Queue, item: bytes | None, stop: threading.Event) -> bool:
    """Hand a piece over, unless the reader has stopped; False then."""
    while not stop.is_set():
        try:
            pieces.put(item, timeout=0.05)
            return True
        except queue.Full:
            continue
    return False


def _idat_blocks(handle: BinaryIO, layout: _Layout) -> Iterator[bytearray]:
    """The IDAT chunks' data read from `handle` (at the first one's body) in blocks of INPUT_BLOCK_BYTES (the
    last one shorter), whatever the chunks' sizes: one inflate call a block, where a writer's chunks of 8-64 KiB
    would make hundreds, each handing the GIL over. After the last block, the chunks after the image data are
    read and checked (_check_tail); ValueError for damage. IDAT's CRCs are skipped, as Pillow skips them: the
    zlib stream's Adler-32 covers the data."""
    block = bytearray(INPUT_BLOCK_BYTES)
    filled = 0
    length = layout.first_idat_length
    while True:
        while length:
            got = handle.readinto(memoryview(block)[filled : filled + min(length, INPUT_BLOCK_BYTES - filled)])
            if not got:
                raise ValueError("truncated IDAT chunk")
            filled += got
            length -= got
            if filled == INPUT_BLOCK_BYTES:
                yield block
                block, filled = bytearray(INPUT_BLOCK_BYTES), 0
        if len(handle.read(4)) < 4:  # the CRC
            raise ValueError("truncated IDAT chunk")
        length, kind = _chunk_header(handle)
        if kind != b"IDAT":
            break
    if filled:
        yield block[:filled]
    _check_tail(handle, length, kind, layout.text_bytes)


def _inflate_into(blocks: Iterator[bytearray], expected: int, pieces: queue.Queue, stop: threading.Event) -> bool:
    """Inflate the zlib stream in `blocks` into pieces of at most PIECE_BYTES; True when it ends exactly after
    `expected` bytes, with the last block (never inflating more than one piece past them)."""
    inflater = _inflate.decompressobj()
    produced = 0
    for data in blocks:
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
