"""The command line: encode/decode/info/demo, overwrite refusal, exit codes, one-line errors, no partial output."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import kmcodec
from kmcodec.cli import main

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def photo(tmp_path_factory: pytest.TempPathFactory, china: np.ndarray) -> Path:
    """A 160x107 PNG downscaled from china.jpg: a real photo, small enough for fast k-means."""
    path = tmp_path_factory.mktemp("cli") / "china-small.png"
    Image.fromarray(china).resize((160, 107), Image.Resampling.LANCZOS).save(path)
    return path


def run_cli(capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, str, str]:
    """Run the CLI in-process; return (exit code, stdout, stderr). Usage errors exit through argparse."""
    try:
        code = main(list(argv))
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_line_error(stderr: str, *fragments: str) -> None:
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("kmcodec: error: ")
    assert "Traceback" not in stderr
    for fragment in fragments:
        assert fragment in lines[0]


def test_encode_decode_round_trip(photo: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "x.kmq"
    code, stdout, _ = run_cli(capsys, "encode", str(photo), str(out), "-k", "8", "--coding", "raw")
    assert code == 0
    assert "k=8" in stdout and "3 bits/pixel raw, coding raw" in stdout
    assert out.stat().st_size == 40 + 8 * 3 + (160 * 107 * 3 + 7) // 8
    assert out.read_bytes() == kmcodec.encode(photo, 8, coding="raw")  # the CLI's default seed is the API's
    png = tmp_path / "x.png"
    assert run_cli(capsys, "decode", str(out), str(png))[0] == 0
    with Image.open(png) as decoded:
        assert np.array_equal(np.asarray(decoded.convert("RGB")), kmcodec.read(out).to_array())


def test_refuses_to_overwrite_without_force(photo: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "x.kmq"
    assert run_cli(capsys, "encode", str(photo), str(out), "-k", "2", "-q")[0] == 0
    before = out.read_bytes()
    code, _, stderr = run_cli(capsys, "encode", str(photo), str(out), "-k", "4")
    assert code == 1
    assert_one_line_error(stderr, str(out), "exists", "--force")
    assert out.read_bytes() == before
    assert run_cli(capsys, "encode", str(photo), str(out), "-k", "4", "--force")[0] == 0
    assert kmcodec.read(out).k == 4

    png = tmp_path / "x.png"
    png.write_bytes(b"precious")
    code, _, stderr = run_cli(capsys, "decode", str(out), str(png))
    assert code == 1
    assert_one_line_error(stderr, str(png), "exists")
    assert png.read_bytes() == b"precious"
    assert run_cli(capsys, "decode", str(out), str(png), "-f")[0] == 0
    assert Image.open(png).size == (160, 107)


@pytest.mark.parametrize("content", [b"", b"this is not an image", b"\x89PNG\r\n\x1a\n" + b"\x00" * 40])
def test_bad_encoder_input_exits_1_with_one_line_and_writes_nothing(content: bytes, tmp_path: Path, capsys) -> None:
    source = tmp_path / "bad.png"
    source.write_bytes(content)
    out = tmp_path / "out.kmq"
    code, _, stderr = run_cli(capsys, "encode", str(source), str(out), "-k", "4")
    assert code == 1
    assert_one_line_error(stderr, str(source), "not an image format")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.png"]


def test_missing_input_exits_1(tmp_path: Path, capsys) -> None:
    code, _, stderr = run_cli(capsys, "decode", str(tmp_path / "nope.kmq"), str(tmp_path / "out.png"))
    assert code == 1
    assert_one_line_error(stderr, "nope.kmq")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("vector", ["bad-flipbit-payload.kmq", "bad-truncated-in-palette.kmq",
                                    "bad-limit-4294967295x4294967295.kmq", "bad-coding-255.kmq"])
def test_corrupt_kmq_exits_1_naming_file_and_problem(vector: str, tmp_path: Path, capsys) -> None:
    source = ROOT / "spec" / "vectors" / vector
    commands = [["decode", str(source), str(tmp_path / "out.png")]]
    if "coding" not in vector:  # info reports the header of a reserved coding: see the test below
        commands.append(["info", str(source)])
    for command in commands:
        code, stdout, stderr = run_cli(capsys, *command)
        assert code == 1
        assert_one_line_error(stderr, vector)
        assert stdout == ""
    assert list(tmp_path.iterdir()) == []


def reserved_coding_file(path: Path, coding: int = 7) -> Path:
    """A well-formed .kmq (spec/kmq.md sections 2-6) of a 4x2 RGB image, k = 3, whose coding is reserved."""
    import struct
    import zlib

    palette, payload = bytes([255, 0, 0, 0, 255, 0, 0, 0, 255]), b"\x12\x34\x56"
    fields = b"\x89KMQ\r\n\x1a\n" + struct.pack(">BBBBIIIQ", 1, 3, coding, 2, 4, 2, 3, len(payload))
    trailer = struct.pack(">I", zlib.crc32(payload, zlib.crc32(palette)))
    path.write_bytes(fields + struct.pack(">I", zlib.crc32(fields)) + palette + payload + trailer)
    return path


@pytest.mark.parametrize("coding", [8, 128, 255])  # 7 is context3 (spec 5.6), 8 the lowest reserved
def test_info_reports_the_header_of_a_reserved_coding_then_fails(coding: int, tmp_path: Path, capsys) -> None:
    """spec/kmq.md section 5: a version-1 decoder can always read and report the header of a version-1 file."""
    source = reserved_coding_file(tmp_path / f"coding{coding}.kmq", coding)
    code, stdout, stderr = run_cli(capsys, "info", str(source))
    assert code == 1
    assert stdout.splitlines() == [
        f"file:           {source}",
        f"format:         KMQ version 1, coding {coding} (unknown)",
        "size:           4 x 2 = 8 pixels, RGB",
        "palette:        k = 3, 2 bits per label",
        "payload:        3 bytes",
    ]
    assert_one_line_error(stderr, str(source), "container is intact", f"coding {coding} is unknown",
                          "labels cannot be decoded")
    code, stdout, stderr = run_cli(capsys, "info", str(source), "--json")
    assert code == 1
    assert json.loads(stdout) == {
        "file": str(source), "version": 1, "width": 4, "height": 2, "channels": 3, "mode": "RGB", "k": 3,
        "label_bits": 2, "coding": "unknown", "coding_id": coding, "payload_bytes": 3,
    }
    assert_one_line_error(stderr, f"coding {coding} is unknown")
    with pytest.raises(kmcodec.CodingError):
        kmcodec.read(source)  # the file is well formed but for its coding: decoding it stays an error


def test_info_of_the_reserved_coding_vectors(capsys) -> None:
    for vector in ("bad-coding-128.kmq", "bad-coding-255.kmq"):
        code, stdout, stderr = run_cli(capsys, "info", str(ROOT / "spec" / "vectors" / vector))
        assert code == 1
        assert "format:         KMQ version 1, coding" in stdout and "(unknown)" in stdout
        assert_one_line_error(stderr, vector, "container is intact", "is unknown", "labels cannot be decoded")


@pytest.mark.parametrize("damage, expected", [
    ("truncated", "trailer: file ends at offset 50, 2 bytes short of the 4-byte trailer"),
    ("flipped", "trailer: CRC-32 mismatch at offset 48 over palette and payload"),
    ("trailing", "trailer: unexpected bytes after the end of the file at offset 52"),
    ("payload-cut", "payload: file ends at offset 46"),
])
def test_info_reports_damage_to_a_file_of_a_reserved_coding_as_damage(damage: str, expected: str, tmp_path: Path,
                                                                       capsys) -> None:
    """The length and the trailer CRC need no knowledge of the coding: a damaged file is not called intact."""
    intact = reserved_coding_file(tmp_path / "intact.kmq").read_bytes()
    source = tmp_path / f"{damage}.kmq"
    flipped = bytearray(intact)
    flipped[-6] ^= 0x10  # in the payload
    source.write_bytes({"truncated": intact[:-2], "flipped": bytes(flipped), "trailing": intact + b"\0",
                        "payload-cut": intact[:46]}[damage])
    for extra in ([], ["--json"]):
        code, stdout, stderr = run_cli(capsys, "info", str(source), *extra)
        assert code == 1
        assert stdout == ""  # as for damage to a file of a known coding
        assert_one_line_error(stderr, str(source), expected)
        assert "intact" not in stderr


@pytest.mark.parametrize("kind", ["directory", "missing", "fifo"])
def test_info_refuses_a_source_that_is_not_a_file(kind: str, photo: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "x.kmq"
    assert run_cli(capsys, "encode", str(photo), str(out), "-k", "4", "-q")[0] == 0
    source = tmp_path / "source"
    if kind == "directory":
        source.mkdir()
    elif kind == "fifo":
        if not hasattr(os, "mkfifo"):
            pytest.skip("named pipes are POSIX")
        os.mkfifo(source)
    expected = {"directory": "is a directory, not a file", "missing": "no such file",
                "fifo": "is not a regular file"}[kind]
    for extra in ([], ["--json"]):
        code, stdout, stderr = run_cli(capsys, "info", str(out), "--source", str(source), *extra)
        assert code == 1
        assert stdout == ""
        assert_one_line_error(stderr, str(source), expected, "--source")


def test_max_k_goes_with_auto_k_only(photo: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "x.kmq"
    code, _, stderr = run_cli(capsys, "encode", str(photo), str(out), "-k", "4", "--max-k", "8")
    assert code == 2
    assert "--max-k" in stderr and "auto-k" in stderr and "Traceback" not in stderr
    code, _, stderr = run_cli(capsys, "encode", str(photo), "-d", str(tmp_path / "batch"), "-k", "4", "--max-k", "8")
    assert code == 2 and "--max-k" in stderr
    assert list(tmp_path.iterdir()) == []
    # with auto-k it bounds the search: 25 dB takes k = 8 on this photo, out of reach below k = 4
    code, _, stderr = run_cli(capsys, "encode", str(photo), str(out), "--quality", "25", "--max-k", "4")
    assert code == 1
    assert_one_line_error(stderr, str(photo), "k <= 4", "--max-k")
    assert not out.exists()
    code, stdout, stderr = run_cli(capsys, "encode", str(photo), str(out), "--quality", "25")  # default 256
    assert code == 0, stderr
    assert "auto-k: k=8" in stdout and kmcodec.read(out).k == 8


@pytest.mark.parametrize("argv", [
    [], ["frobnicate"], ["encode", "in.png", "out.kmq"], ["encode", "in.png", "out.kmq", "-k", "0"],
    ["encode", "in.png", "out.kmq", "-k", "65537"], ["encode", "in.png", "out.kmq", "-k", "many"],
    ["encode", "in.png", "out.kmq", "-k", "4", "--seed", "-1"], ["encode", "in.png", "out.kmq", "-k", "4", "--seed", "4294967296"],
    ["decode", "in.kmq"], ["decode", "in.kmq", "out.png", "--max-pixels", "0"], ["info"],
])
def test_usage_errors_exit_2(argv: list[str], capsys) -> None:
    code, _, stderr = run_cli(capsys, *argv)
    assert code == 2
    assert "usage:" in stderr and "Traceback" not in stderr


def test_no_partial_output_when_writing_fails(photo: Path, tmp_path: Path, capsys, monkeypatch) -> None:
    """A failure after the output was opened (here: fsync fails, as on a full disk) leaves no file at all."""
    import kmcodec.atomic

    def failing_fsync(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(kmcodec.atomic.os, "fsync", failing_fsync)
    out = tmp_path / "out.kmq"
    code, _, stderr = run_cli(capsys, "encode", str(photo), str(out), "-k", "2")
    assert code == 1
    assert_one_line_error(stderr, "No space left on device")
    assert list(tmp_path.iterdir()) == []


def test_decode_refuses_alpha_into_jpeg_and_unknown_extension(tmp_path: Path, capsys) -> None:
    rgba = ROOT / "spec" / "vectors" / "ok-k0004-b2-rgba-transparent-colours-4x2.kmq"
    code, _, stderr = run_cli(capsys, "decode", str(rgba), str(tmp_path / "out.jpg"))
    assert code == 1
    assert_one_line_error(stderr, "alpha")
    code, _, stderr = run_cli(capsys, "decode", str(rgba), str(tmp_path / "out.xyz"))
    assert code == 1
    assert_one_line_error(stderr, "extension")
    assert list(tmp_path.iterdir()) == []


def test_info_text_and_json(photo: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "x.kmq"
    assert run_cli(capsys, "encode", str(photo), str(out), "-k", "5", "-q", "--coding", "raw")[0] == 0
    size = out.stat().st_size
    code, stdout, _ = run_cli(capsys, "info", str(out), "--source", str(photo))
    assert code == 0
    assert "160 x 107" in stdout and "k = 5, 3 bits per label" in stdout
    assert f"{size:,} bytes" in stdout and "vs 24-bit raw" in stdout and "vs source" in stdout
    image = kmcodec.read(out)
    for colour in image.palette:
        assert "#" + colour.tobytes().hex() in stdout
    code, stdout, _ = run_cli(capsys, "info", str(out), "--json", "--source", str(photo))
    record = json.loads(stdout)
    assert (record["width"], record["height"], record["k"], record["label_bits"], record["channels"]) == (160, 107, 5, 3, 3)
    assert record["file_bytes"] == size == 40 + 15 + (160 * 107 * 3 + 7) // 8
    assert record["ratio_to_raw_rgb"] == pytest.approx(size / (160 * 107 * 3))
    assert record["ratio_to_source"] == pytest.approx(size / photo.stat().st_size)
    assert sum(record["palette_pixel_counts"]) == 160 * 107
    assert record["palette_pixel_counts"] == np.bincount(image.labels.reshape(-1), minlength=5).tolist()


def test_demo_prints_the_storage_argument(tmp_path: Path, capsys) -> None:
    code, stdout, _ = run_cli(capsys, "demo", "-k", "2", "--out", str(tmp_path))
    assert code == 0
    row = next(line.split() for line in stdout.splitlines() if line.split()[:2] == ["2", "1"])
    assert int(row[2].replace(",", "")) == 40 + 2 * 3 + (640 * 427 + 7) // 8
    assert float(row[3]) == pytest.approx((40 + 6 + (640 * 427 + 7) // 8) / (640 * 427 * 3), abs=5e-4)
    assert (tmp_path / "china-k2.kmq").stat().st_size == int(row[2].replace(",", ""))
    assert Image.open(tmp_path / "china-k2.png").size == (640, 427)


def test_python_dash_m_kmcodec_in_a_fresh_process(photo: Path, tmp_path: Path) -> None:
    """The real entry point: exit codes, output identical to the in-process API (same seed, other process)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    out = tmp_path / "x.kmq"
    done = subprocess.run([sys.executable, "-m", "kmcodec", "encode", str(photo), str(out), "-k", "3", "--seed", "7"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert out.read_bytes() == kmcodec.encode(photo, 3, seed=7)
    garbage = tmp_path / "garbage.kmq"
    garbage.write_bytes(b"GIF89a not a kmq file at all")
    done = subprocess.run([sys.executable, "-m", "kmcodec", "decode", str(garbage), str(tmp_path / "g.png")],
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 1
    assert_one_line_error(done.stderr, "garbage.kmq", "signature")


def buffered_environment() -> dict[str, str]:
    """The environment for a child Python whose stdout is block-buffered, as it is for users (no PYTHONUNBUFFERED)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("PYTHONUNBUFFERED", None)
    return env


def test_the_fast_exit_flushes_what_was_printed(tmp_path: Path) -> None:
    """run() ends with os._exit, which skips Python's final flush: a piped `info` must still arrive whole."""
    env = buffered_environment()
    vector = ROOT / "spec" / "vectors" / "ok-k0001-b0-rgb-70000x1.kmq"
    done = subprocess.run([sys.executable, "-m", "kmcodec", "info", str(vector)],
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1].split() == ["0", "#015e8b:", "70,000"]
    assert done.stderr == ""


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_the_fast_exit_reports_output_it_could_not_flush() -> None:
    """A stdout that fails at the final flush (a full disk) is an error with exit code 1, not a silent 0."""
    env = buffered_environment()
    code = "from kmcodec.cli import exit_without_teardown; print('a line that stays in the buffer'); " \
           "exit_without_teardown(0)"
    with open("/dev/full", "w") as full:
        done = subprocess.run([sys.executable, "-c", code], stdout=full, stderr=subprocess.PIPE, text=True,
                              env=env, timeout=120)
    assert done.returncode == 1
    assert_one_line_error(done.stderr, "stdout", "No space left on device")


def test_max_pixels_refuses_a_large_valid_file(tmp_path: Path, capsys) -> None:
    wide = ROOT / "spec" / "vectors" / "ok-k0001-b0-rgb-70000x1.kmq"
    code, _, stderr = run_cli(capsys, "decode", str(wide), str(tmp_path / "wide.png"), "--max-pixels", "69999")
    assert code == 1
    assert_one_line_error(stderr, "70000x1", "limit")
    assert list(tmp_path.iterdir()) == []
    assert run_cli(capsys, "decode", str(wide), str(tmp_path / "wide.png"), "--max-pixels", "70000")[0] == 0


TRANSPARENT_COLOURS = ROOT / "spec" / "vectors" / "ok-k0004-b2-rgba-transparent-colours-4x2.kmq"


@pytest.mark.parametrize("extension", [".png", ".webp", ".tif", ".tga"])
def test_decode_to_lossless_formats_is_exact(extension: str, tmp_path: Path, capsys) -> None:
    """Every pixel survives a lossless output format, including the colours of fully transparent pixels."""
    expected = kmcodec.read(TRANSPARENT_COLOURS).to_array()
    out = tmp_path / f"out{extension}"
    assert run_cli(capsys, "decode", str(TRANSPARENT_COLOURS), str(out))[0] == 0
    with Image.open(out) as written:
        assert np.array_equal(np.asarray(written.convert("RGBA")), expected)


def test_decode_to_gif_refuses_partial_alpha(tmp_path: Path, capsys) -> None:
    assert 128 in kmcodec.read(TRANSPARENT_COLOURS).palette[:, 3]
    code, _, stderr = run_cli(capsys, "decode", str(TRANSPARENT_COLOURS), str(tmp_path / "out.gif"))
    assert code == 1
    assert_one_line_error(stderr, "out.gif", "transparency")
    assert list(tmp_path.iterdir()) == []


def test_decode_to_gif_keeps_binary_alpha(tmp_path: Path, capsys) -> None:
    palette = np.array([[10, 20, 30, 255], [200, 100, 0, 0], [0, 255, 0, 255]], dtype=np.uint8)
    labels = np.arange(35).reshape(5, 7) % 3
    source = tmp_path / "binary-alpha.kmq"
    kmcodec.write(source, kmcodec.KMQImage(palette, labels))
    assert run_cli(capsys, "decode", str(source), str(tmp_path / "out.gif"))[0] == 0
    with Image.open(tmp_path / "out.gif") as written:
        rgba = np.asarray(written.convert("RGBA"))
    expected = palette[labels]
    assert np.array_equal(rgba[:, :, 3], expected[:, :, 3])
    opaque = expected[:, :, 3] == 255
    assert np.array_equal(rgba[opaque], expected[opaque])


@pytest.mark.parametrize("k", [16, 256, 300])
def test_decode_to_png_writes_a_palette_png_up_to_256_colours(photo: Path, tmp_path: Path, capsys, k: int) -> None:
    coded, out = tmp_path / "photo.kmq", tmp_path / "photo.png"
    assert run_cli(capsys, "encode", str(photo), str(coded), "-k", str(k), "-q")[0] == 0
    assert run_cli(capsys, "decode", str(coded), str(out))[0] == 0
    image = kmcodec.read(coded)
    with Image.open(out) as written:
        assert written.mode == ("P" if image.k <= 256 else "RGB")
        assert np.array_equal(np.asarray(written.convert("RGB")), image.to_array())
        if written.mode == "P":
            assert len(written.getpalette()) // 3 <= 256


@pytest.mark.parametrize("user_setting, expected", [(None, 1), ("2", 2)])
def test_the_command_line_gives_openblas_one_thread_unless_the_user_chose(user_setting, expected) -> None:
    """run() limits numpy's OpenBLAS before numpy loads (its idle threads spin and take CPU from the encoder's)."""
    pytest.importorskip("threadpoolctl")
    code = (
        "from kmcodec import cli; cli.limit_blas_threads(); import numpy, threadpoolctl; "
        "print([i['num_threads'] for i in threadpoolctl.threadpool_info() if i['internal_api'] == 'openblas'])"
    )
    env = {key: value for key, value in os.environ.items() if key != "OPENBLAS_NUM_THREADS"}
    if user_setting is not None:
        env["OPENBLAS_NUM_THREADS"] = user_setting
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    counts = json.loads(result.stdout)
    if not counts:
        pytest.skip("this numpy does not use OpenBLAS")
    assert counts == [expected] * len(counts)


def test_dither_alone_may_come_before_the_paths(photo: Path, tmp_path: Path, capsys) -> None:
    """`--dither` with no strength before IN OUT is the flag (strength 1), not a strength named like a path;
    a number after it is still its strength."""
    first, last, half = tmp_path / "first.kmq", tmp_path / "last.kmq", tmp_path / "half.kmq"
    assert run_cli(capsys, "encode", "--dither", str(photo), str(first), "-k", "8", "-q")[0] == 0
    assert run_cli(capsys, "encode", str(photo), str(last), "-k", "8", "-q", "--dither")[0] == 0
    assert run_cli(capsys, "encode", "--dither", "0.5", str(photo), str(half), "-k", "8", "-q")[0] == 0
    assert first.read_bytes() == last.read_bytes() == kmcodec.encode(photo, 8, dither=1.0)
    assert half.read_bytes() == kmcodec.encode(photo, 8, dither=0.5) != first.read_bytes()


@pytest.mark.parametrize("value, message", [("2", "dither strength must be a number 0 to 1"),
                                            ("nonsense", "give IN OUT, or inputs with -d OUTDIR (got 3 paths)")])
def test_a_bad_dither_value_is_a_usage_error_that_writes_nothing(photo: Path, tmp_path: Path, capsys,
                                                                 value: str, message: str) -> None:
    out = tmp_path / "x.kmq"
    code, _, stderr = run_cli(capsys, "encode", str(photo), str(out), "-k", "8", "--dither", value)
    assert code == 2 and message in stderr and "Traceback" not in stderr
    assert list(tmp_path.iterdir()) == []
