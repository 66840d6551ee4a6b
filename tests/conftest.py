"""Shared fixtures: real test images from scikit-learn, scikit-image and Debian's gnome-backgrounds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

GNOME_BACKGROUNDS = Path("/usr/share/backgrounds/gnome")


def sklearn_image(name: str) -> np.ndarray:
    """scikit-learn's bundled sample photo (china.jpg or flower.jpg) as an RGB array."""
    from sklearn.datasets import load_sample_image

    return load_sample_image(name)


def sklearn_image_path(name: str) -> Path:
    """Path of the JPEG file scikit-learn ships."""
    import sklearn.datasets

    return Path(sklearn.datasets.__file__).parent / "images" / name


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
