"""The corrupt files the fuzzing campaigns found (tools/found_vectors.py) are rejected with their error kind."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from kmcodec import api
from kmcodec.errors import ERROR_KINDS

_SPEC = importlib.util.spec_from_file_location(
    "found_vectors", Path(__file__).resolve().parent.parent / "tools" / "found_vectors.py"
)
found_vectors = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(found_vectors)
VECTORS = found_vectors.found_vectors()


def test_vectors_are_named_for_the_suite_and_unique() -> None:
    names = [v["name"] for v in VECTORS]
    assert len(set(names)) == len(names)
    for vector in VECTORS:
        assert vector["name"].startswith("bad-fuzz-") and vector["name"].endswith(".kmq")
        assert vector["error"] in ERROR_KINDS and vector["description"]
        assert isinstance(vector["data"], bytes)


def test_the_base_file_is_valid() -> None:
    image = api.decode(found_vectors.BASE)
    assert image.labels.reshape(-1).tolist() == found_vectors.BASE_LABELS


@pytest.mark.parametrize("vector", VECTORS, ids=[v["name"] for v in VECTORS])
def test_each_vector_is_rejected_with_its_kind(vector) -> None:
    with pytest.raises(ERROR_KINDS[vector["error"]]):
        api.decode(vector["data"])
