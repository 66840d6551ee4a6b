"""The Python API: quantize, encode, decode, read, write and read_header .kmq images.

The data flows one way: image -> quantize -> KMQImage -> code labels -> container bytes, and back.
"""

from __future__ import annotations

import dataclasses
import io
import os
from pathlib import Path
from typing import BinaryIO, Union

import numpy as np

from . import names
from .atomic import atomic_output
from .codings import check_payload_length, coding_for_id, encode_labels
from .container import HEADER_SIZE, Header, build_file, parse_header, read_container
from .errors import CodingError, KMQError, LabelError, LimitError
from .names import DEFAULT_MAX_PIXELS
from .image import KMQImage
from .imageio import ImageSource, read_pixels, require_binary_reader, require_binary_writer
from .quantizer import DEFAULT_ENGINE, DEFAULT_SPACE, DEFAULT_SPEED, quantize_pixels

PathLike = Union[str, os.PathLike]
Source = Union[PathLike, bytes, bytearray, memoryview, BinaryIO]

#: The default coding: the smallest of all (spec section 5); "raw" keeps the plain bit-packed labels.
DEFAULT_CODING = names.DEFAULT_CODING


def quantize(
    image: ImageSource,
    k: int,
    *,
    seed: int = 0,
    engine: str = DEFAULT_ENGINE,
    space: str = DEFAULT_SPACE,
    speed: int = DEFAULT_SPEED,
    dither: float = 0.0,
    rdo: float = 0.0,
    max_pixels: int | None = None,
) -> KMQImage:
    """Quantize an image (path, bytes, file, Pillow image or array) to at most k colours.

    engine 'fast' or 'sklearn'; space 'rgb' or 'oklab' (cluster perceptually);
    speed 1 (best) to 10 (fastest); dither 0 (off) to 1 (full Floyd–Steinberg);
    rdo 0 (off) to 10: dB of PSNR the labels may give up for a smaller file (not with dither).
    max_pixels bounds the input image's pixel count before it is decoded (default:
    Pillow's decompression-bomb limit, PIL.Image.MAX_IMAGE_PIXELS).
    """
    pixels, histogram = read_pixels(image, max_pixels=max_pixels)
    palette, labels = quantize_pixels(
        pixels, k, seed=seed, engine=engine, space=space, speed=speed, dither=dither, rdo=rdo, histogram=histogram
    )
    return KMQImage(palette, labels)


def encode(
    image: KMQImage | ImageSource,
    k: int | None = None,
    *,
    coding: str = DEFAULT_CODING,
    seed: int = 0,
    engine: str = DEFAULT_ENGINE,
    space: str = DEFAULT_SPACE,
    speed: int = DEFAULT_SPEED,
    dither: float = 0.0,
    rdo: float = 0.0,
    max_pixels: int | None = None,
) -> bytes:
    """Return the .kmq bytes of a KMQImage, or of any image quantized to k colours first (see quantize).

    A KMQImage is already quantized: passing k or a quantizer option with it raises TypeError, as the
    option would otherwise be silently ignored.
    """
    if isinstance(image, KMQImage):
        _refuse_quantizer_options(
            "encode", k, seed=seed, engine=engine, space=space, speed=speed, dither=dither, rdo=rdo,
            max_pixels=max_pixels,
        )
    else:
        if k is None:
            raise TypeError("encode() needs k to quantize an image that is not already a KMQImage")
        image = quantize(
            image, k, seed=seed, engine=engine, space=space, speed=speed, dither=dither, rdo=rdo,
            max_pixels=max_pixels,
        )
    header = Header(width=image.width, height=image.height, channels=image.channels, k=image.k, coding=0, payload_length=0)
    chosen, payload = encode_labels(image.labels.reshape(-1), header, coding)
    header = dataclasses.replace(header, coding=chosen.id, payload_length=len(payload))
    return build_file(header, image.palette.tobytes(), payload)


#: The quantizer options encode() and write() pass on to quantize(), with their defaults.
_QUANTIZER_DEFAULTS: dict[str, object] = {
    "seed": 0, "engine": DEFAULT_ENGINE, "space": DEFAULT_SPACE, "speed": DEFAULT_SPEED, "dither": 0.0, "rdo": 0.0,
    "max_pixels": None,
}


def _refuse_quantizer_options(function: str, k: int | None, **options: object) -> None:
    """Raise TypeError if k or a quantizer option other than its default comes with an already quantized KMQImage."""
    given = [f"k={k!r}"] if k is not None else []
    given += [f"{name}={value!r}" for name, value in options.items() if value != _QUANTIZER_DEFAULTS[name]]
    if given:
        raise TypeError(
            f"{function}() got a KMQImage, which is already quantized, with {', '.join(given)}: these apply "
            "only when quantizing; call quantize() with them on the original image first, then "
            f"{function}() the result without them"
        )


def decode(
    data: Source, *, max_pixels: int = DEFAULT_MAX_PIXELS, allow_trailing: bool = False
) -> KMQImage:
    """Decode .kmq bytes (or a binary file object) to a KMQImage; raise a KMQError subclass if malformed."""
    stream = _as_stream(data)
    raw = read_container(
        stream, max_pixels=max_pixels, check_payload_length=check_payload_length, allow_trailing=allow_trailing
    )
    header = raw.header
    labels = _decode_labels(raw.payload, header)
    palette = np.frombuffer(raw.palette, dtype=np.uint8).reshape(header.k, header.channels)
    return KMQImage._adopt(palette, labels.reshape(header.height, header.width))  # checked by _decode_labels


def _decode_labels(payload: bytes, header: Header) -> np.ndarray:
    """Run the header's coding on the payload and check what it returns, whatever the coding.

    A coding is expected to raise KMQError subclasses itself; anything else it
    raises on hostile data (zlib.error, IndexError, ...) is reported as a
    CodingError chained to the original, so no other exception type escapes
    decode(). Its output is checked for count and range here too.
    """
    coding = coding_for_id(header.coding)
    where = f"payload at offset {HEADER_SIZE + header.palette_size}"
    try:
        labels = coding.decode(payload, header)
    except KMQError:
        raise
    except MemoryError:
        raise LimitError(f"{where}: decoding the {coding.name} payload needs more memory than is available") from None
    except Exception as exc:  # noqa: BLE001 - the safety net described above
        raise CodingError(f"{where}: {coding.name} payload cannot be decoded ({type(exc).__name__}: {exc})") from exc
    labels = np.asarray(labels).reshape(-1)
    if labels.size != header.pixel_count or labels.dtype.kind not in "ui":
        raise CodingError(
            f"{where}: {coding.name} payload decodes to {labels.size} labels, the header declares "
            f"{header.width}x{header.height} = {header.pixel_count}"
        )
    if labels.size and (np.iinfo(labels.dtype).max >= header.k or labels.dtype.kind == "i"):
        if int(labels.max()) >= header.k or int(labels.min()) < 0:
            pixel = int(np.argmax((labels >= header.k) | (labels < 0)))
            raise LabelError(f"{where}: pixel {pixel} has label {int(labels[pixel])}, not in 0..{header.k - 1}")
    return labels


def read(source: Source, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> KMQImage:
    """Read a .kmq file from a path or a binary file object."""
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        try:
            with path.open("rb") as handle:
                return decode(handle, max_pixels=max_pixels)
        except KMQError as exc:
            raise type(exc)(f"{path}: {exc}") from None
    return decode(source, max_pixels=max_pixels)


def write(
    destination: PathLike | BinaryIO,
    image: KMQImage | ImageSource,
    k: int | None = None,
    *,
    coding: str = DEFAULT_CODING,
    seed: int = 0,
    engine: str = DEFAULT_ENGINE,
    space: str = DEFAULT_SPACE,
    speed: int = DEFAULT_SPEED,
    dither: float = 0.0,
    rdo: float = 0.0,
    overwrite: bool = False,
    max_pixels: int | None = None,
) -> int:
    """Encode an image and write it to a path (atomically) or a binary file object; return bytes written.

    A path is never left half-written, and an existing file is replaced only when overwrite=True.
    A KMQImage is written as it is: k or a quantizer option with it raises TypeError (see encode).
    """
    if isinstance(image, KMQImage):
        _refuse_quantizer_options(
            "write", k, seed=seed, engine=engine, space=space, speed=speed, dither=dither, rdo=rdo,
            max_pixels=max_pixels,
        )
    if not isinstance(destination, (str, os.PathLike)):
        require_binary_writer(destination, "write()")  # before the encode, which may take seconds
    data = encode(
        image, k, coding=coding, seed=seed, engine=engine, space=space, speed=speed, dither=dither, rdo=rdo,
        max_pixels=max_pixels,
    )
    if isinstance(destination, (str, os.PathLike)):
        with atomic_output(destination, overwrite=overwrite) as handle:
            handle.write(data)
    else:
        destination.write(data)
    return len(data)


def read_header(source: Source, *, max_pixels: int | None = None) -> Header:
    """Read and validate just the 36-byte header (no limit on pixels unless max_pixels is given)."""
    if isinstance(source, (str, os.PathLike)):
        with Path(source).open("rb") as handle:
            head = handle.read(HEADER_SIZE)
    else:
        head = _as_stream(source).read(HEADER_SIZE)
    header = parse_header(head, max_pixels=max_pixels if max_pixels is not None else 2**64)
    return header


def _as_stream(data: Source) -> BinaryIO:
    if isinstance(data, (bytes, bytearray, memoryview)):
        return io.BytesIO(bytes(data))
    if isinstance(data, (str, os.PathLike)):
        raise TypeError("decode() takes bytes or a binary file; use read() for a path")
    if not hasattr(data, "read"):
        raise TypeError(f"expected bytes or a binary file object, got {type(data).__name__}")
    require_binary_reader(data, "reading a .kmq file")
    return data  # type: ignore[return-value]


__all__ = ["quantize", "encode", "decode", "read", "write", "read_header"]
