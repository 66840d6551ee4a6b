"""Read any image Pillow can open (or an array) into an (H, W, 3|4) uint8 array the quantizer can use.

Conversion rules: EXIF orientation applied; greyscale and CMYK become RGB; alpha
(LA, RGBA, PA, P with transparency) is kept as a 4th channel unless every pixel is
fully opaque. Samples deeper than 8 bits are scaled by a fixed rule chosen by the
Pillow mode or the array dtype alone, never by the pixel values, so one value always
gives the same 8-bit value whatever else the image holds:

- Pillow 'I;16', 'I;16B', 'I;16L', 'I;16N' (16-bit): value >> 8.
- Pillow 'I' (32-bit integers): taken as 16-bit samples, as Pillow opens a 16-bit PGM
  (any maxval) as 'I' with values 0..65535: clipped to 0..65535, then >> 8.
- Pillow 'F' (32-bit float): Pillow's own 0..255 scale, rounded half to even and
  clipped to 0..255 (so -inf -> 0, +inf -> 255); an image with a NaN pixel is refused.
- Arrays, by dtype: uint8 as is; uint16 (either byte order) >> 8; other integer dtypes
  are 8-bit values, clipped to 0..255; float dtypes are 0..1 (the scikit-image and
  matplotlib convention): value * 255, rounded half to even (float32 and float64 give
  exactly skimage.img_as_ubyte's values; float16 is computed exactly, in float32). A
  float array with any value outside [0, 1], or any NaN or infinity, is refused with
  InputImageError, so no value is silently clipped or reinterpreted. Other dtypes
  (bool, complex, object, ...) are refused.
- Array shapes: (H, W) grey, (H, W, 1) grey, (H, W, 2) grey+alpha, (H, W, 3) RGB,
  (H, W, 4) RGBA.
"""

from __future__ import annotations

import io
import struct
import warnings
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from . import fastpath
from .errors import InputImageError
from .names import is_integer

if TYPE_CHECKING:
    from .quantizer import ColourHistogram

ImageSource = Union[str, Path, bytes, BinaryIO, np.ndarray, Image.Image]

_ALPHA_MODES = {"RGBA", "LA", "PA", "RGBa", "La"}


def read_pixels(
    source: ImageSource, *, name: str | None = None, max_pixels: int | None = None
) -> tuple[np.ndarray, ColourHistogram | None]:
    """load_pixels, and the image's colour histogram where reading it counted the colours, else None.

    A path to a plain 8-bit RGB or RGBA PNG (pngread's module docstring) is read by pngread on two cores, as
    the command line reads its input, and for RGB above pngread.COUNT_MIN_PIXELS pixels its colours are counted
    as the rows arrive, which the quantizer then need not do; anything else goes through load_pixels.
    """
    if isinstance(source, (str, Path)) and (max_pixels is None or (is_integer(max_pixels) and max_pixels >= 1)):
        from .pngread import read_png

        png = read_png(Path(source), max_pixels if max_pixels is not None else Image.MAX_IMAGE_PIXELS)
        if png is not None:
            pixels = _array_pixels(png.array())
            return pixels, png.histogram() if pixels.shape[2] == png.channels else None
    return load_pixels(source, name=name, max_pixels=max_pixels), None


def load_pixels(source: ImageSource, *, name: str | None = None, max_pixels: int | None = None) -> np.ndarray:
    """Return the image as a (height, width, 3 or 4) uint8 array: C-contiguous, or RGB viewed in 4-byte
    pixels (rows of RGBX, or of opaque RGBA) when it came that way, which is read in place rather than copied.

    An image of more than `max_pixels` pixels (default: Pillow's
    PIL.Image.MAX_IMAGE_PIXELS) is refused with InputImageError before its pixel
    data is decoded; a larger max_pixels admits big trusted images.
    """
    if max_pixels is not None and (not is_integer(max_pixels) or max_pixels < 1):
        raise ValueError(f"max_pixels must be a positive integer, got {max_pixels!r}")
    if isinstance(source, np.ndarray):
        if source.ndim >= 2:
            _check_pixel_count(source.shape[1], source.shape[0], max_pixels, "pixel array")
        return _array_pixels(source)
    if isinstance(source, Image.Image):
        _check_pixel_count(source.width, source.height, max_pixels, name or "<input image>")
        return pil_to_pixels(source)
    if not isinstance(source, (str, Path, bytes, bytearray, memoryview)):
        if not hasattr(source, "read"):
            hint = " (a KMQImage is already quantized: encode() or write() it)" if type(source).__name__ == "KMQImage" else ""
            raise TypeError(
                f"cannot read an image from a {type(source).__name__}{hint}: give a path, bytes, a binary file, "
                "a Pillow image or a numpy array"
            )
        require_binary_reader(source, "reading an image")
    label = name or _describe(source)
    opened = _open(source, label, max_pixels)
    try:
        return pil_to_pixels(opened, name=label)
    finally:
        opened.close()


def require_binary_reader(handle: object, what: str) -> None:
    """Refuse a file object that reads str (opened in text mode, or wrapped so): it would fail deep inside with a
    UnicodeDecodeError or a str/bytes TypeError. Reading 0 bytes asks the object itself, whatever wraps it."""
    try:
        probe = handle.read(0)  # type: ignore[attr-defined]
    except (OSError, ValueError, TypeError):
        return  # not this check's business: the real read reports it
    if not isinstance(probe, (bytes, bytearray)):
        raise TypeError(f"{what} needs a binary file (open it with 'rb'), got one that reads text{_named(handle)}")


def require_binary_writer(handle: object, what: str) -> None:
    """Refuse a file object that writes str (text mode, tempfile/codecs wrappers of one): writing b'' raises
    TypeError there and writes nothing anywhere else."""
    try:
        handle.write(b"")  # type: ignore[attr-defined]
    except TypeError:
        raise TypeError(f"{what} needs a binary file (open it with 'wb'), got one that writes text{_named(handle)}") from None
    except (OSError, ValueError):
        pass  # closed, or not writable: the real write reports it


def _named(handle: object) -> str:
    name = getattr(handle, "name", None)
    return f" ({name})" if isinstance(name, str) else ""


def _describe(source: object) -> str:
    if isinstance(source, (str, Path)):
        return str(source)
    return getattr(source, "name", None) or "<input image>"


def _check_pixel_count(width: int, height: int, max_pixels: int | None, label: str) -> None:
    """Refuse an image above the explicit limit (arrays and Pillow images: no Pillow bomb limit applies)."""
    if max_pixels is not None and width * height > max_pixels:
        raise InputImageError(
            f"{label}: {width}x{height} = {width * height} pixels exceeds the limit of {max_pixels} pixels"
        )


def _above_pillows_limit(max_pixels: int | None) -> bool:
    """Whether the caller's limit is above Pillow's own (which Image.open enforces at twice its value)."""
    ceiling = Image.MAX_IMAGE_PIXELS
    return max_pixels is not None and ceiling is not None and max_pixels > ceiling


def _open_without_bomb_check(source: str | Path | BinaryIO) -> Image.Image:
    """Image.open without its decompression-bomb check, for a caller whose own limit is higher (kmcodec checks
    the size right after). Pillow has no per-call switch and setting its module-wide MAX_IMAGE_PIXELS would
    lift the limit for every other thread's Image.open too, so this runs Image.open's plugin search itself:
    each registered format's accept() on the first 16 bytes, then its factory, common formats first."""
    owned = isinstance(source, (str, Path))
    handle: BinaryIO = open(source, "rb") if owned else source  # noqa: SIM115 - the image owns it from here
    try:
        try:  # as Image.open: from the stream's start, or from a copy when it cannot seek
            handle.seek(0)
        except (AttributeError, io.UnsupportedOperation):
            handle = io.BytesIO(handle.read())
        prefix = handle.read(16)
        for load_plugins in (Image.preinit, Image.init):
            load_plugins()
            for format_id in list(Image.ID):
                factory, accept = Image.OPEN[format_id]
                verdict = not accept or accept(prefix)
                if not verdict or isinstance(verdict, str):  # a str is Pillow's "not this format, and why"
                    continue
                handle.seek(0)
                try:
                    image = factory(handle, str(source) if owned else "")
                except (SyntaxError, IndexError, TypeError, struct.error):
                    continue
                image._exclusive_fp = owned  # close the file with the image, as Image.open arranges
                return image
        raise UnidentifiedImageError("cannot identify image file")
    except BaseException:
        if owned:
            handle.close()
        raise


def _open(source: str | Path | bytes | BinaryIO, label: str, max_pixels: int | None = None) -> Image.Image:
    if isinstance(source, (bytes, bytearray, memoryview)):
        source = io.BytesIO(bytes(source))
    limit = max_pixels if max_pixels is not None else Image.MAX_IMAGE_PIXELS
    image = None
    try:
        with warnings.catch_warnings():
            # kmcodec applies one limit itself (below); Pillow's warning between 1x and 2x its limit is redundant
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = _open_without_bomb_check(source) if _above_pillows_limit(max_pixels) else Image.open(source)
            width, height = image.size
            if limit is not None and width * height > limit:
                raise InputImageError(
                    f"{label}: refused as a possible decompression bomb: {width}x{height} = {width * height} "
                    f"pixels exceeds the limit of {limit} pixels"
                    + (" (Pillow's MAX_IMAGE_PIXELS)" if max_pixels is None else "")
                    + "; pass a larger max_pixels / --max-pixels if the image is trusted"
                )
            image.load()
        return image
    except FileNotFoundError:
        raise InputImageError(f"{label}: no such file") from None
    except IsADirectoryError:
        raise InputImageError(f"{label}: is a directory, not an image") from None
    except PermissionError:
        raise InputImageError(f"{label}: permission denied") from None
    except UnidentifiedImageError:
        raise InputImageError(
            f"{label}: not an image format Pillow can read (or its header is damaged)"
        ) from None
    except InputImageError:
        if image is not None:
            image.close()
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        if image is not None:
            image.close()
        hint = (  # some plugins check frames or icon entries against Pillow's own limit while loading
            "this format's frames are checked against Pillow's own limit: raise PIL.Image.MAX_IMAGE_PIXELS "
            "if the image is trusted" if _above_pillows_limit(max_pixels)
            else "pass a larger max_pixels / --max-pixels if the image is trusted"
        )
        raise InputImageError(f"{label}: refused as a possible decompression bomb ({exc}); {hint}") from None
    except MemoryError:
        raise InputImageError(f"{label}: not enough memory to decode the image") from None
    except (OSError, SyntaxError, ValueError, EOFError, struct.error, IndexError, TypeError, zlib.error) as exc:
        if image is not None:
            image.close()
        raise InputImageError(f"{label}: cannot read image: {exc or type(exc).__name__}") from None


def pil_to_pixels(image: Image.Image, *, name: str = "<input image>") -> np.ndarray:
    """Convert a Pillow image of any mode to RGB or RGBA uint8 pixels (see module docstring)."""
    try:
        if image.getexif().get(0x0112, 1) != 1:  # exif_transpose copies even when nothing turns
            image = ImageOps.exif_transpose(image)
    except Exception:  # a damaged EXIF block must not stop the encode; orientation is then left as stored
        pass
    if image.width < 1 or image.height < 1:
        raise InputImageError(f"{name}: image has no pixels ({image.width}x{image.height})")
    mode = image.mode
    try:
        if mode in ("RGB", "RGBA"):
            pixels = rgb_pixels(image)
        elif mode.startswith("I") or mode == "F":
            pixels = _high_depth_to_rgb(image, name)
        elif mode == "P":
            has_alpha = "transparency" in image.info or image.palette.mode == "RGBA"
            pixels = rgb_pixels(image.convert("RGBA" if has_alpha else "RGB"))
        elif mode in _ALPHA_MODES:
            pixels = rgb_pixels(image.convert("RGBA"))
        else:  # L, 1, CMYK, YCbCr, LAB, HSV, ...
            pixels = rgb_pixels(image.convert("RGB"))
    except InputImageError:
        raise
    except (OSError, ValueError) as exc:
        raise InputImageError(f"{name}: cannot convert mode {mode} to RGB: {exc}") from None
    return _array_pixels(pixels)


def rgb_pixels(image: Image.Image) -> np.ndarray:
    """An RGB or RGBA image's pixels, read-only: a view of Pillow's own memory where it can share it
    (fastpath.arrow_pixels), else a copy."""
    shared = fastpath.arrow_pixels(image)
    return np.asarray(image) if shared is None else shared


def _high_depth_to_rgb(image: Image.Image, name: str = "<input image>") -> np.ndarray:
    """Scale 16-bit ('I;16*'), 32-bit integer ('I') or float ('F') greyscale to 8-bit RGB by the mode's
    fixed rule (module docstring), never by the pixel values."""
    values = np.asarray(image)
    if image.mode == "F":
        if np.isnan(values.min(initial=0.0)):  # min propagates NaN: one pass, no copy
            raise InputImageError(f"{name}: mode F image has NaN pixels, which have no grey level")
        grey = np.rint(values)
        np.clip(grey, 0, 255, out=grey)
        grey = grey.astype(np.uint8)
    elif image.mode.startswith("I;16"):
        grey = (values >> 8).astype(np.uint8)
    else:  # 'I': 32-bit integers taken as 16-bit samples
        clipped = np.clip(values, 0, 65535)
        clipped >>= 8
        grey = clipped.astype(np.uint8)
    return np.repeat(grey[:, :, None], 3, axis=2)


def _float_to_uint8(array: np.ndarray) -> np.ndarray:
    """A float array in [0, 1] as uint8: value * 255, rounded half to even, computed in float32 for float16 and
    float32 and in float64 for wider floats. skimage.img_as_ubyte computes in the input's own dtype: the same
    for float32 and float64; a float16 product is exact in float32, where skimage's float16 product can round
    to the wrong side of a half. Any other float array is refused."""
    low, high = array.min(), array.max()  # NaN propagates to both, so a NaN fails the test below
    if not (low >= 0 and high <= 1):
        raise InputImageError(_float_range_problem(array))
    scaled = np.multiply(array, 255, dtype=np.float32 if array.dtype.itemsize <= 4 else np.float64)
    np.rint(scaled, out=scaled)
    return scaled.astype(np.uint8)


def _float_range_problem(array: np.ndarray) -> str:
    """Say what a float array holds that the 0..1 convention cannot take (only called on refusal)."""
    finite = np.isfinite(array)
    odd = [word for word, test in (("NaN", np.isnan), ("+inf", np.isposinf), ("-inf", np.isneginf))
           if test(array).any()]
    span = ""
    in_range = True
    if finite.any():
        low = array.min(where=finite, initial=np.inf)
        high = array.max(where=finite, initial=-np.inf)
        span = f"values from {low:g} to {high:g}"
        in_range = low >= 0 and high <= 1
    if not odd:
        return f"float pixel arrays are taken as 0..1; this one has {span}: scale it to 0..1 or pass uint8"
    odd_text = " and ".join(odd)
    has = odd_text + (f" (other {span})" if span else "")
    advice = f"replace the {odd_text}" + ("" if in_range else ", scale it to 0..1,")
    return f"float pixel arrays are taken as 0..1; this one has {has}: {advice} or pass uint8"


_SHAPES = "(H, W), (H, W, 1), (H, W, 2) grey+alpha, (H, W, 3) or (H, W, 4)"


def _array_pixels(array: np.ndarray) -> np.ndarray:
    """Validate and normalise an array: (H, W) or (H, W, 1) grey, (H, W, 2) grey+alpha, (H, W, 3) RGB or
    (H, W, 4) RGBA, of any integer or float dtype (module docstring)."""
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[2] not in (1, 2, 3, 4):
        raise InputImageError(f"pixel array must be {_SHAPES}, got shape {array.shape}")
    if array.shape[0] < 1 or array.shape[1] < 1:
        raise InputImageError(f"image has no pixels ({array.shape[1]}x{array.shape[0]})")
    if array.dtype != np.uint8:
        if array.dtype.kind == "u" and array.dtype.itemsize == 2:  # uint16, either byte order
            array = (array >> 8).astype(np.uint8)
        elif array.dtype.kind == "f":
            array = _float_to_uint8(array)
        elif array.dtype.kind in "ui":
            array = np.clip(array, 0, 255).astype(np.uint8)
        else:
            raise InputImageError(f"pixel array has unsupported dtype {array.dtype}")
    if array.shape[2] == 1:
        array = np.repeat(array, 3, axis=2)
    elif array.shape[2] == 2:
        array = np.concatenate([np.repeat(array[:, :, :1], 3, axis=2), array[:, :, 1:]], axis=2)
    if array.shape[2] == 4 and bool((array[:, :, 3] == 255).all()):
        array = array[:, :, :3]
    if array.shape[2] == 3 and array.strides == (4 * array.shape[1], 4, 1):
        return array  # RGB in 4-byte pixels (RGBX, or opaque RGBA): the quantizer reads it in place
    return np.ascontiguousarray(array)
