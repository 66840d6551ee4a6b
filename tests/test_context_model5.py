"""Coding 5 and its model 5 (spec 5.4) on real images: the band layer decoded from the spec, and the point of it.

Model 5 must beat model 4 where auto uses it (k <= 64 on images over 2^19 pixels), and
auto must choose between the two banded context codings as codings.py says. (The
bit-exactness, round-trip and damage tests of models 4 and 5: test_context_models.py.)
"""

from __future__ import annotations

import numpy as np
import pytest

from kmcodec import api, banded, codings
from kmcodec.container import Header

from banded_reference import decode_banded
from conftest import gnome_background, skimage_image
from context_reference import StreamError
from test_context_models import quantized_labels

pytestmark = pytest.mark.skipif(codings._ctxcoder is None, reason="kmcodec._ctxcoder not built (python setup.py build_ext --inplace)")


def test_banded_reference_decodes_a_multi_band_coding_5_payload(flower: np.ndarray) -> None:
    labels = quantized_labels(flower[100:160, 200:260], 16)
    height, width = labels.shape
    header = Header(width=width, height=height, channels=3, k=16, coding=codings.CONTEXT2.id, payload_length=0)
    flat = labels.reshape(-1)
    payload = banded.encode_bands(flat, width, height, lambda band, rows: codings._ctxcoder.encode(band, width, rows, 16, 5),
                                  bands=3, workers=2)
    assert decode_banded(payload, width, height, 16, model=5) == flat.tolist()
    assert np.array_equal(codings.CONTEXT2.decode(payload, header), flat)
    try:  # the model is part of the coding: model 4 cannot read a coding-5 stream
        assert decode_banded(payload, width, height, 16, model=4) != flat.tolist()
    except StreamError:
        pass


def sizes_by_model(labels: np.ndarray, k: int) -> dict[int, int]:
    height, width = labels.shape
    return {model: len(codings._ctxcoder.encode(labels, width, height, k, model=model)) for model in (4, 5)}


def test_model_5_is_smaller_than_model_4_on_quantized_photos_at_k_16(china: np.ndarray, flower: np.ndarray) -> None:
    """The point of model 5 (tools/bench_size.py measures it on the whole corpus): 1.4-2.4 % here."""
    for pixels in (china, flower, skimage_image("coffee")):
        sizes = sizes_by_model(quantized_labels(pixels, 16), 16)
        assert sizes[5] < 0.99 * sizes[4], sizes


def test_model_5_is_smaller_than_model_4_at_k_64_on_a_megapixel_photo() -> None:
    """At k = 64 the joint tree contexts (4096 label pairs) need about a megapixel to learn: on 0.3 MP photos
    model 5 is up to 1.5 % larger (auto codes both there), on a 1 MP wood photo 2.8 % smaller."""
    from PIL import Image

    with Image.open(gnome_background("wood-l.webp")) as image:
        pixels = np.asarray(image.convert("RGB").reduce(4))
    sizes = sizes_by_model(quantized_labels(pixels, 64), 64)
    assert sizes[5] < 0.985 * sizes[4], sizes


def test_auto_codes_big_images_with_one_context_coding_chosen_by_label_width(flower: np.ndarray) -> None:
    big = np.tile(flower, (2, 2, 1))  # 1.1 MP: over AUTO_BOTH_CONTEXTS_MAX_LABELS, so auto codes one context coding
    for k, model in ((16, codings.CLIMB_MODEL), (256, codings.BAND_MODEL)):
        image = api.quantize(big, k, seed=0)
        assert image.labels.size > codings.AUTO_BOTH_CONTEXTS_MAX_LABELS
        data = api.encode(image)
        payload = data[36 + image.k * image.channels :]
        if model == codings.CLIMB_MODEL:  # only coding 7 holds model 6 (spec 5.6): its second payload byte
            assert (data[10], payload[1]) == (codings.CONTEXT3.id, model)
        elif data[10] == codings.CONTEXT_COLUMNS.id:  # model 4 in one band (1.1 MP) by columns: coding 6 (spec 5.5)
            assert payload[0] == model
        else:
            assert data[10] == codings.CONTEXT.id
        assert api.decode(data) == image
