"""The compare report: HTML checked in a real headless browser, PNG opened with Pillow, and without matplotlib."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from kmcodec import api
from kmcodec.cli import main

from conftest import sklearn_image

KS = ["4", "16"]


@pytest.fixture(scope="module")
def photo(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("report") / "china.png"
    Image.fromarray(sklearn_image("china.jpg")).resize((96, 64), Image.LANCZOS).save(path)
    return path


def _chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    pytest.skip("no headless browser: install Debian's chromium package (apt-get install chromium)")


def test_html_report_renders_in_a_browser(photo, tmp_path, capsys):
    pytest.importorskip("matplotlib", reason="the plot extra: pip install 'kmcodec[plot]'")
    report = tmp_path / "report.html"
    assert main(["compare", str(photo), "-k", *KS, "-o", str(report)]) == 0
    terminal = capsys.readouterr().out
    text = report.read_text(encoding="utf-8")
    sources = re.findall(r'<img[^>]*src="([^"]+)"', text)
    assert len(sources) == 1 + len(KS) + 1  # original, one per k, the plot
    assert all(source.startswith("data:image/") for source in sources)  # self-contained
    assert not re.search(r'(src|href)="(?!data:)', text)
    # the table holds the real file size, and the palette one swatch per colour of the decoded file
    reference = api.encode(photo, 4)
    assert f"<td>{len(reference):,}</td>" in text and f"{len(reference):,}" in terminal
    palette_k4 = text.split('aria-label="palette of ')[1]
    assert palette_k4.startswith(f"{api.decode(reference).k} colours")
    assert all(f'<span title="#{entry.tobytes().hex()}"' in text for entry in api.decode(reference).palette)
    assert text.count("<tbody><tr>") == 1 and text.count("<tr>") == 1 + len(KS)

    # a real browser: every image decodes, the table has a row per k
    probe = tmp_path / "probe.html"
    probe.write_text(
        text.replace(
            "</body>",
            "<script>addEventListener('load', () => { const i = [...document.images];"
            " document.body.dataset.loaded = i.filter(x => x.complete && x.naturalWidth > 0).length + '/' + i.length;"
            " document.body.dataset.rows = document.querySelectorAll('tbody tr').length; });</script></body>",
        ),
        encoding="utf-8",
    )
    browser = [
        _chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--virtual-time-budget=5000",
    ]
    dom = subprocess.run([*browser, "--dump-dom", probe.as_uri()], capture_output=True, text=True, timeout=60).stdout
    assert f'data-loaded="{len(sources)}/{len(sources)}"' in dom
    assert f'data-rows="{len(KS)}"' in dom


def test_png_report_has_pictures_table_and_plot(photo, tmp_path):
    pytest.importorskip("matplotlib", reason="the plot extra: pip install 'kmcodec[plot]'")
    report = tmp_path / "report.png"
    assert main(["compare", str(photo), "-k", *KS, "-o", str(report), "-q"]) == 0
    with Image.open(report) as picture:
        assert picture.format == "PNG"
        assert picture.width >= 800 and picture.height >= 500
        pixels = np.asarray(picture.convert("RGB")).astype(np.int64)
    assert pixels.std() > 20
    colours = np.unique((pixels[..., 0] << 16) | (pixels[..., 1] << 8) | pixels[..., 2])
    assert colours.size > 500  # photos, not a blank page
    # the k=4 picture is in there: every colour of its palette appears in the report
    palette = api.decode(api.encode(photo, 4)).palette.astype(np.int64)
    assert np.isin((palette[:, 0] << 16) | (palette[:, 1] << 8) | palette[:, 2], colours).all()


def test_without_matplotlib_html_says_how_to_get_the_plot(photo, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if the plot extra were not installed
    report = tmp_path / "report.html"
    assert main(["compare", str(photo), "-k", "4", "8", "-o", str(report), "-q"]) == 0
    assert "pip install 'kmcodec[plot]'" in capsys.readouterr().err
    text = report.read_text(encoding="utf-8")
    assert "No rate-distortion plot" in text and "kmcodec[plot]" in text
    assert text.count("<img") == 3
    assert main(["compare", str(photo), "-k", "4", "-o", str(tmp_path / "r.png")]) == 1
    assert "kmcodec[plot]" in capsys.readouterr().err
    assert not (tmp_path / "r.png").exists()


def test_compare_with_rdo_reports_smaller_files_within_the_budget(photo, tmp_path, capsys):
    """`compare --rdo` smooths every k like `encode --rdo`, and the report says so."""
    from kmcodec import report

    plain = report.compare(photo, [8, 32])
    smoothed = report.compare(photo, [8, 32], rdo=0.3)
    for before, after in zip(plain.rows, smoothed.rows):
        assert after.file_bytes < before.file_bytes
        assert 0.0 < before.quality.psnr - after.quality.psnr <= 0.3 + 1e-9
    out = tmp_path / "rdo.html"
    assert main(["compare", str(photo), "-k", "8", "32", "-o", str(out), "--rdo", "0.3", "-q"]) == 0
    assert "auto coding, --rdo 0.3 dB" in out.read_text()
