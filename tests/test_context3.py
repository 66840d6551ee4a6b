"""Coding 7, context3 (spec 5.6), model 6, its bottom-up escapes (5.6.1), and model 7, "one of the neighbours?"
first (5.6.2).

The pure-Python decoders written from the spec (tests/context_reference.py for models 6 and 7,
tests/banded_reference.py for coding 7's band table) must agree with the compiled kernel
and the codec bit for bit on real images; the encoder must cut bands by cost, write what
auto promises (the smallest form), and the decoder must reject every defect 5.6 names.
"""

from __future__ import annotations

import dataclasses
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

import kmcodec
from kmcodec import api, banded, codings
from kmcodec.bitpack import label_bits, label_dtype
from kmcodec.cli import main as cli_main
from kmcodec.container import Header
from kmcodec.errors import CodingError
from kmcodec.image import KMQImage

from banded_reference import decode_context3
from conftest import damaged_stream, file_with, gnome_background, skimage_image
from context_reference import StreamError, decode_context

pytestmark = pytest.mark.skipif(codings._ctxcoder is None, reason="kmcodec._ctxcoder not built (python setup.py build_ext --inplace)")

CLIMB = codings.CLIMB_MODEL
ESCAPE_FIRST = codings.ESCAPE_FIRST_MODEL


def quantized(pixels: np.ndarray, k: int) -> np.ndarray:
    return kmcodec.quantize(np.ascontiguousarray(pixels[..., :3]), k, seed=0).labels


def header_for(labels: np.ndarray, k: int) -> Header:
    height, width = labels.shape
    return Header(width=width, height=height, channels=3, k=k, coding=codings.CONTEXT3.id, payload_length=0)


def flat(labels: np.ndarray, k: int) -> np.ndarray:
    return np.ascontiguousarray(labels.reshape(-1), dtype=label_dtype(label_bits(k)))


def encode_model(labels: np.ndarray, k: int, model: int, vector: bool = True) -> bytes:
    height, width = labels.shape
    return codings._ctxcoder.encode(np.ascontiguousarray(labels), width, height, k, model=model, vector=vector)


@pytest.fixture(scope="module")
def wood_crop() -> np.ndarray:
    """A 200 x 160 crop of gnome's wood photo, its columns as rows (by columns, where its escapes sit near W)."""
    with Image.open(gnome_background("wood-l.webp")) as picture:
        pixels = np.asarray(picture.convert("RGB").crop((1500, 1200, 1700, 1360)))
    return np.ascontiguousarray(quantized(pixels, 64).T)


# --- model 6 -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "k, box",
    [
        (2, (0, 0, 31, 23)),  # b = 1: the climb asks nothing, the label is W's sibling
        (3, (40, 10, 45, 30)),  # k not a power of two: heights whose other subtree is all >= k are skipped
        (16, (200, 300, 40, 37)),
        (17, (120, 80, 44, 30)),
        (37, (120, 80, 50, 33)),
        (64, (200, 300, 50, 33)),
        (100, (150, 250, 41, 30)),  # b = 7: reduced joint contexts, in the climb models too
        (200, (150, 250, 41, 30)),
        (256, (150, 250, 41, 30)),
        (16, (5, 5, 1, 40)),  # one column
        (64, (5, 5, 70, 1)),  # one row
    ],
)
def test_reference_decoder_written_from_the_spec_agrees_with_model_6(china: np.ndarray, k, box) -> None:
    check_against_the_reference(china, k, box, CLIMB)


def check_against_the_reference(china: np.ndarray, k: int, box: tuple[int, int, int, int],
                                model: int) -> tuple[bytes, np.ndarray, int]:
    """Code a crop of china (box: y, x, width, height) with `model`: the vector and scalar encoders must write the
    same bytes, the kernel and the spec's reference decoder must give the labels back, and the reference must
    reject the stream one byte short. Returns the stream, the labels and k."""
    y, x, width, height = box
    labels = quantized(china[y : y + height, x : x + width], k)
    k = max(k, int(labels.max()) + 1) if k > 2 else k
    payload = encode_model(labels, k, model)
    assert payload == encode_model(labels, k, model, vector=False)  # the vector encoder writes the same bytes
    assert decode_context(payload, width, height, k, model=model) == labels.reshape(-1).tolist()
    out = np.empty_like(labels)
    codings._ctxcoder.decode(payload, width, height, k, out, model=model)
    assert np.array_equal(out, labels)
    with pytest.raises(StreamError):
        decode_context(payload[:-1], width, height, k, model=model)
    return payload, labels, k


def test_model_6_climbs_on_wood_and_the_reference_follows(wood_crop: np.ndarray) -> None:
    """On wood by columns escaped labels sit next to W in the label tree, so model 6 climbs: its stream differs
    from model 5's, which it would equal if span never fell below 2 levels (the climb is for speed: fewer decisions
    a label; in size it is within 1 % of model 5 here, -0.5 % on the 4 MP image)."""
    height, width = wood_crop.shape
    six, five = encode_model(wood_crop, 64, CLIMB), encode_model(wood_crop, 64, 5)
    assert six != five
    assert abs(len(six) / len(five) - 1) < 0.01
    assert decode_context(six, width, height, 64, model=CLIMB) == wood_crop.reshape(-1).tolist()


def test_model_6_costs_little_against_model_5_on_photos(china: np.ndarray, flower: np.ndarray) -> None:
    """Model 6 exists for decoding speed; on photos, where it mostly walks from the root, it may not cost size:
    within 0.5 % of model 5 in all (measured on the corpus: -0.34 to +0.26 % an image)."""
    sizes = {5: 0, CLIMB: 0}
    for pixels in (china, flower, skimage_image("coffee")):
        for k in (16, 64):
            labels = quantized(pixels, k)
            for model in sizes:
                sizes[model] += len(encode_model(labels, k, model))
    assert sizes[CLIMB] < 1.005 * sizes[5], sizes


@pytest.fixture(scope="module")
def climb_sample(wood_crop: np.ndarray) -> tuple[np.ndarray, bytes]:
    labels = np.ascontiguousarray(wood_crop[:60, :80])
    return labels, encode_model(labels, 64, CLIMB)


@settings(max_examples=100, deadline=2000, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_damaged_model_6_streams_decode_to_valid_labels_or_raise(climb_sample, data) -> None:
    labels, payload = climb_sample
    height, width = labels.shape
    out = np.empty_like(labels)
    try:
        codings._ctxcoder.decode(damaged_stream(data, payload), width, height, 64, out, model=CLIMB)
    except ValueError:
        return
    assert int(out.max()) < 64


# --- bands cut by cost -----------------------------------------------------------------------------------------------


# --- model 7 -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "k, box",
    [
        (2, (0, 0, 31, 23)),  # b = 1
        (3, (40, 10, 45, 30)),  # k not a power of two: tree bits that would give a label >= k are not coded
        (16, (200, 300, 40, 37)),
        (37, (120, 80, 50, 33)),
        (200, (150, 250, 41, 30)),
        (256, (150, 250, 41, 30)),
        (16, (5, 5, 1, 40)),  # one column: one distinct neighbour (N) after the first row
        (64, (5, 5, 70, 1)),  # one row: one distinct neighbour (W)
    ],
)
def test_reference_decoder_written_from_the_spec_agrees_with_model_7(china: np.ndarray, k, box) -> None:
    payload, labels, k = check_against_the_reference(china, k, box, ESCAPE_FIRST)
    # the questions differ from model 4's, but not with one distinct neighbour (one row or column): then both ask
    # "is it W?" with models that start alike
    height, width = labels.shape
    assert (payload != encode_model(labels, k, 4)) == (width > 1 and height > 1)


def test_model_7_over_8_bits_agrees_with_the_reference(china: np.ndarray) -> None:
    """Labels of 9 bits and more (k = 300, 2-byte labels): the scalar walk, with deep models below depth 8."""
    crop = china[120:150, 250:290]
    labels = ((crop[..., 0].astype(int) * 7 + crop[..., 1]) % 300).astype(np.uint16)
    payload = encode_model(labels, 300, ESCAPE_FIRST)
    assert decode_context(payload, 40, 30, 300, model=ESCAPE_FIRST) == labels.reshape(-1).tolist()


def test_model_7_asks_fewer_questions_where_labels_are_none_of_their_neighbours(china: np.ndarray) -> None:
    """Model 7 is for images whose labels are mostly none of W, N, NW and NE: there it takes fewer decisions than
    model 4 (row_costs) for about the same size; on a flat image it takes more. Labels with 40 % noise against
    china's sky at k = 16 (4 % of labels none of their neighbours')."""
    rng = np.random.default_rng(7)
    smooth = quantized(china[100:228, 100:228], 64)
    noisy = np.where(rng.random(smooth.shape) < 0.4, rng.integers(0, 64, smooth.shape), smooth).astype(np.uint8)
    for labels, fewer in ((noisy, True), (quantized(china[:128, :128], 16), False)):
        height, width = labels.shape
        k = 64 if fewer else 16
        four, seven = (np.empty(height, dtype=np.uint64) for _ in range(2))
        codings._ctxcoder.row_costs(labels, width, height, k, four, 4)
        codings._ctxcoder.row_costs(labels, width, height, k, seven, ESCAPE_FIRST)
        assert (int(seven.sum()) < int(four.sum())) == fewer
        header = header_for(labels, k)
        assert (codings.escape_share(flat(labels, k), header) >= codings.ESCAPE_FIRST_MIN_SHARE) == fewer
        # on an image this small auto weighs model 7 beside model 4 where escapes abound (on larger ones, instead)
        assert codings.context3_models(flat(labels, k), header) == ((4, 5, 6, ESCAPE_FIRST) if fewer else (4, 5, 6))
    sizes = [len(encode_model(noisy, 64, model)) for model in (4, ESCAPE_FIRST)]
    assert sizes[1] <= sizes[0] * 1.01


@settings(max_examples=200, deadline=None)
@given(costs=st.lists(st.integers(0, 10**6), min_size=1, max_size=300), bands=st.integers(1, 64))
def test_balanced_band_heights_cover_the_rows_and_balance_the_cost(costs: list[int], bands: int) -> None:
    heights = banded.balanced_band_heights(np.array(costs, dtype=np.uint64), bands)
    assert len(heights) == min(bands, len(costs)) and min(heights) >= 1 and sum(heights) == len(costs)
    total, edges = sum(costs), np.cumsum([0, *heights])
    if total and len(heights) == bands:
        for start, stop in zip(edges[:-1], edges[1:]):
            # a band ends at the first row that reaches its share, so it overshoots by at most one row (or one row per
            # band that had to be pushed on for the bands after it to have a row each)
            assert sum(costs[start:stop]) <= total / bands + (bands + 1) * max(costs)


def expected_row_costs(labels: np.ndarray, bits: int, model: int) -> list[int]:
    """The decisions of each row as the spec counts them: models 4 to 6 ask W?, N?, NW?, NE? (each where it is a new
    neighbour) up to the one that names the label; model 7 asks "one of them?" and then which, up to the label's
    place among the distinct neighbours (none after the last); an escaped label adds b."""
    L = labels.astype(int)
    height, width = L.shape
    costs = []
    for y in range(height):
        total = 0
        for x in range(width):
            if y == 0:
                W = L[0, x - 1] if x else 0
                N = NW = NE = W
            else:
                N = L[y - 1, x]
                W = L[y, x - 1] if x else N
                NW = L[y - 1, x - 1] if x else N
                NE = L[y - 1, x + 1] if x + 1 < width else N
            distinct, v = list(dict.fromkeys([W, N, NW, NE])), L[y, x]
            if v not in distinct:
                total += (1 if model == ESCAPE_FIRST else len(distinct)) + bits
            elif model == ESCAPE_FIRST:
                total += 1 + min(distinct.index(v) + 1, len(distinct) - 1)
            else:
                total += distinct.index(v) + 1
        costs.append(total)
    return costs


@pytest.mark.parametrize("model", [5, ESCAPE_FIRST])
@pytest.mark.parametrize("box", [(100, 200, 60, 40), (100, 200, 1, 9), (100, 200, 2, 9), (100, 200, 3, 7),
                                 (100, 200, 9, 1), (0, 0, 64, 64)])
def test_row_costs_count_the_decisions(china: np.ndarray, model: int, box) -> None:
    """The kernel's estimate (the edges of a row read their neighbours as 5.2.2 says; the inner pixels run
    without branches), on a crop of china at k = 16 (4-bit labels) and on images 1 to 3 pixels wide or 1 high."""
    y, x, width, height = box
    labels = quantized(china[y : y + height, x : x + width], 16)
    costs = np.empty(height, dtype=np.uint64)
    codings._ctxcoder.row_costs(labels, width, height, 16, costs, model)
    assert costs.tolist() == expected_row_costs(labels, 4, model)


def test_the_encoder_gives_a_flat_band_more_rows(flower: np.ndarray) -> None:
    """A 4.2 MP image whose top half is one colour and bottom half a photo: equal bands would leave the thread of
    the flat band idle, so the band over the flat half holds more rows than the one over the photo."""
    photo = quantized(flower, 16)
    tiles = np.tile(photo, (3, 4))[:1024, :2048]
    labels = np.vstack([np.full((1024, 2048), 3, dtype=photo.dtype), tiles])
    header = header_for(labels, 16)
    payload = codings._encode_context3(flat(labels, 16), header, CLIMB, columns=False)
    (bands,) = struct.unpack_from(">H", payload, 2)
    heights = struct.unpack_from(f">{bands}I", payload, 4)
    assert bands == 2 and sum(heights) == 2048
    assert heights[0] > 1024
    costs = np.empty(2048, dtype=np.uint64)
    codings._ctxcoder.row_costs(labels, 2048, 2048, 16, costs)
    first, second = int(costs[: heights[0]].sum()), int(costs[heights[0] :].sum())
    assert abs(first - second) <= int(costs.max())  # equal estimated work, to within one row
    assert np.array_equal(api.decode(file_with(dataclasses.replace(header, channels=3), payload)).labels, labels)


# --- coding 7 --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("columns", [False, True])
@pytest.mark.parametrize("model, k", [(4, 16), (5, 64), (6, 64), (6, 3), (4, 300), (7, 16), (7, 300)])
def test_coding_7_round_trips_and_the_reference_agrees(china: np.ndarray, columns: bool, model: int, k: int) -> None:
    crop = china[120:170, 250:330]
    labels = quantized(crop, k) if k <= 256 else ((crop[..., 0].astype(int) * 7 + crop[..., 1]) % k).astype(np.uint16)
    header = header_for(labels, k)
    grid = np.ascontiguousarray(labels.T if columns else labels)  # the coded image: rows, or columns as rows
    rows, row_width = grid.shape
    for heights in ([rows], [1, rows - 4, 3], [rows // 2, rows - rows // 2]):
        payload = bytes([int(columns), model]) + banded.encode_sized_band_streams(
            row_width, heights,
            lambda start, stop: codings._ctxcoder.encode(grid[start:stop], row_width, stop - start, k, model))
        data = file_with(header, payload)
        assert api.decode(data).labels.tolist() == labels.tolist()
        assert decode_context3(payload, labels.shape[1], labels.shape[0], k) == labels.reshape(-1).tolist()


def test_auto_writes_the_shortest_form(china: np.ndarray) -> None:
    """A coding-7 payload of model 4 or 5 in equal bands is rewritten as coding 4, 5 or 6 (5 or 6 bytes fewer),
    and decodes to the same labels; models 6 and 7, or bands cut by cost, stay coding 7."""
    labels = quantized(china[100:200, 100:260], 16)
    header = header_for(labels, 16)
    for columns in (False, True):
        for model in codings.CONTEXT3_MODELS:
            payload = codings._encode_context3(flat(labels, 16), header, model, columns)
            coding, shortest = codings.shortest_form(payload, header)
            if model in (CLIMB, ESCAPE_FIRST):
                assert (coding, shortest) == (codings.CONTEXT3, payload)
                continue
            assert coding is (codings.CONTEXT_COLUMNS if columns else codings.ROW_CODING_OF_MODEL[model])
            assert len(shortest) == len(payload) - (5 if columns else 6)
            assert api.decode(file_with(dataclasses.replace(header, coding=coding.id), shortest)) == \
                api.decode(file_with(header, payload))
    cut = banded.encode_sized_band_streams(160, [30, 70], lambda a, b: codings._ctxcoder.encode(
        np.ascontiguousarray(labels[a:b]), 160, b - a, 16, 4))
    assert codings.shortest_form(b"\x00\x04" + cut, header)[0] is codings.CONTEXT3  # 30 + 70 rows: not equal bands


def test_auto_and_context3_on_a_large_photo() -> None:
    """Over 2^19 pixels auto writes coding 7 with model 6 (k <= 64) in the orientation the window picks, with
    bands cut by cost, exactly what `--coding context3` writes: gnome's wood photo at 4.2 MP, two bands."""
    with Image.open(gnome_background("wood-l.webp")) as picture:
        image = kmcodec.quantize(picture.convert("RGB").reduce(2), 64, seed=0)
    labels = image.labels
    assert labels.shape == (2048, 2048)
    data = api.encode(image)
    assert data == api.encode(image, coding="context3")
    payload = data[36 + 64 * 3 :]
    assert (data[10], payload[1]) == (codings.CONTEXT3.id, CLIMB)
    assert payload[0] == codings.prefers_columns(flat(labels, 64), header_for(labels, 64), CLIMB)
    (bands,) = struct.unpack_from(">H", payload, 2)
    assert bands == 2
    assert api.decode(data) == image


def test_cli_writes_context3_and_info_shows_its_bands(tmp_path, china: np.ndarray, capsys) -> None:
    source = tmp_path / "in.png"
    Image.fromarray(china[100:220, 150:310]).save(source)
    out = tmp_path / "out.kmq"
    assert cli_main(["encode", str(source), str(out), "-k", "16", "--coding", "context3", "-q"]) == 0
    data = out.read_bytes()
    assert data[10] == codings.CONTEXT3.id
    capsys.readouterr()
    assert cli_main(["info", str(out)]) == 0
    text = capsys.readouterr().out
    assert "coding 7 (context3)" in text
    orientation = "columns" if data[36 + 16 * 3] == 1 else "rows"
    assert f"layout:         1 band by {orientation}, model {data[36 + 16 * 3 + 1]}" in text
    assert kmcodec.read(out) == kmcodec.decode(kmcodec.encode(kmcodec.read(out), coding="context3"))


# --- what 5.6 rejects -----------------------------------------------------------------------------------------------


def _valid(china: np.ndarray) -> tuple[Header, bytes, np.ndarray]:
    labels = quantized(china[100:137, 100:123], 16)  # 23 wide, 37 high
    header = header_for(labels, 16)
    payload = codings._encode_context3(flat(labels, 16), header, CLIMB, columns=True)
    return header, payload, labels


@pytest.mark.parametrize(
    "name, damage, message",
    [
        ("no model byte", lambda p: p[:1], r"has no orientation and model bytes"),
        ("orientation 2", lambda p: b"\x02" + p[1:], r"orientation 2 at payload offset 0 is not 0 \(rows\) or 1"),
        ("model 8", lambda p: p[:1] + b"\x08" + p[2:], r"model 8 at payload offset 1 is not 4, 5, 6 or 7"),
        ("no band count", lambda p: p[:2], r"has no band count"),
        ("zero bands", lambda p: p[:2] + b"\x00\x00", r"band count 0 at payload offset 2"),
        ("table cut", lambda p: p[:11], r"the band table of 1 bands needs 12 bytes"),
        ("zero rows", lambda p: p[:4] + b"\x00\x00\x00\x00" + p[8:], r"band 0 has 0 columns"),
        ("rows over", lambda p: p[:4] + struct.pack(">I", 24) + p[8:], r"columns add up to 24, the image has 23"),
        ("length over", lambda p: p[:8] + struct.pack(">I", struct.unpack(">I", p[8:12])[0] + 1) + p[12:],
         r"declares \d+ bytes of streams"),
        ("stream cut", lambda p: p[:8] + struct.pack(">I", struct.unpack(">I", p[8:12])[0] - 1) + p[12:-1],
         r"band 0 \(columns 0-22\): the context stream cannot be decoded: the coded stream ends early"),
    ],
)
def test_coding_7_defects_are_rejected_with_a_clear_error(china: np.ndarray, name: str, damage, message: str) -> None:
    header, payload, labels = _valid(china)
    assert api.decode(file_with(header, payload)).labels.tolist() == labels.tolist()
    bad = damage(payload)
    with pytest.raises(CodingError, match=message):
        api.decode(file_with(header, bad))
    with pytest.raises(StreamError):
        decode_context3(bad, header.width, header.height, header.k)


def test_model_6_beyond_8_bits_and_k1_are_rejected() -> None:
    wide = Header(width=4, height=2, channels=3, k=300, coding=codings.CONTEXT3.id, payload_length=0)
    rest = banded.encode_sized_band_streams(4, [2], lambda a, b: codings._ctxcoder.encode(
        np.arange(8, dtype=np.uint16).reshape(2, 4), 4, 2, 300, 4))
    assert api.decode(file_with(wide, b"\x00\x04" + rest)).labels.reshape(-1).tolist() == list(range(8))
    with pytest.raises(CodingError, match=r"model 6 at payload offset 1 codes labels of at most 8 bits"):
        api.decode(file_with(wide, b"\x00\x06" + rest))
    one = dataclasses.replace(wide, k=1)
    with pytest.raises(CodingError, match=r"a k = 1 context3 payload must be empty"):
        api.decode(file_with(one, b"\x00"))
