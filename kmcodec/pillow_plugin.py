"""Pillow integration: after `import kmcodec`, Image.open reads .kmq files and Image.save writes them.

Files with k <= 256 open in mode P (alpha, if any, in info["transparency"] as
PngImagePlugin gives it: one index, or every entry's alpha); larger palettes open as
RGB or RGBA. verify() checks the container and both CRCs without decoding labels.
Saving a P image without `colors=` stores its palette and indices as they are;
anything else is quantized to `colors` (default 256) colours. The save option
`coding=` picks the label coding (default "auto").
"""

from __future__ import annotations

from typing import IO

from PIL import Image, ImageFile, ImagePalette

from .errors import KMQError
from .names import DEFAULT_MAX_PIXELS

FORMAT = "KMQ"

# The container module (and the dataclasses it needs, ~7 ms) loads on the first .kmq Pillow meets, not on
# `import kmcodec`: the command line decodes its input picture sooner.


def _accept(prefix: bytes) -> bool:
    from .container import SIGNATURE

    return prefix[: len(SIGNATURE)] == SIGNATURE


class KmqImageFile(ImageFile.ImageFile):
    """Pillow image file for .kmq."""

    format = FORMAT
    format_description = "k-means quantized palette image"

    def _open(self) -> None:
        from .container import HEADER_SIZE, parse_header

        assert self.fp is not None
        start = self.fp.tell()
        try:
            header = parse_header(self.fp.read(HEADER_SIZE), max_pixels=DEFAULT_MAX_PIXELS)
        except KMQError as exc:
            raise SyntaxError(f"broken KMQ file: {exc}") from exc
        self._size = (header.width, header.height)
        self.info["kmq_k"] = header.k
        self.info["kmq_coding"] = header.coding
        if header.k <= 256:
            palette = self.fp.read(header.palette_size)
            if len(palette) != header.palette_size:
                raise SyntaxError("broken KMQ file: palette truncated")
            self._mode = "P"
            # as PngImagePlugin does: an RGB palette, and per-entry alpha in info["transparency"]
            if header.channels == 4:
                rgb = bytes(value for index, value in enumerate(palette) if index % 4 != 3)
                self.info["transparency"] = _transparency(palette[3::4])
            else:
                rgb = palette
            self.palette = ImagePalette.raw("RGB", rgb)
        else:
            self._mode = "RGBA" if header.channels == 4 else "RGB"
        self._kmq_start = start
        self.tile = [_tile("kmq", (0, 0, *self._size), start)]

    def verify(self) -> None:
        """Check the whole file without decoding its labels: signature, header, palette, payload length,
        both CRC-32s (what kmcodec's container reader checks). Raise SyntaxError("broken KMQ file: ...") on
        damage, as PngImagePlugin does for a bad CRC. Like every Pillow verify(), it must come directly after
        open and closes the file: reopen the image to use it.
        """
        from .codings import check_payload_length
        from .container import read_container

        if self.fp is None:
            raise RuntimeError("verify must be called directly after open")
        self.fp.seek(self._kmq_start)
        try:
            read_container(
                self.fp, max_pixels=DEFAULT_MAX_PIXELS, check_payload_length=check_payload_length, allow_trailing=True
            )
        except KMQError as exc:
            raise SyntaxError(f"broken KMQ file: {exc}") from exc
        super().verify()


def _transparency(alpha: bytes) -> int | bytes:
    """info["transparency"] as PngImagePlugin gives it: the index when exactly one entry has alpha 0 and all
    others 255 (what GIF and other single-index formats can save), else the alpha of every entry."""
    if alpha.count(0) == 1 and alpha.count(255) == len(alpha) - 1:
        return alpha.index(0)
    return alpha


def _tile(codec: str, box: tuple[int, int, int, int], offset: int) -> tuple:
    """One tile: Pillow >= 11 describes tiles with ImageFile._Tile, Pillow 10 (pyproject allows >= 10.1) with tuples."""
    make = getattr(ImageFile, "_Tile", None)
    return make(codec, box, offset, None) if make is not None else (codec, box, offset, None)


class KmqDecoder(ImageFile.PyDecoder):
    """Decodes a whole .kmq container into Pillow's image memory."""

    _pulls_fd = True

    def decode(self, buffer: bytes | Image.SupportsArrayInterface) -> tuple[int, int]:
        import numpy as np

        from .api import decode

        assert self.fd is not None
        try:
            image = decode(self.fd, allow_trailing=True)
        except KMQError as exc:
            raise OSError(f"broken KMQ file: {exc}") from exc
        if self.mode == "P":
            self.set_as_raw(image.labels.astype(np.uint8).tobytes(), "P")
        else:
            self.set_as_raw(image.to_array().tobytes(), self.mode)
        return -1, 0


def _save(im: Image.Image, fp: IO[bytes], filename: str | bytes) -> None:
    from .api import encode
    from .image import KMQImage

    options = im.encoderinfo
    colors = options.get("colors")
    coding = options.get("coding", "auto")
    seed = options.get("seed", 0)  # passed as given: the quantizer refuses 1.9, "16" or True rather than truncate
    rdo = options.get("rdo", 0.0)
    if im.mode == "P" and "transparency" in options:  # save(..., transparency=i) as PNG and GIF take it
        im = im.copy()
        im.info["transparency"] = options["transparency"]
    if im.mode == "P" and colors is None:
        if rdo:
            from .quantizer import QuantizeOptionError

            raise QuantizeOptionError("rdo= needs colors=: a P image saved without it keeps its palette and labels")
        image = _palette_image(im)
    else:
        image = None
    if image is None:
        from .api import quantize

        image = quantize(im, 256 if colors is None else colors, seed=seed, rdo=rdo)  # colors=0 is refused there
    assert isinstance(image, KMQImage)
    fp.write(encode(image, coding=coding))


def _palette_image(im: Image.Image):
    """A mode-P image as a KMQImage without re-quantizing (its palette, trimmed to the entries in use)."""
    import numpy as np

    from .image import KMQImage

    indices = np.asarray(im)
    mode, raw = im.palette.getdata() if im.palette else ("RGB", b"")
    channels = 4 if mode == "RGBA" else 3
    palette = np.frombuffer(raw, dtype=np.uint8)
    palette = palette[: palette.size // channels * channels].reshape(-1, channels)
    if "transparency" in im.info and channels == 3:
        alpha = np.full(palette.shape[0], 255, dtype=np.uint8)
        transparency = im.info["transparency"]
        if isinstance(transparency, int):
            if transparency < alpha.size:
                alpha[transparency] = 0
        else:
            values = np.frombuffer(bytes(transparency), dtype=np.uint8)[: alpha.size]
            alpha[: values.size] = values
        palette = np.concatenate([palette, alpha[:, None]], axis=1)
        channels = 4
    used = int(indices.max()) + 1 if indices.size else 1
    if palette.shape[0] < used:
        return None  # indices beyond the palette: let the quantizer sort it out
    palette = palette[:used]
    if channels == 4 and bool((palette[:, 3] == 255).all()):
        palette = palette[:, :3]
    return KMQImage(palette, indices)


def register() -> None:
    """Register the KMQ format with Pillow (idempotent; called on `import kmcodec`)."""
    Image.register_open(FORMAT, KmqImageFile, _accept)
    Image.register_save(FORMAT, _save)
    Image.register_extension(FORMAT, ".kmq")
    Image.register_mime(FORMAT, "image/x-kmq")
    Image.register_decoder("kmq", KmqDecoder)
