"""The one error hierarchy of kmcodec: every problem with a file or an input is a KMQError.

Each subclass has a ``kind``: the error kind named in section 9 of spec/kmq.md
and in the conformance manifest, so tools can match errors across implementations.
"""

from __future__ import annotations


class KMQError(ValueError):
    """Base class of every error kmcodec raises for bad input or bad files."""

    kind = "error"


class SignatureError(KMQError):
    """The data does not start with the KMQ signature: not a .kmq file, or damaged in transfer."""

    kind = "signature"


class VersionError(KMQError):
    """The file declares a format version this decoder does not know."""

    kind = "version"


class ChecksumError(KMQError):
    """A CRC-32 over the header or the content does not match: the file is damaged."""

    kind = "checksum"


class HeaderError(KMQError):
    """A header field is out of range or inconsistent with the others."""

    kind = "header"


class CodingError(KMQError):
    """The payload coding is unsupported, or the coded payload cannot be decoded."""

    kind = "coding"


class LimitError(KMQError):
    """The file declares more pixels (or bytes) than the configured maximum allows."""

    kind = "limit"


class LabelError(KMQError):
    """A pixel's label is not a valid palette index (label >= k)."""

    kind = "label"


class PaddingError(KMQError):
    """The zero padding after the last label contains a set bit."""

    kind = "padding"


class TruncatedError(KMQError):
    """The data ends before a section it declares is complete."""

    kind = "truncated"


class TrailingDataError(KMQError):
    """There are bytes after the trailer."""

    kind = "trailing"


class InputImageError(KMQError):
    """An input image for the encoder cannot be read or used (corrupt, empty, too large)."""

    kind = "input"


class TargetError(KMQError):
    """An automatic choice of k cannot meet its target (PSNR or file size) within the allowed range."""

    kind = "target"


class OutputFormatError(KMQError):
    """A decoded image cannot be written in the requested picture format (unknown, or it would lose alpha)."""

    kind = "output"


class BatchError(KMQError):
    """A batch cannot start: a missing optional dependency, an unreachable cluster, mismatched workers."""

    kind = "batch"


ERROR_KINDS: dict[str, type[KMQError]] = {
    cls.kind: cls
    for cls in (
        SignatureError,
        VersionError,
        ChecksumError,
        HeaderError,
        CodingError,
        LimitError,
        LabelError,
        PaddingError,
        TruncatedError,
        TrailingDataError,
    )
}
