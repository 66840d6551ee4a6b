"""Visual comparison reports: one image encoded at several k, shown as pictures, palettes, a table
and a rate-distortion plot, written as one self-contained HTML file or as one PNG.

Plots need matplotlib (the optional extra `kmcodec[plot]`); the HTML report renders without it
and says so in place of the plot, the PNG report needs it.
"""

from __future__ import annotations

import base64
import html
import io
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from . import __version__, api
from .atomic import atomic_output
from .image import KMQImage
from .imageio import load_pixels
from .metrics import Quality, compare_images
from .quantizer import DEFAULT_ENGINE

PLOT_HINT = "install the plot extra: pip install 'kmcodec[plot]' (matplotlib)"


@dataclass(frozen=True)
class Row:
    """One k of the comparison: the decoded image, its file size, its quality and the encode time."""

    requested_k: int
    image: KMQImage
    file_bytes: int
    seconds: float
    quality: Quality

    @property
    def bits_per_pixel(self) -> float:
        """File bits per pixel, header and palette included."""
        return 8 * self.file_bytes / (self.image.width * self.image.height)


@dataclass(frozen=True)
class Comparison:
    """An original image and its rows, one per k."""

    name: str
    original: np.ndarray
    input_bytes: int
    coding: str
    rows: tuple[Row, ...]
    #: the --rdo budget the files were smoothed within (dB of PSNR; 0: nearest-colour labels)
    rdo: float = 0.0

    @property
    def how_coded(self) -> str:
        """The coding, and the rdo budget if any, as the report states them."""
        return f"{self.coding} coding" + (f", --rdo {self.rdo:g} dB" if self.rdo else "")

    @property
    def raw24_bytes(self) -> int:
        """Bytes of the pixels as 24-bit RGB."""
        return self.original.shape[0] * self.original.shape[1] * 3


def plotting_available() -> bool:
    """Whether matplotlib (the `plot` extra) can be imported."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def compare(
    source: Path, ks: Sequence[int], *, coding: str = api.DEFAULT_CODING, seed: int = 0, engine: str = DEFAULT_ENGINE,
    rdo: float = 0.0,
) -> Comparison:
    """Encode the image at every k, decode each file back, and measure size, PSNR, ΔE2000 and encode time.

    rdo > 0 smooths every k's labels within that PSNR budget (see api.quantize)."""
    pixels = load_pixels(source)
    # warm up on a crop first, so that the first k's time does not include loading the k-means engine
    api.quantize(np.ascontiguousarray(pixels[:16, :16]), 2, seed=seed, engine=engine)
    rows = []
    for k in ks:
        started = time.perf_counter()
        data = api.encode(api.quantize(pixels, k, seed=seed, engine=engine, rdo=rdo), coding=coding)
        seconds = time.perf_counter() - started
        decoded = api.decode(data)  # measure what a reader of the file gets, not the encoder's intermediate
        rows.append(Row(k, decoded, len(data), seconds, compare_images(pixels, decoded.to_array())))
    return Comparison(Path(source).name, pixels, Path(source).stat().st_size, coding, tuple(rows), rdo)


def table_rows(comparison: Comparison) -> list[dict[str, str]]:
    """The table's cells as text, one dict per k (shared by the HTML, PNG and terminal tables)."""
    out = []
    for row in comparison.rows:
        psnr = "inf" if np.isinf(row.quality.psnr) else f"{row.quality.psnr:.2f}"
        out.append(
            {
                "k": f"{row.requested_k}" + (f" ({row.image.k} used)" if row.image.k != row.requested_k else ""),
                "bits/pixel": f"{row.image.label_bits} ({row.bits_per_pixel:.2f} with overhead)",
                "bytes": f"{row.file_bytes:,}",
                "vs input": f"{row.file_bytes / comparison.input_bytes:.3f}x",
                "vs 24-bit raw": f"{row.file_bytes / comparison.raw24_bytes:.3f}x",
                "PSNR dB": psnr,
                "ΔE2000": f"{row.quality.delta_e:.2f}",
                "time s": f"{row.seconds:.2f}",
            }
        )
    return out


def text_table(comparison: Comparison) -> str:
    """The table for a terminal."""
    rows = table_rows(comparison)
    headers = list(rows[0]) if rows else []
    widths = {h: max(len(h), *(len(r[h]) for r in rows)) for h in headers}
    lines = ["  ".join(h.rjust(widths[h]) for h in headers)]
    lines += ["  ".join(r[h].rjust(widths[h]) for h in headers) for r in rows]
    return "\n".join(lines)


def _preview(pixels: np.ndarray, longest: int):
    """A Pillow image no larger than `longest` on its long side, sampled with NEAREST so that every
    picture (original and quantized) is subsampled the same way and shows only colours it really has."""
    from PIL import Image

    picture = Image.fromarray(pixels, "RGBA" if pixels.shape[2] == 4 else "RGB")
    scale = longest / max(picture.size)
    if scale < 1:
        picture = picture.resize(
            (max(1, round(picture.width * scale)), max(1, round(picture.height * scale))), Image.NEAREST
        )
    return picture


def _png_data_uri(picture) -> str:
    buffer = io.BytesIO()
    colours = picture.getcolors(256)
    if colours is not None and picture.mode == "RGB":  # a quantized picture: an 8-bit palette PNG is much smaller
        picture = picture.quantize(colors=len(colours), method=2, dither=0)
    picture.save(buffer, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def rd_plot(comparison: Comparison, image_format: str = "svg") -> bytes:
    """The rate-distortion plot (file bytes against PSNR, one point per k) as SVG or PNG bytes."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6.4, 4.0), dpi=100)
    _draw_rd(figure.add_subplot(1, 1, 1), comparison)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format=image_format, metadata={"Date": None} if image_format == "svg" else None)
    return buffer.getvalue()


def _draw_rd(axes, comparison: Comparison) -> None:
    finite = [r for r in comparison.rows if np.isfinite(r.quality.psnr)]
    sizes = [r.file_bytes for r in finite]
    psnrs = [r.quality.psnr for r in finite]
    axes.plot(sizes, psnrs, "o-", color="#1f5fa8")
    for row in finite:
        axes.annotate(
            f"k={row.requested_k}",
            (row.file_bytes, row.quality.psnr),
            textcoords="offset points",
            xytext=(6, -3),
            fontsize=8,
        )
    axes.axvline(comparison.input_bytes, color="#a83232", linestyle="--", linewidth=1)
    axes.annotate(
        f"input file ({comparison.input_bytes:,} B)",
        (comparison.input_bytes, min(psnrs, default=0)),
        textcoords="offset points",
        xytext=(-4, 4),
        fontsize=8,
        color="#a83232",
        ha="right",
    )
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    axes.set_xscale("log")
    axes.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axes.xaxis.set_major_formatter(FuncFormatter(lambda value, _: _short_bytes(value)))
    axes.xaxis.set_minor_formatter(NullFormatter())
    axes.set_xlabel(f".kmq file size, bytes ({comparison.how_coded}, log scale)")
    axes.set_ylabel("PSNR, dB")
    axes.set_title("rate-distortion across k")
    axes.grid(True, which="both", alpha=0.3)
    axes.margins(x=0.1, y=0.1)


def _short_bytes(value: float) -> str:
    """1500 -> '1.5 kB', for axis ticks."""
    for unit, size in (("MB", 1e6), ("kB", 1e3)):
        if value >= size:
            return f"{value / size:g} {unit}"
    return f"{value:g} B"


def render_html(comparison: Comparison, *, preview: int = 640) -> str:
    """The whole report as one HTML document with every picture embedded as a data: URI."""
    esc = html.escape
    height, width = comparison.original.shape[:2]
    figures = [
        f'<figure><img alt="original" src="{_png_data_uri(_preview(comparison.original, preview))}">'
        f"<figcaption><b>original</b><br>{comparison.input_bytes:,} bytes</figcaption></figure>"
    ]
    for row in comparison.rows:
        swatches = "".join(
            f'<span title="#{entry.tobytes().hex()}" style="background:rgba({entry[0]},{entry[1]},{entry[2]},'
            f'{(entry[3] if entry.size == 4 else 255) / 255:.3f})"></span>'
            for entry in row.image.palette
        )
        psnr = "lossless" if np.isinf(row.quality.psnr) else f"{row.quality.psnr:.2f} dB"
        figures.append(
            f'<figure><img alt="k={row.requested_k}" src="{_png_data_uri(_preview(row.image.to_array(), preview))}">'
            f"<figcaption><b>k = {row.requested_k}</b><br>{row.file_bytes:,} bytes, {psnr}</figcaption>"
            f'<div class="swatches" aria-label="palette of {row.image.k} colours">{swatches}</div></figure>'
        )
    cells = table_rows(comparison)
    headers = list(cells[0]) if cells else []
    table = (
        "<table><thead><tr>"
        + "".join(f"<th>{esc(h)}</th>" for h in headers)
        + "</tr></thead><tbody>"
        + "".join("<tr>" + "".join(f"<td>{esc(r[h])}</td>" for h in headers) + "</tr>" for r in cells)
        + "</tbody></table>"
    )
    if plotting_available():
        svg = base64.b64encode(rd_plot(comparison, "svg")).decode("ascii")
        plot = f'<img class="plot" alt="rate-distortion plot" src="data:image/svg+xml;base64,{svg}">'
    else:
        plot = f'<p class="note">No rate-distortion plot: matplotlib is not installed; {esc(PLOT_HINT)}.</p>'
    shown = (
        "" if max(width, height) <= preview else f" Pictures are shown at most {preview} px wide (nearest-neighbour)."
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>kmcodec compare: {esc(comparison.name)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }}
.pictures {{ display: flex; flex-wrap: wrap; gap: 1em; align-items: flex-start; }}
figure {{ margin: 0; max-width: {preview}px; }}
figure img {{ max-width: 100%; image-rendering: pixelated; border: 1px solid #ccc; }}
figcaption {{ font-size: 0.9em; margin: 0.3em 0; }}
.swatches {{ display: flex; flex-wrap: wrap; gap: 1px; }}
.swatches span {{ width: 12px; height: 12px; border: 1px solid #0002; }}
table {{ border-collapse: collapse; margin: 1.5em 0; }}
th, td {{ border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }}
th {{ background: #f0f0f0; }}
.note {{ color: #a83232; }}
</style></head>
<body>
<h1>kmcodec compare: {esc(comparison.name)}</h1>
<p>{width} x {height} pixels; input file {comparison.input_bytes:,} bytes; 24-bit raw {comparison.raw24_bytes:,} bytes;
{esc(comparison.how_coded)}; kmcodec {__version__}.{shown}</p>
<div class="pictures">{"".join(figures)}</div>
<h2>Sizes and quality</h2>
{table}
<p>bits/pixel: label bits ceil(log2 k), and the whole file's bits per pixel. PSNR over all channels;
ΔE2000: mean CIEDE2000 colour difference (below about 1 is invisible, above 5 is obvious).
Time: quantize and encode, after a warm-up (engine imports excluded).</p>
<h2>Rate and distortion</h2>
{plot}
</body></html>
"""


def write_html(comparison: Comparison, path: Path, *, preview: int = 640, overwrite: bool = False) -> None:
    """Write the HTML report atomically."""
    with atomic_output(path, overwrite=overwrite) as handle:
        handle.write(render_html(comparison, preview=preview).encode("utf-8"))


def write_png(comparison: Comparison, path: Path, *, preview: int = 640, overwrite: bool = False) -> None:
    """Write the report as one PNG (pictures, palettes, table and plot); needs matplotlib."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    pictures = [("original", comparison.original)] + [
        (f"k = {r.requested_k}", r.image.to_array()) for r in comparison.rows
    ]
    columns = min(len(pictures), 6)
    picture_rows = -(-len(pictures) // columns)
    height, width = comparison.original.shape[:2]
    cell_height = 3.6 * height / width + 0.9
    figure = Figure(figsize=(4.0 * columns, cell_height * picture_rows + 4.6), dpi=100)
    grid = figure.add_gridspec(picture_rows + 1, columns, height_ratios=[cell_height] * picture_rows + [4.6])
    for index, (title, pixels) in enumerate(pictures):
        cell = grid[index // columns, index % columns].subgridspec(
            2, 1, height_ratios=[cell_height - 0.9, 0.5], hspace=0.15
        )
        axes = figure.add_subplot(cell[0])
        axes.imshow(np.asarray(_preview(pixels, preview)), interpolation="nearest")
        axes.set_title(title, fontsize=10)
        axes.set_axis_off()
        if index:
            palette = comparison.rows[index - 1].image.palette
            strip = figure.add_subplot(cell[1])
            per_row = 32
            swatch = np.full((-(-len(palette) // per_row) * per_row, palette.shape[1]), 255, dtype=np.uint8)
            swatch[: len(palette)] = palette
            strip.imshow(swatch[:, :3].reshape(-1, per_row, 3), interpolation="nearest", aspect="auto")
            strip.set_axis_off()
    bottom = grid[picture_rows, :].subgridspec(1, 2, width_ratios=[1.3, 1], wspace=0.25)
    table_axes = figure.add_subplot(bottom[0])
    table_axes.set_axis_off()
    cells = table_rows(comparison)
    if cells:
        table = table_axes.table(cellText=[list(r.values()) for r in cells], colLabels=list(cells[0]), loc="center")
        table.auto_set_font_size(False)
        table.set_fontsize(8)
        table.auto_set_column_width(list(range(len(cells[0]))))
        table.scale(1, 1.4)
    table_axes.set_title(
        f"{comparison.name}: {width} x {height}, input {comparison.input_bytes:,} B, "
        f"24-bit raw {comparison.raw24_bytes:,} B",
        fontsize=9,
    )
    _draw_rd(figure.add_subplot(bottom[1]), comparison)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", bbox_inches="tight", pad_inches=0.3)
    with atomic_output(path, overwrite=overwrite) as handle:
        handle.write(buffer.getvalue())
