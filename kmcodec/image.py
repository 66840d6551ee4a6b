"""KMQImage: the small immutable value a .kmq file holds: a palette and one label per pixel."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from . import fastpath
from .bitpack import label_bits, label_dtype
from .container import MAX_K

if TYPE_CHECKING:
    from PIL import Image


#: Pixels expanded at a time by to_pil (bounds the temporary RGB(A) block to a few MB).
_EXPAND_CHUNK_PIXELS = 1 << 20
#: Labels counted at a time by label_counts: np.bincount casts its input to int64, 8 bytes a label.
_COUNT_CHUNK_LABELS = 1 << 22


def label_counts(labels: np.ndarray, k: int) -> np.ndarray:
    """Pixels per palette entry (int64, k of them), counted in chunks so that big images need no int64 copy."""
    flat = labels.reshape(-1)
    counts = np.zeros(k, dtype=np.int64)
    for start in range(0, flat.size, _COUNT_CHUNK_LABELS):
        counts += np.bincount(flat[start : start + _COUNT_CHUNK_LABELS], minlength=k)
    return counts


def _palette_values(palette: object) -> np.ndarray:
    """The palette as an array whose values are all exact uint8 values: integers (or whole floats) in 0..255.

    A cast alone would wrap 300 to 44 and -1 to 255 and truncate 0.6 to 0; refuse those instead, as labels are.
    """
    values = np.asarray(palette)
    if values.dtype == np.uint8:
        return values
    if values.dtype.kind not in "uif":
        raise ValueError(f"palette must hold integers 0..255, got {values.dtype}")
    if values.size:
        if values.dtype.kind == "f" and not np.array_equal(values, np.round(values)):  # NaN is unequal too
            raise ValueError("palette must hold whole numbers 0..255, got fractions (or NaN)")
        low, high = values.min(), values.max()
        if low < 0 or high > 255:
            raise ValueError(f"palette values must be in 0..255, got {low} to {high}")
    return values


def _read_only(array: np.ndarray) -> np.ndarray:
    """A read-only view of an array that is made read-only too, so the view cannot be made writable again
    (numpy refuses setflags(write=True) on a view of a read-only array): the labels' range was checked once."""
    array.setflags(write=False)
    return array.view()


@dataclass(frozen=True, eq=False)
class KMQImage:
    """A palette image: `palette` is (k, channels) uint8, `labels` is (height, width) of indices < k.

    Both arrays are read-only; construct a new KMQImage to change anything.
    """

    palette: np.ndarray
    labels: np.ndarray

    def __post_init__(self) -> None:
        palette = np.array(_palette_values(self.palette), dtype=np.uint8, copy=True, order="C")
        if palette.ndim != 2 or palette.shape[1] not in (3, 4):
            raise ValueError(f"palette must have shape (k, 3) or (k, 4), got {palette.shape}")
        k = palette.shape[0]
        if not 1 <= k <= MAX_K:
            raise ValueError(f"palette must have 1 to {MAX_K} entries, got {k}")
        labels = np.asarray(self.labels)
        if labels.ndim != 2 or labels.shape[0] < 1 or labels.shape[1] < 1:
            raise ValueError(f"labels must be a non-empty 2-D array (height, width), got shape {labels.shape}")
        if labels.dtype.kind not in "ui":
            raise ValueError(f"labels must be integers, got {labels.dtype}")
        if labels.size and (int(labels.min()) < 0 or int(labels.max()) >= k):
            raise ValueError(f"labels must be in 0..{k - 1}")
        labels = np.array(labels, dtype=label_dtype(label_bits(k)), copy=True, order="C")
        object.__setattr__(self, "palette", _read_only(palette))
        object.__setattr__(self, "labels", _read_only(labels))

    @classmethod
    def _adopt(cls, palette: np.ndarray, labels: np.ndarray) -> "KMQImage":
        """Wrap arrays the codec has just made and checked, without the constructor's copy and scans.

        For internal use: palette must be (k, 3|4) uint8 and labels (height, width) of
        label_dtype(label_bits(k)) with every label < k; both become read-only and must
        not be written through another reference. Anything else goes through the constructor.
        """
        k = palette.shape[0] if palette.ndim == 2 else 0
        if (palette.dtype != np.uint8 or palette.ndim != 2 or palette.shape[1] not in (3, 4) or not 1 <= k <= MAX_K
                or labels.ndim != 2 or labels.dtype != label_dtype(label_bits(k)) or not labels.flags.c_contiguous
                or not palette.flags.c_contiguous):
            return cls(palette, labels)
        image = object.__new__(cls)
        object.__setattr__(image, "palette", _read_only(palette))
        object.__setattr__(image, "labels", _read_only(labels))
        return image

    def __reduce__(self) -> tuple:
        """Pickle through the constructor, so an unpickled image is checked and read-only like any other
        (the default would restore writable arrays and skip the check that every label is below k)."""
        return (type(self), (self.palette, self.labels))

    def __copy__(self) -> "KMQImage":
        return self  # immutable: a copy is the same image

    def __deepcopy__(self, memo: dict) -> "KMQImage":
        return self

    @property
    def width(self) -> int:
        """Pixels per row."""
        return int(self.labels.shape[1])

    @property
    def height(self) -> int:
        """Rows."""
        return int(self.labels.shape[0])

    @property
    def channels(self) -> int:
        """3 for RGB, 4 for RGBA."""
        return int(self.palette.shape[1])

    @property
    def k(self) -> int:
        """Number of palette entries."""
        return int(self.palette.shape[0])

    @property
    def label_bits(self) -> int:
        """Bits per stored label, ceil(log2 k)."""
        return label_bits(self.k)

    @property
    def mode(self) -> str:
        """'RGB' or 'RGBA', as Pillow names them."""
        return "RGBA" if self.channels == 4 else "RGB"

    def to_array(self) -> np.ndarray:
        """Expand to a (height, width, channels) uint8 pixel array."""
        return fastpath.expand(self.palette, self.labels)

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        pixels = self.to_array()
        return pixels if dtype is None else pixels.astype(dtype)

    def to_pil(self) -> "Image.Image":
        """Expand to a Pillow image in RGB or RGBA mode, in row chunks so no full-size pixel array is made."""
        from PIL import Image

        picture = Image.new(self.mode, (self.width, self.height))
        rows = max(1, _EXPAND_CHUNK_PIXELS // self.width)
        for top in range(0, self.height, rows):
            block = np.take(self.palette, self.labels[top : top + rows], axis=0)
            strip = Image.frombuffer(self.mode, (self.width, block.shape[0]), block.tobytes(), "raw", self.mode, 0, 1)
            picture.paste(strip, (0, top))
        return picture

    def to_pil_palette(self) -> "Image.Image":
        """Return a Pillow mode-P image (k <= 256), with alpha as the palette's transparency."""
        from PIL import Image

        if self.k > 256:
            raise ValueError(f"a Pillow P image holds at most 256 colours, this image has {self.k}")
        image = Image.fromarray(self.labels.astype(np.uint8), "L")
        image = image.convert("P")  # keeps the indices; the palette is replaced below
        image.putpalette(self.palette.tobytes(), rawmode=self.mode)
        return image

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, KMQImage):
            return NotImplemented
        return np.array_equal(self.palette, other.palette) and np.array_equal(self.labels, other.labels)

    def __hash__(self) -> int:
        return hash((self.palette.tobytes(), self.labels.shape, self.labels.tobytes()))

    def __repr__(self) -> str:
        return f"KMQImage({self.width}x{self.height}, {self.mode}, k={self.k}, {self.label_bits} bits/pixel)"
