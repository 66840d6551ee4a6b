"""kmcodec: k-means palette images stored in exactly ceil(log2 k) bits per pixel (the .kmq format).

Importing kmcodec registers the .kmq format with Pillow.
"""

from __future__ import annotations

from . import pillow_plugin
from .api import decode, encode, quantize, read, read_header, write
from .container import DEFAULT_MAX_PIXELS, Header
from .errors import (
    ChecksumError,
    CodingError,
    HeaderError,
    InputImageError,
    KMQError,
    LabelError,
    LimitError,
    PaddingError,
    SignatureError,
    TrailingDataError,
    TruncatedError,
    VersionError,
)
from .image import KMQImage

__version__ = "0.1.0"

pillow_plugin.register()

__all__ = [
    "KMQImage",
    "Header",
    "DEFAULT_MAX_PIXELS",
    "quantize",
    "encode",
    "decode",
    "read",
    "write",
    "read_header",
    "KMQError",
    "SignatureError",
    "VersionError",
    "ChecksumError",
    "HeaderError",
    "CodingError",
    "LimitError",
    "LabelError",
    "PaddingError",
    "TruncatedError",
    "TrailingDataError",
    "InputImageError",
]
