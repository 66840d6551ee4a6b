"""Decode an input PNG or JPEG on a background thread while the main thread loads numpy and the codec.

A whole `kmcodec encode` of a 4 MP photo spends ~0.1 s decoding the PNG (~20 ms a JPEG)
and ~0.1 s importing numpy; the decoders release the GIL, so the two overlap. A plain 8-bit
RGB(A) PNG is read by pngread.py, on this thread and one more, which also counts an RGB
picture's colours for the quantizer; any other PNG, and a JPEG, by Pillow. With Pillow, the
picture is decoded into one block of memory, so that an RGB or RGBA picture's pixels reach
the quantizer as a view of Pillow's own 4-byte pixels (fastpath.arrow_pixels) instead of
a 12 MB copy (16 ms on a 4 MP photo, 76 ms at 16.8 MP).
Only a PNG or JPEG whose header (PNG's IHDR, JPEG's start-of-frame) declares no more pixels
than the caller's limit and Pillow's own bomb limit is prefetched, so nothing is decoded
before the limits are known to hold; anything else, and any failure, leaves the picture to
the normal path (imageio), which applies every check and says what is wrong.
"""

from __future__ import annotations

import contextlib
import struct
import threading
from pathlib import Path

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_JPEG_SIGNATURE = b"\xff\xd8"
#: JPEG start-of-frame markers (baseline, progressive, lossless, arithmetic): every 0xC0-0xCF but DHT, JPG and DAC.
_JPEG_FRAMES = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
#: Markers that stand alone, without a length: TEM, RST0-7, SOI.
_JPEG_STANDALONE = frozenset([0x01, *range(0xD0, 0xD9)])
#: How many segments a JPEG header may have before its frame, and fill bytes before one marker; a file with
#: more is left to the normal path (the reader runs before the pixel limits are known to hold, so it is bounded).
_JPEG_MAX_SEGMENTS = 256
_JPEG_MAX_FILL = 64


def _declared_pixels(path: Path) -> tuple[str, int] | None:
    """(Pillow format name, width x height) that a PNG's IHDR or a JPEG's start-of-frame declares, or None
    for any other file, a header this reader does not follow, or a read error."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(24)
            if len(head) == 24 and head[:8] == _PNG_SIGNATURE and head[12:16] == b"IHDR":
                width, height = struct.unpack(">II", head[16:24])
                return "PNG", width * height
            if head[:2] == _JPEG_SIGNATURE:
                handle.seek(2)
                return _jpeg_frame_pixels(handle)
    except OSError:
        pass
    return None


def _jpeg_frame_pixels(handle) -> tuple[str, int] | None:
    """Follow a JPEG's segments from after SOI to its start-of-frame; ("JPEG", width x height), or None."""
    for _ in range(_JPEG_MAX_SEGMENTS):
        byte = handle.read(1)
        if byte != b"\xff":
            return None
        marker = handle.read(1)
        for _ in range(_JPEG_MAX_FILL):  # fill bytes before a marker
            if marker != b"\xff":
                break
            marker = handle.read(1)
        if not marker or marker == b"\xff":
            return None
        code = marker[0]
        if code in _JPEG_STANDALONE:
            continue
        if code in (0x00, 0xD9, 0xDA):  # a stuffed byte, end of image or start of scan before any frame
            return None
        length = handle.read(2)
        if len(length) < 2:
            return None
        (length,) = struct.unpack(">H", length)
        if length < 2:
            return None
        if code in _JPEG_FRAMES:
            frame = handle.read(5)  # precision, height, width
            if len(frame) < 5:
                return None
            height, width = struct.unpack(">HH", frame[1:5])
            return ("JPEG", width * height) if height else None  # height 0: set later by a DNL segment
        handle.seek(length - 2, 1)
    return None


class PicturePrefetch:
    """Opens and loads one PNG or JPEG with Pillow on a daemon thread; result() gives the loaded image or None.

    Only a regular file is prefetched: a named pipe (or `<(...)`) can be read once only, and reading its
    header here would leave nothing for the normal path (or block it waiting for a second writer).
    """

    def __init__(self, path: Path, max_pixels: int | None) -> None:
        self._picture = None
        self._as_stored = False
        self._png = None
        self._thread: threading.Thread | None = None
        if not path.is_file():  # follows symbolic links; False for a FIFO, a device, or anything unreadable
            return
        declared = _declared_pixels(path)
        if declared is None:
            return
        kind, pixels = declared
        if pixels == 0 or (max_pixels is not None and pixels > max_pixels):
            return
        self._thread = threading.Thread(target=self._load, args=(path, kind, pixels), daemon=True)
        self._thread.start()

    def _load(self, path: Path, kind: str, pixels: int) -> None:
        try:
            from PIL import Image

            if Image.MAX_IMAGE_PIXELS is not None and pixels > Image.MAX_IMAGE_PIXELS:
                return  # Pillow would warn or refuse; the normal path handles that
            if kind == "PNG":
                from .pngread import read_png

                self._png = read_png(path, pixels)
                if self._png is not None:
                    return
            picture = Image.open(path, formats=[kind])
            if picture.width * picture.height != pixels:
                picture.close()
                return
            with _one_block(Image):
                picture.load()
            self._picture = picture
            # no EXIF turn to apply: the pixels as stored are the picture
            self._as_stored = picture.mode in ("RGB", "RGBA") and picture.getexif().get(0x0112, 1) == 1
        except Exception:  # noqa: BLE001 - any failure means "not prefetched"; the normal path reports it
            self._picture = None
            self._as_stored = False
            self._png = None

    def result(self):
        """The loaded PIL image, or None if the picture was not prefetched or pngread read it (the caller then
        takes pixels(), or reads the path)."""
        if self._thread is not None:
            self._thread.join()
        return self._picture

    def pixels(self):
        """The prefetched RGB(A) picture as a read-only (height, width, 3|4) uint8 array, or None.

        The array is a view of Pillow's pixels where Pillow can share them, else a copy (imageio.rgb_pixels).
        None when the picture was not prefetched or needs Pillow's conversions (other modes, an EXIF
        turn); the caller then passes result() or the path to imageio. numpy and imageio are imported
        here, after the codec has loaded them.
        """
        picture = self.result()
        if self._png is not None:
            return self._png.array()
        if picture is None or not self._as_stored:
            return None
        from .imageio import rgb_pixels

        return rgb_pixels(picture)

    def histogram(self):
        """The colour histogram (quantizer.ColourHistogram) of pixels(), where pngread counted it as it read
        them (an RGB PNG of more than pngread.COUNT_MIN_PIXELS pixels), else None."""
        self.result()
        return None if self._png is None else self._png.histogram()


@contextlib.contextmanager
def _one_block(image_module):
    """Let Pillow allocate the images made meanwhile in one block of memory, which it can share (Arrow).

    Pillow's setting is process-wide. Only the command line prefetches, and its main thread makes no
    Pillow image while the prefetch thread decodes (it imports the codec), so no other image is affected.
    """
    core = image_module.core
    if not hasattr(core, "set_use_block_allocator"):  # Pillow < 11.2: no Arrow export either
        yield
        return
    before = core.get_use_block_allocator()
    core.set_use_block_allocator(1)
    try:
        yield
    finally:
        core.set_use_block_allocator(before)
