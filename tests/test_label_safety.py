"""Labels >= k never reach the coders: a KMQImage stays read-only through pickling and copying, encoding
checks the labels again, and the compiled context coder refuses them itself (it indexes its tables by label)."""

from __future__ import annotations

import copy
import pickle

import numpy as np
import pytest

import kmcodec
from kmcodec.codings import CODINGS
from kmcodec.errors import LabelError

_ctxcoder = pytest.importorskip("kmcodec._ctxcoder")


@pytest.fixture(scope="module")
def image(china: np.ndarray) -> kmcodec.KMQImage:
    return kmcodec.quantize(china[::8, ::8], 8)


def test_an_unpickled_image_is_checked_and_read_only_like_the_original(image: kmcodec.KMQImage) -> None:
    copy_of = pickle.loads(pickle.dumps(image))
    assert copy_of == image and hash(copy_of) == hash(image)
    assert not copy_of.labels.flags.writeable and not copy_of.palette.flags.writeable
    with pytest.raises(ValueError):
        copy_of.labels.setflags(write=True)
    assert copy.copy(image) is image and copy.deepcopy(image) is image  # immutable


def test_unpickling_runs_the_constructors_checks(image: kmcodec.KMQImage) -> None:
    """A pickle whose labels were edited to >= k (a damaged or hostile pickle) fails to load as a KMQImage."""
    data = pickle.dumps(image)
    labels = image.labels.tobytes()
    bad_labels = bytes([200]) + labels[1:]
    assert labels in data
    with pytest.raises(ValueError, match="labels must be in 0..7"):
        pickle.loads(data.replace(labels, bad_labels))


def test_the_arrays_cannot_be_made_writable_again(image: kmcodec.KMQImage) -> None:
    for array in (image.labels, image.palette):
        with pytest.raises(ValueError):
            array.setflags(write=True)


@pytest.mark.parametrize("coding", [c.name for c in CODINGS.values()] + ["auto"])
def test_encoding_refuses_labels_changed_behind_the_images_back(china: np.ndarray, coding: str) -> None:
    """Even through the arrays' base (deliberate), a label >= k is a LabelError, not a crash or a wrong file."""
    image = kmcodec.quantize(china[::8, ::8], 8)
    base = image.labels.base
    base.setflags(write=True)
    base[3, 5] = 200
    with pytest.raises(LabelError, match=rf"label 200 at pixel {3 * image.width + 5} is not below k = 8"):
        kmcodec.encode(image, coding=coding)


@pytest.mark.parametrize("model", [3, 4, 5])
@pytest.mark.parametrize("vector", [True, False])
def test_the_context_coder_refuses_a_label_not_below_k(model: int, vector: bool) -> None:
    labels = np.zeros((6, 7), np.uint8)
    labels[4, 2] = 8
    with pytest.raises(ValueError, match="label at pixel 30 is not below k = 8"):
        _ctxcoder.encode(labels, 7, 6, 8, model, vector)
    wide = np.zeros((6, 7), np.uint16)
    wide[5, 6] = 300
    with pytest.raises(ValueError, match="label at pixel 41 is not below k = 300"):
        _ctxcoder.encode(wide, 7, 6, 300, model, vector)
    with pytest.raises(ValueError, match="not below k = 1"):
        _ctxcoder.encode(np.ones((2, 2), np.uint8), 2, 2, 1, model, vector)
    labels[4, 2] = 7
    assert _ctxcoder.encode(labels, 7, 6, 8, model, vector)  # the same labels, all below k, code


def test_text_mode_files_are_refused_with_a_clear_message(image: kmcodec.KMQImage, tmp_path) -> None:
    """Not a str/bytes TypeError or a UnicodeDecodeError from deep inside."""
    path = tmp_path / "x.kmq"
    kmcodec.write(path, image)
    with open(tmp_path / "y.kmq", "w") as text, pytest.raises(TypeError, match=r"write\(\) needs a binary file .*y\.kmq"):
        kmcodec.write(text, image)
    for reader in (kmcodec.read, kmcodec.decode, kmcodec.read_header):
        with open(path, encoding="latin-1") as text, pytest.raises(TypeError, match="needs a binary file"):
            reader(text)
    with open(path, "rb") as binary:
        assert kmcodec.read(binary) == image
