"""Write a decoded KMQImage as an ordinary picture (PNG, WebP, GIF, ...), atomically and faithfully.

One set of rules for every caller: no alpha in JPEG/BMP/PPM, no partial alpha in GIF,
WebP lossless and exact (transparent pixels keep their stored colours, spec section 4),
and PNG as a palette PNG (PLTE, tRNS for alpha) whenever k <= 256: the same pixels,
smaller, and about twice as fast to write as truecolour.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .atomic import atomic_output
from .errors import OutputFormatError
from .image import KMQImage

_NO_ALPHA = ("JPEG", "BMP", "PPM")


def picture_format(extension: str) -> str:
    """Pillow's format name for an output extension ('png' or '.png' -> 'PNG'); raise OutputFormatError if
    Pillow cannot write it (or it is .kmq, which is not a picture format)."""
    from PIL import Image

    suffix = "." + extension.lower().lstrip(".")
    image_format = Image.registered_extensions().get(suffix)
    if image_format is None or image_format == "KMQ" or image_format not in Image.SAVE:
        raise OutputFormatError(f"cannot write images with extension {suffix!r} (try .png or .webp)")
    return image_format


def save_picture(image: KMQImage, target: Path, image_format: str, *, overwrite: bool) -> int:
    """Write `image` to `target` in Pillow's `image_format` through a temporary file; return its size."""
    if image_format in _NO_ALPHA and image.channels == 4:
        raise OutputFormatError(f"{target}: {image_format} cannot store alpha; use .png or .webp")
    if image_format == "GIF" and image.channels == 4 and not np.isin(image.palette[:, 3], (0, 255)).all():
        raise OutputFormatError(f"{target}: GIF cannot store partial transparency; use .png or .webp")
    options = {"lossless": True, "exact": True} if image_format == "WEBP" else {}
    picture = image.to_pil_palette() if image_format == "PNG" and image.k <= 256 else image.to_pil()
    with atomic_output(target, overwrite=overwrite) as handle:
        try:
            picture.save(handle, format=image_format, **options)
        except (OSError, ValueError, KeyError) as exc:
            raise OutputFormatError(f"{target}: cannot write {image_format}: {exc}") from None
        handle.flush()
        return handle.tell()
