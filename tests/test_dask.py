"""Scale-out: the batch command on a real local Dask cluster (two worker processes, loopback only)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from PIL import Image

from kmcodec import api
from kmcodec.cli import main

from conftest import sklearn_image


def test_batch_on_a_local_dask_cluster(tmp_path, capsys):
    pytest.importorskip("distributed", reason="the dask extra: pip install 'kmcodec[dask]'")
    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    sources = [folder / "china.png", folder / "sub" / "flower.png"]
    for path, name in zip(sources, ("china.jpg", "flower.jpg")):
        Image.fromarray(sklearn_image(name)).resize((64, 48), Image.LANCZOS).save(path)
    (folder / "notes.png").write_bytes(b"not an image at all")
    out = tmp_path / "out"
    code = main(["encode", str(folder), "-r", "-d", str(out), "-k", "8", "--scheduler", "local", "-j", "2"])
    captured = capsys.readouterr()
    assert code == 1
    assert f"kmcodec: error: {folder / 'notes.png'}: not an image format Pillow can read" in captured.err
    assert "encoded 2 of 3 files (1 failed)" in captured.out and "on Dask (local)" in captured.out
    for source, target in zip(sources, [out / "china.kmq", out / "sub" / "flower.kmq"]):
        assert target.read_bytes() == api.encode(source, 8)  # the workers wrote exactly what this process makes


def test_scheduler_without_dask_says_how_to_get_it(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "distributed", None)  # as if the dask extra were not installed
    source = tmp_path / "china.png"
    Image.fromarray(sklearn_image("china.jpg")[:32, :32]).save(source)
    assert main(["encode", str(source), "-d", str(tmp_path / "out"), "-k", "4", "--scheduler", "local"]) == 1
    assert "pip install 'kmcodec[dask]'" in capsys.readouterr().err
    assert not (tmp_path / "out" / "china.kmq").exists()
