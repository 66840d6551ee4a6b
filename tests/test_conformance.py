"""The conformance suite (spec/vectors/): through the API, through the CLI, and as frozen fixtures."""

from __future__ import annotations

import hashlib
import io
import json
import re
import shlex
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

import kmcodec
from kmcodec.errors import ERROR_KINDS

ROOT = Path(__file__).resolve().parent.parent
VECTORS = ROOT / "spec" / "vectors"
sys.path.insert(0, str(ROOT / "tools"))

import conformance  # noqa: E402
import make_vectors  # noqa: E402

MANIFEST = json.loads((VECTORS / "manifest.json").read_text())
VALID = sorted(n for n, e in MANIFEST.items() if "error" not in e)
CORRUPT = sorted(n for n, e in MANIFEST.items() if "error" in e)


def header_fields(data: bytes) -> dict[str, int]:
    """The header fields of a complete header, read with struct (independently of kmcodec)."""
    names = ("version", "channels", "coding", "label_bits", "width", "height", "k", "payload_length")
    return dict(zip(names, struct.unpack(">BBBBIIIQ", data[8:32])))


# --- the suite through the Python API: exact pixels, exact error kinds --------------------------------------


@pytest.mark.parametrize("name", VALID)
def test_valid_vector_decodes_to_manifest_pixels(name: str) -> None:
    entry = MANIFEST[name]
    data = (VECTORS / name).read_bytes()
    for image in (kmcodec.decode(data), kmcodec.read(VECTORS / name), kmcodec.decode(io.BytesIO(data))):
        assert (image.width, image.height, image.channels) == (entry["width"], entry["height"], entry["channels"])
        assert hashlib.sha256(image.to_array().tobytes()).hexdigest() == entry["pixels_sha256"]


@pytest.mark.parametrize("name", CORRUPT)
def test_corrupt_vector_raises_the_manifest_error_kind(name: str) -> None:
    kind = MANIFEST[name]["error"]
    data = (VECTORS / name).read_bytes()
    for source in (data, io.BytesIO(data)):
        with pytest.raises(kmcodec.KMQError) as caught:
            kmcodec.decode(source)
        assert caught.value.kind == kind, f"{name}: raised {type(caught.value).__name__}: {caught.value}"
        assert type(caught.value) is ERROR_KINDS[kind]


def test_python_mode_of_the_runner_passes_everything() -> None:
    outcomes = conformance.run_python_suite(VECTORS, MANIFEST)
    assert [o for o in outcomes if not o.passed] == []
    assert len(outcomes) == len(MANIFEST)


# --- the suite through the CLI --------------------------------------------------------------------------------


def test_cli_decode_passes_every_vector_in_process() -> None:
    out = io.StringIO()
    assert conformance.main(["--in-process"], stream=out) == 0, out.getvalue()
    assert out.getvalue().splitlines()[-1] == f"{len(MANIFEST)} passed, 0 failed"


def test_default_decoder_runs_python_m_kmcodec_in_a_subprocess() -> None:
    picks = ["ok-example-3x2-rgb-k3.kmq", "ok-k0005-b3-rgba-1x1.kmq", "bad-truncated-in-payload.kmq",
             "bad-limit-4294967295x4294967295.kmq"]
    argv = [sys.executable, str(ROOT / "tools" / "conformance.py")] + [f"--select={p}" for p in picks]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[-1] == "4 passed, 0 failed"
    assert re.match(r"^vector\s+expected\s+got\s+result$", lines[0])
    assert all(line.endswith("PASS") for line in lines[1:-1])


def test_raw_output_format_with_another_decoder_command() -> None:
    """A stand-in 'foreign' decoder that writes the raw pixel bytes of spec section 7 step 9."""
    script = ("import sys, kmcodec; pixels = kmcodec.read(sys.argv[1]).to_array().tobytes(); "
              "open(sys.argv[2], 'wb').write(pixels)")
    decoder = f"{shlex.quote(sys.executable)} -c {shlex.quote(script)} {{in}} {{out}}"
    out = io.StringIO()
    code = conformance.main(
        ["--decoder", decoder, "--output-format", "raw", "--select", "ok-k0017-*", "--select", "bad-padding-first-bit.kmq"],
        stream=out,
    )
    assert code == 0, out.getvalue()
    assert out.getvalue().splitlines()[-1] == "2 passed, 0 failed"


def test_a_decoder_that_accepts_everything_fails() -> None:
    out = io.StringIO()
    assert conformance.main(["--decoder", "true {in} {out}"], stream=out) == 1
    table = out.getvalue().splitlines()
    assert table[-1] == f"0 passed, {len(MANIFEST)} failed"
    assert any("bad-flipbit-payload.kmq" in line and "accepted a corrupt file" in line for line in table)
    assert any("ok-example-3x2-rgb-k3.kmq" in line and "no output file" in line for line in table)


def test_a_decoder_that_fails_but_leaves_output_fails() -> None:
    out = io.StringIO()
    code = conformance.main(["--shell", "--decoder", "echo junk > {out}; exit 1", "--select", "bad-*"], stream=out)
    assert code == 1
    assert out.getvalue().splitlines()[-1] == f"0 passed, {len(CORRUPT)} failed"
    assert "but left" in out.getvalue()


def test_wrong_pixels_fail(tmp_path: Path) -> None:
    """A decoder that writes a PNG of the right size but the wrong colours must fail."""
    script = ("import sys, kmcodec; im = kmcodec.read(sys.argv[1]).to_pil(); "
              "im.point(lambda v: 255 - v).save(sys.argv[2])")
    decoder = f"{shlex.quote(sys.executable)} -c {shlex.quote(script)} {{in}} {{out}}"
    out = io.StringIO()
    assert conformance.main(["--decoder", decoder, "--select", "ok-example-3x2-rgb-k3.kmq"], stream=out) == 1
    assert "pixels differ" in out.getvalue()


# --- the vectors themselves --------------------------------------------------------------------------------


def test_committed_vectors_are_exactly_what_make_vectors_generates() -> None:
    assert make_vectors.main(["--check"]) == 0


def test_check_detects_a_changed_missing_or_extra_file(tmp_path: Path) -> None:
    copy = tmp_path / "vectors"
    shutil.copytree(VECTORS, copy)
    vectors = make_vectors.generate()
    assert make_vectors.check_suite(copy, vectors) == []
    damaged = bytearray((copy / "ok-example-3x2-rgb-k3.kmq").read_bytes())
    damaged[-1] ^= 1
    (copy / "ok-example-3x2-rgb-k3.kmq").write_bytes(bytes(damaged))
    (copy / "bad-version-2.kmq").unlink()
    (copy / "ok-stray.kmq").write_bytes(b"")
    problems = make_vectors.check_suite(copy, vectors)
    assert sorted(p.split(":")[0] for p in problems) == ["bad-version-2.kmq", "ok-example-3x2-rgb-k3.kmq", "ok-stray.kmq"]
    assert make_vectors.main(["--check", "--out", str(copy)]) == 1


def test_make_vectors_never_imports_kmcodec_for_the_container_and_raw_vectors() -> None:
    """The raw and container vectors are written from the spec alone, so they cross-check the codec. (The coded
    payloads of tools/coded_vectors.py and tools/xz_vectors.py are made with kmcodec's own coders: their valid vectors are checked against
    the pure-Python reference decoder of the context coding in tests/test_codings.py.)"""
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); import make_vectors; "
        "fams = [f for f in make_vectors.FAMILIES if not any(m in f.__name__ for m in ('coded_vectors', 'xz_vectors'))]; "
        "vs = make_vectors.generate(fams); "
        "assert not [m for m in sys.modules if m.split('.')[0] == 'kmcodec'], 'kmcodec imported'; print(len(vs))"
    )
    done = subprocess.run([sys.executable, "-c", code, str(ROOT / "tools")], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert int(done.stdout) == len(RAW_SUITE)


def test_worked_example_equals_the_hex_dump_of_spec_section_11() -> None:
    spec = (ROOT / "spec" / "kmq.md").read_text()
    section = spec[spec.index("## 11. Worked example") : spec.index("## 12.")]
    dump = bytearray()
    for line in section.splitlines():
        match = re.match(r"^\s{4}([0-9A-F]{2})\s{6}((?:[0-9A-F]{2}\s{1,2})+)", line + " ")
        if match:
            assert int(match.group(1), 16) == len(dump), f"offset column disagrees at {line!r}"
            dump += bytes.fromhex(match.group(2))
    assert len(dump) == 51
    assert (VECTORS / "ok-example-3x2-rgb-k3.kmq").read_bytes() == bytes(dump)
    pixels = re.search(r"`(FF0000 00FF00 0000FF 0000FF 00FF00 FF0000)`", section).group(1)
    assert hashlib.sha256(bytes.fromhex(pixels)).hexdigest() == MANIFEST["ok-example-3x2-rgb-k3.kmq"]["pixels_sha256"]


def test_valid_vectors_cover_every_label_width_channel_count_and_shape() -> None:
    seen = []
    for name in VALID:
        fields = header_fields((VECTORS / name).read_bytes())
        assert fields["label_bits"] == (fields["k"] - 1).bit_length()
        seen.append(fields)
    assert {f["label_bits"] for f in seen} == set(range(17))
    assert {f["channels"] for f in seen} == {3, 4}
    for bits in range(9):  # cheap palettes: both channel counts for every small width
        assert {f["channels"] for f in seen if f["label_bits"] == bits} == {3, 4}, bits
    assert {1, 2, 3, 4, 5, 8, 9, 16, 17, 33, 65, 129, 255, 256, 257, 513, 1025, 2049, 4097, 8193, 16385, 32769,
            65535, 65536} <= {f["k"] for f in seen}
    assert any(f["width"] == f["height"] == 1 for f in seen)
    assert any(f["width"] == 1 and f["height"] > 1 for f in seen)
    assert any(f["height"] == 1 and f["width"] > 1 for f in seen)
    assert any(f["width"] > 65535 or f["height"] > 65535 for f in seen)
    assert any(f["width"] * f["height"] * f["label_bits"] % 8 for f in seen)
    assert any(f["width"] * f["height"] * f["label_bits"] % 8 == 0 and f["label_bits"] for f in seen)


def test_every_error_kind_has_a_vector_and_every_section_is_truncated_and_bit_flipped() -> None:
    assert {MANIFEST[n]["error"] for n in CORRUPT} == set(ERROR_KINDS)
    for section in ("empty", "in-signature", "in-header", "in-palette", "in-payload", "in-trailer"):
        assert MANIFEST[f"bad-truncated-{section}.kmq"]["error"] == "truncated"
    for section in ("signature", "header", "palette", "payload", "trailer"):
        assert f"bad-flipbit-{section}.kmq" in MANIFEST


@pytest.mark.parametrize("name", [n for n in CORRUPT if MANIFEST[n]["error"] not in ("signature", "checksum", "truncated")])
def test_corrupt_vectors_other_than_crc_damage_carry_valid_crcs(name: str) -> None:
    """Spec section 9: a vector has exactly one defect, so a label or header vector is not also a CRC failure."""
    data = (VECTORS / name).read_bytes()
    assert struct.unpack(">I", data[32:36])[0] == zlib.crc32(data[:32])
    fields = header_fields(data)
    if fields["channels"] not in (3, 4) or not 1 <= fields["k"] <= 65536:
        return  # the palette size is undefined; the header CRC is what matters
    end = 36 + fields["k"] * fields["channels"] + fields["payload_length"]
    if len(data) >= end + 4:
        assert struct.unpack(">I", data[end : end + 4])[0] == zlib.crc32(data[36:end])
        if MANIFEST[name]["error"] != "trailing":
            assert len(data) == end + 4


def test_a_family_of_dicts_joins_the_suite_and_is_validated() -> None:
    example = (VECTORS / "ok-example-3x2-rgb-k3.kmq").read_bytes()
    pixels = bytes.fromhex("FF0000 00FF00 0000FF 0000FF 00FF00 FF0000")

    def family() -> list[dict]:
        return [
            {"name": "ok-extra.kmq", "data": example, "description": "d", "pixels": pixels, "width": 3, "height": 2, "channels": 3},
            {"name": "bad-extra.kmq", "data": example[:-1], "description": "d", "error": "truncated"},
        ]

    vectors = make_vectors.generate([family])
    assert [v.name for v in vectors] == ["bad-extra.kmq", "ok-extra.kmq"]
    manifest = json.loads(make_vectors.manifest_text(vectors))
    assert manifest["ok-extra.kmq"]["pixels_sha256"] == MANIFEST["ok-example-3x2-rgb-k3.kmq"]["pixels_sha256"]
    assert manifest["bad-extra.kmq"] == {"description": "d", "error": "truncated"}
    with pytest.raises(ValueError, match="duplicate"):
        make_vectors.generate([family, family])
    with pytest.raises(ValueError, match="error kind"):
        make_vectors.Vector.from_dict({"name": "bad-x.kmq", "data": b"", "description": "d", "error": "broken"})
    with pytest.raises(ValueError, match="width\\*height\\*channels"):
        make_vectors.Vector.from_dict({"name": "ok-x.kmq", "data": b"", "description": "d", "pixels": b"\x00",
                                       "width": 1, "height": 1, "channels": 3})


#: The vectors for a decoder of raw coding only (tools/kmqdec.c): the coded payloads' vectors left out.
RAW_SUITE = conformance.select_codings(MANIFEST, VECTORS, [0])


@pytest.fixture(scope="module")
def c_decoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tools/kmqdec.c, a decoder written in C from the spec alone, compiled (skipped without a C compiler)."""
    compiler = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if compiler is None:
        pytest.skip("no C compiler (cc, gcc or clang) to build tools/kmqdec.c")
    exe = tmp_path_factory.mktemp("kmqdec") / "kmqdec"
    subprocess.run([compiler, "-std=c99", "-O2", "-Wall", "-Wextra", "-Werror", "-o", str(exe),
                    str(ROOT / "tools" / "kmqdec.c")], check=True, capture_output=True, timeout=120)
    return exe


def test_an_independent_c_decoder_passes_the_whole_suite(c_decoder: Path) -> None:
    """A second implementation that shares no code with kmcodec proves the spec and the raw output mode."""
    out = io.StringIO()
    code = conformance.main(["--decoder", f"{shlex.quote(str(c_decoder))} {{in}} {{out}}", "--output-format", "raw",
                             "--codings", "0"], stream=out)
    assert code == 0, out.getvalue()
    assert out.getvalue().splitlines()[-1] == f"{len(RAW_SUITE)} passed, 0 failed"


def test_the_c_decoder_checking_in_spec_order_reports_the_manifest_kinds(c_decoder: Path, tmp_path: Path) -> None:
    """Every corrupt vector has exactly one defect: a decoder that follows spec section 7 step by step (and
    shares no code with kmcodec) names the same error kind as the manifest."""
    for name in (n for n in CORRUPT if n in RAW_SUITE):
        done = subprocess.run([str(c_decoder), str(VECTORS / name), str(tmp_path / "out.raw")],
                              capture_output=True, text=True, timeout=30)
        assert done.returncode == 1, name
        assert done.stderr.split(":")[1].strip() == MANIFEST[name]["error"], (name, done.stderr)
        assert not (tmp_path / "out.raw").exists()


def test_a_decoder_that_cannot_start_is_a_usage_error(tmp_path: Path, capsys) -> None:
    assert conformance.main(["--decoder", f"{tmp_path / 'missing-decoder'} {{in}} {{out}}"], stream=io.StringIO()) == 2
    assert "cannot run" in capsys.readouterr().err


CODED_VALID = sorted(n for n in VALID if conformance.vector_coding(VECTORS / n) in (1, 2, 3, 4, 5, 6, 7))


@pytest.mark.parametrize("name", CODED_VALID)
def test_coded_valid_vectors_decode_independently_of_kmcodec(name: str) -> None:
    """The coded vectors are made with kmcodec's coders, so check them with decoders that share no code with it:
    zlib and lzma over the spec's label layout, tests/context_reference.py (sections 5.2, 5.3.1, 5.4.1, 5.6.1 and,
    for coding 6, 5.5, in pure Python) and tests/banded_reference.py (the band layers of 5.3 and 5.6)."""
    import lzma

    sys.path.insert(0, str(ROOT / "tests"))
    from banded_reference import decode_banded, decode_context3
    from context_reference import decode_columns, decode_context

    data = (VECTORS / name).read_bytes()
    fields = header_fields(data)
    width, height, k, channels = fields["width"], fields["height"], fields["k"], fields["channels"]
    palette = data[36 : 36 + k * channels]
    payload = data[36 + k * channels : 36 + k * channels + fields["payload_length"]]
    coding = data[10]
    if coding == 3:
        labels = decode_context(payload, width, height, k)
    elif coding in (4, 5):
        labels = decode_banded(payload, width, height, k, model=coding)
    elif coding == 6:
        labels = decode_columns(payload, width, height, k)
    elif coding == 7:
        labels = decode_context3(payload, width, height, k)
    else:
        layout = zlib.decompress(payload) if coding == 1 else lzma.decompress(payload, format=lzma.FORMAT_XZ)
        if fields["label_bits"] > 8:
            labels = list(struct.unpack(f">{width * height}H", layout))
        else:
            labels = list(layout) if fields["label_bits"] else [0] * (width * height)
    assert len(labels) == width * height and max(labels) < k
    pixels = b"".join(palette[label * channels : (label + 1) * channels] for label in labels)
    assert hashlib.sha256(pixels).hexdigest() == MANIFEST[name]["pixels_sha256"]
