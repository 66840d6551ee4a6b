"""Write a decoded KMQImage as an ordinary picture (PNG, WebP, GIF, ...), atomically and faithfully.

One set of rules for every caller: no alpha in JPEG/BMP/DIB/PPM, no partial alpha and at most 256
colours in GIF, no side over 65500 pixels where libjpeg codes the pixels, WebP lossless and
exact (transparent pixels keep their stored colours, spec section 4), PNG as a palette PNG
(PLTE, tRNS for alpha) whenever k <= 256: the same pixels, smaller, and about twice as fast
to write as truecolour; GIF from the palette itself, so Pillow never re-quantizes it.
ICO at the image's own size (at most 256 a side), no ICNS (fixed resampled sizes), and the lossy
formats (JPEG, AVIF) at their most faithful settings. Anything Pillow raises while writing becomes an
OutputFormatError and leaves no file behind.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .atomic import atomic_output, is_special_file
from .errors import OutputFormatError
from .image import KMQImage

if TYPE_CHECKING:
    from PIL import Image

_NO_ALPHA = ("JPEG", "BMP", "DIB", "PPM")
#: The largest side of an ICO entry.
ICO_MAX_SIDE = 256
#: libavif's default decoding limits (AVIF_DEFAULT_IMAGE_DIMENSION_LIMIT, AVIF_DEFAULT_IMAGE_SIZE_LIMIT): Pillow
#: writes larger AVIF files that it, and most readers, then cannot open.
AVIF_MAX_SIDE = 32768
AVIF_MAX_PIXELS = 16384 * 16384
#: Options that make a lossy format as faithful as it can be: no chroma subsampling, top quality (JPEG 95: above it
#: files grow fast for nothing the eye sees; AVIF 100 still converts to YUV, a level or two off).
_FAITHFUL = {
    "JPEG": {"quality": 95, "subsampling": 0},
    "MPO": {"quality": 95, "subsampling": 0},
    "AVIF": {"quality": 100, "subsampling": "4:4:4"},
}
#: Formats whose pixels Pillow codes with libjpeg (PDF too, for RGB images).
_LIBJPEG = ("JPEG", "MPO")
#: libjpeg's JPEG_MAX_DIMENSION: the longest side it codes.
JPEG_MAX_DIMENSION = 65500
#: Colours in a GIF palette.
_GIF_MAX_COLOURS = 256


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
    """Write `image` to `target` in Pillow's `image_format` through a temporary file; return its size.

    Raise OutputFormatError, with no file left behind, when the format cannot hold the image exactly
    or Pillow fails to write it (MemoryError and KeyboardInterrupt propagate as they are).
    """
    _check_fits(image, target, image_format)
    options: dict[str, object] = {"lossless": True, "exact": True} if image_format == "WEBP" else {}
    options.update(_FAITHFUL.get(image_format, {}))
    if image_format == "ICO":
        options["sizes"] = [(image.width, image.height)]  # one entry at the image's own size (else 16x16 up to it)
    if image_format == "GIF":
        picture = _gif_picture(image)
        if "transparency" in picture.info:
            options["transparency"] = picture.info["transparency"]
    elif image_format == "PNG" and image.k <= 256:
        picture = image.to_pil_palette()
    else:
        picture = image.to_pil()
    with atomic_output(target, overwrite=overwrite) as handle:
        # A pipe, a terminal or a device (/dev/null seeks, but its end is always 0, which would be the size
        # returned): the picture is made in memory first, as Pillow's writers tell() and seek (TIFF, PDF, ICO).
        seekable = handle.seekable() and not is_special_file(target)
        sink = handle if seekable else io.BytesIO()
        try:
            picture.save(sink, format=image_format, **options)
        except MemoryError:
            raise
        except (OSError, ValueError, KeyError) as exc:
            raise OutputFormatError(f"{target}: cannot write {image_format}: {exc}") from None
        except Exception as exc:  # noqa: BLE001 - Pillow's writers raise OverflowError, struct.error, RuntimeError...
            raise OutputFormatError(
                f"{target}: cannot write {image_format}: {_exception_name(exc)}: {exc} "
                f"(the image is {image.width}x{image.height} pixels)"
            ) from exc
        if not seekable:
            data = sink.getvalue()
            handle.write(data)
            return len(data)
        handle.flush()
        return handle.seek(0, io.SEEK_END)  # the size: some writers (ICO, TIFF) end back at a header they filled in


def _exception_name(exc: BaseException) -> str:
    """'OverflowError' for a built-in exception, 'struct.error' for one from a module."""
    kind = type(exc)
    return kind.__qualname__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"


def _check_fits(image: KMQImage, target: Path, image_format: str) -> None:
    """Refuse, before any file is opened, what the format would silently change or fail on noisily."""
    if image_format in _NO_ALPHA and image.channels == 4:
        raise OutputFormatError(f"{target}: {image_format} cannot store alpha; use .png or .webp")
    if image_format == "GIF":
        if image.k > _GIF_MAX_COLOURS:
            raise OutputFormatError(
                f"{target}: GIF stores at most {_GIF_MAX_COLOURS} colours; this image has k = {image.k}; "
                "use .png or .webp"
            )
        if image.channels == 4 and not np.isin(image.palette[:, 3], (0, 255)).all():
            raise OutputFormatError(f"{target}: GIF cannot store partial transparency; use .png or .webp")
    if image_format == "ICO" and max(image.width, image.height) > ICO_MAX_SIDE:
        raise OutputFormatError(
            f"{target}: ICO holds at most {ICO_MAX_SIDE}x{ICO_MAX_SIDE} pixels, this image is "
            f"{image.width}x{image.height}; use .png or .webp"
        )
    if image_format == "AVIF" and (
        max(image.width, image.height) > AVIF_MAX_SIDE or image.width * image.height > AVIF_MAX_PIXELS
    ):
        raise OutputFormatError(
            f"{target}: AVIF readers (libavif) open at most {AVIF_MAX_SIDE} pixels a side and {AVIF_MAX_PIXELS} "
            f"pixels, this image is {image.width}x{image.height}; use .png or .webp"
        )
    if image_format == "ICNS":
        raise OutputFormatError(
            f"{target}: ICNS stores square icons of fixed sizes, resampled from the image; use .png or .webp"
        )
    # libjpeg prints "Maximum supported image dimension is 65500 pixels" to stderr before it fails
    if image_format in _LIBJPEG or (image_format == "PDF" and image.channels == 3):  # PDF codes RGB as DCTDecode
        if max(image.width, image.height) > JPEG_MAX_DIMENSION:
            raise OutputFormatError(
                f"{target}: cannot write {image_format}: JPEG coding allows at most {JPEG_MAX_DIMENSION} pixels "
                f"a side, this image is {image.width}x{image.height}; use .png or .webp"
            )


def _gif_picture(image: KMQImage) -> "Image.Image":
    """A mode-P Pillow image of the palette and labels (k <= 256, alpha only 0 or 255), for GIF.

    Pillow converts an RGB(A) image to GIF's palette by quantizing it again, which changes the
    colours of an RGBA image of more than a few colours; a P image keeps them. Entries with
    alpha 0 all become the first such entry, GIF's one transparent index.
    """
    if image.channels == 3:
        return image.to_pil_palette()
    labels = image.labels
    transparent = np.flatnonzero(image.palette[:, 3] == 0)
    if transparent.size > 1:
        merge = np.arange(image.k, dtype=labels.dtype)
        merge[transparent] = transparent[0]
        labels = merge[labels]
    picture = KMQImage(image.palette[:, :3], labels).to_pil_palette()
    if transparent.size:
        picture.info["transparency"] = int(transparent[0])
    return picture
