"""Decode an input PNG on a background thread while the main thread loads numpy and the codec.

A whole `kmcodec encode` of a 4 MP photo spends ~0.1 s decoding the PNG and ~0.25 s
importing numpy; Pillow's decoder releases the GIL, so the two overlap. An RGB or RGBA
picture is also packed into rows of 3 or 4 bytes a pixel on the thread (Pillow keeps RGB
as 4 bytes a pixel), which the main thread then wraps as an array without a copy. Only a PNG
whose header (IHDR) declares no more pixels than the caller's limit and Pillow's own
bomb limit is prefetched; anything else, and any failure, leaves the picture to the
normal path (imageio), which applies every check and says what is wrong.
"""

from __future__ import annotations

import struct
import threading
from pathlib import Path

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _png_pixels(path: Path) -> int | None:
    """width x height from a PNG's IHDR chunk, or None if the file does not start like a PNG."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(24)
    except OSError:
        return None
    if len(head) < 24 or head[:8] != _PNG_SIGNATURE or head[12:16] != b"IHDR":
        return None
    width, height = struct.unpack(">II", head[16:24])
    return width * height


class PicturePrefetch:
    """Opens and loads one picture with Pillow on a daemon thread; result() gives the loaded image or None."""

    def __init__(self, path: Path, max_pixels: int | None) -> None:
        self._picture = None
        self._packed: bytes | None = None
        self._thread: threading.Thread | None = None
        pixels = _png_pixels(path)
        if pixels is None or pixels == 0 or (max_pixels is not None and pixels > max_pixels):
            return
        self._thread = threading.Thread(target=self._load, args=(path, pixels), daemon=True)
        self._thread.start()

    def _load(self, path: Path, pixels: int) -> None:
        try:
            from PIL import Image

            if Image.MAX_IMAGE_PIXELS is not None and pixels > Image.MAX_IMAGE_PIXELS:
                return  # Pillow would warn or refuse; the normal path handles that
            picture = Image.open(path)
            if picture.format != "PNG" or picture.width * picture.height != pixels:
                picture.close()
                return
            picture.load()
            self._picture = picture
            if picture.mode in ("RGB", "RGBA") and picture.getexif().get(0x0112, 1) == 1:
                self._packed = picture.tobytes()  # no EXIF turn to apply: these are the pixels as stored
        except Exception:  # noqa: BLE001 - any failure means "not prefetched"; the normal path reports it
            self._picture = None
            self._packed = None

    def result(self):
        """The loaded PIL image, or None if the picture was not prefetched (the caller then reads the path)."""
        if self._thread is not None:
            self._thread.join()
        return self._picture

    def pixels(self):
        """The prefetched RGB(A) picture as a read-only (height, width, 3|4) uint8 array (no copy), or None.

        None when the picture was not prefetched or needs Pillow's conversions (other modes, an EXIF
        turn); the caller then passes result() or the path to imageio. numpy is imported here, after
        the codec has loaded it.
        """
        picture = self.result()
        if picture is None or self._packed is None:
            return None
        import numpy as np

        return np.frombuffer(self._packed, dtype=np.uint8).reshape(picture.height, picture.width, len(picture.mode))
