"""Scale-out: the batch command on a real local Dask cluster (two worker processes, loopback only)."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from PIL import Image

from kmcodec import api
from kmcodec.cli import main

from conftest import sklearn_image


def test_batch_on_a_local_dask_cluster(tmp_path, capsys):
    """A decode batch (no k-means in the workers keeps this quick) with a damaged file among good ones."""
    pytest.importorskip("distributed", reason="the dask extra: pip install 'kmcodec[dask]'")
    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    sources = {folder / "china.kmq": 8, folder / "sub" / "flower.kmq": 16}
    for (path, k), name in zip(sources.items(), ("china.jpg", "flower.jpg")):
        api.write(path, sklearn_image(name)[::6, ::6], k)
    damaged = folder / "damaged.kmq"
    damaged.write_bytes((folder / "china.kmq").read_bytes()[:-10])
    out = tmp_path / "out"
    code = main(["decode", str(folder), "-r", "-d", str(out), "--scheduler", "local", "-j", "2"])
    captured = capsys.readouterr()
    assert code == 1
    assert f"kmcodec: error: {damaged}:" in captured.err and "Traceback" not in captured.err
    assert "decoded 2 of 3 files (1 failed)" in captured.out and "on Dask (local)" in captured.out
    for source, target in zip(sources, [out / "china.png", out / "sub" / "flower.png"]):
        with Image.open(target) as picture:  # the workers wrote exactly the decoded pixels
            assert np.array_equal(np.asarray(picture.convert("RGB")), api.read(source).to_array())
    assert not (out / "damaged.png").exists()


def test_batch_on_a_running_scheduler_by_address(tmp_path, capsys):
    """--scheduler tcp://HOST:PORT: the way to a real cluster, here a two-process cluster on 127.0.0.1."""
    distributed = pytest.importorskip("distributed", reason="the dask extra: pip install 'kmcodec[dask]'")
    source = tmp_path / "flower.kmq"
    api.write(source, sklearn_image("flower.jpg")[::8, ::8], 12)
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None
    ) as cluster:
        address = cluster.scheduler_address
        assert address.startswith("tcp://127.0.0.1:")
        code = main(["decode", str(source), "-d", str(tmp_path / "out"), "--format", "webp", "--scheduler", address])
    assert code == 0, capsys.readouterr().err
    assert f"on Dask ({address})" in capsys.readouterr().out
    with Image.open(tmp_path / "out" / "flower.webp") as picture:
        assert np.array_equal(np.asarray(picture.convert("RGB")), api.read(source).to_array())


def test_scheduler_without_dask_says_how_to_get_it(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "distributed", None)  # as if the dask extra were not installed
    source = tmp_path / "china.kmq"
    api.write(source, sklearn_image("china.jpg")[:32, :32], 4)
    assert main(["decode", str(source), "-d", str(tmp_path / "out"), "--scheduler", "local"]) == 1
    assert "pip install 'kmcodec[dask]'" in capsys.readouterr().err
    assert not (tmp_path / "out" / "china.png").exists()
