"""kmcodec: k-means palette images stored in exactly ceil(log2 k) bits per pixel (the .kmq format).

Importing kmcodec registers the .kmq format with Pillow. The codec functions and
KMQImage load on first use (they need numpy), so the command line can start work,
such as decoding its input picture, while numpy is still loading.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from . import pillow_plugin
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
from .names import DEFAULT_MAX_PIXELS

if TYPE_CHECKING:
    from .api import decode, encode, quantize, read, read_header, write
    from .container import Header
    from .image import KMQImage

__version__ = "0.1.0"

pillow_plugin.register()

#: Public names loaded by __getattr__ on first use: the codec and KMQImage need numpy, Header the
#: container module (with dataclasses, which the command line need not wait for before decoding its input).
_LAZY = {"decode": "api", "encode": "api", "quantize": "api", "read": "api", "read_header": "api", "write": "api",
         "KMQImage": "image", "Header": "container"}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'kmcodec' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))

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
