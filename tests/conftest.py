"""Shared fixtures: real test images from scikit-learn, scikit-image and Debian's gnome-backgrounds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

GNOME_BACKGROUNDS = Path("/usr/share/backgrounds/gnome")


def _take_ctrl_c_as_a_terminal_gives_it() -> None:
    """A suite started in the background (`cmd &` in a non-interactive shell, as some CI runners and nohup
    scripts do) inherits SIGINT ignored, and every child it starts would inherit that too, so the Ctrl-C
    tests would see nothing happen. Python then also skips its KeyboardInterrupt handler. Put it back: a
    handled signal is reset to the default in an exec'd child, so the children get what a terminal gives."""
    import signal

    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


_take_ctrl_c_as_a_terminal_gives_it()


def damaged_stream(data, payload: bytes) -> bytes:
    """The payload with 1 to 4 bit flips and then cut at a length, all drawn by Hypothesis (`data` is st.data())."""
    from hypothesis import strategies as st

    damaged = bytearray(payload)
    for _ in range(data.draw(st.integers(1, 4))):
        position = data.draw(st.integers(0, len(damaged) - 1))
        damaged[position] ^= 1 << data.draw(st.integers(0, 7))
    return bytes(damaged[: data.draw(st.integers(0, len(damaged)))])


def file_with(header, payload: bytes) -> bytes:
    """A .kmq file of `header` (payload_length set to the payload's) with a zero palette around `payload`."""
    import dataclasses

    from kmcodec.container import build_file

    return build_file(dataclasses.replace(header, payload_length=len(payload)), bytes(header.channels * header.k), payload)


def assert_decodes_as_the_reference_does(header, damaged: bytes, shape: tuple[int, int], reference) -> None:
    """A damaged payload either decodes to what the spec-written `reference(payload, width, height, k)` decodes,
    or is a CodingError where the reference raises StreamError: the fuzzing check of every banded coding."""
    from context_reference import StreamError

    from kmcodec import api
    from kmcodec.errors import CodingError, KMQError

    try:
        image = api.decode(file_with(header, damaged))
    except KMQError as exc:
        assert isinstance(exc, CodingError), exc
        with pytest.raises(StreamError):
            reference(damaged, header.width, header.height, header.k)
    else:
        assert image.labels.shape == shape
        assert image.labels.reshape(-1).tolist() == reference(damaged, header.width, header.height, header.k)


def sklearn_image(name: str) -> np.ndarray:
    """scikit-learn's bundled sample photo (china.jpg or flower.jpg) as an RGB array.

    Read with Pillow, as sklearn.datasets.load_sample_image does, without importing sklearn.datasets (~1 s).
    """
    from PIL import Image

    with Image.open(sklearn_image_path(name)) as image:
        return np.asarray(image.convert("RGB"))


def sklearn_image_path(name: str) -> Path:
    """Path of the JPEG file scikit-learn ships (found without importing scikit-learn)."""
    import importlib.util

    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("scikit-learn is not installed")
    return Path(list(spec.submodule_search_locations)[0]) / "datasets" / "images" / name


def skimage_image(name: str) -> np.ndarray:
    """A scikit-image sample image that ships inside the package (no download)."""
    data = pytest.importorskip("skimage.data")
    return getattr(data, name)()


def gnome_background(name: str = "wood-l.webp") -> Path:
    """A large (16 MP) photo from Debian's gnome-backgrounds package; skip if the package is missing."""
    path = GNOME_BACKGROUNDS / name
    if not path.exists():
        pytest.skip(f"{path} missing: install Debian's gnome-backgrounds package")
    return path


@pytest.fixture(scope="session")
def china() -> np.ndarray:
    return sklearn_image("china.jpg")


@pytest.fixture(scope="session")
def flower() -> np.ndarray:
    return sklearn_image("flower.jpg")


@pytest.fixture(scope="session")
def china_path() -> Path:
    return sklearn_image_path("china.jpg")
