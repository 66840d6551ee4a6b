"""Batch encode/decode through the CLI: failures, summary, exit code, -j, --recursive, progress bar, overwrite."""

from __future__ import annotations

import os
import pty
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from kmcodec import api
from kmcodec.cli import main

from conftest import sklearn_image, skimage_image


def _save(path: Path, pixels: np.ndarray, size: tuple[int, int] = (96, 64)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).resize(size, Image.LANCZOS).save(path)
    return path


@pytest.fixture
def inputs(tmp_path: Path) -> dict[str, Path]:
    """Real photos as small files: two PNGs, a JPEG in a subfolder, a damaged PNG, and a missing name."""
    folder = tmp_path / "in"
    broken = folder / "broken.png"
    good = {
        "china": _save(folder / "china.png", sklearn_image("china.jpg")),
        "flower": _save(folder / "flower.png", sklearn_image("flower.jpg")),
        "astronaut": _save(folder / "sub" / "astronaut.jpg", skimage_image("astronaut"), (64, 64)),
    }
    broken.write_bytes((folder / "china.png").read_bytes()[:200])  # a real PNG cut short
    return {**good, "broken": broken, "missing": folder / "missing.png", "folder": folder}


def test_batch_encode_reports_each_failure_and_exits_nonzero(inputs, tmp_path, capsys):
    out = tmp_path / "out"
    files = [inputs["china"], inputs["broken"], inputs["flower"], inputs["missing"]]
    code = main(["encode", *map(str, files), "-d", str(out), "-k", "8", "-j", "1"])
    captured = capsys.readouterr()
    assert code == 1
    errors = [line for line in captured.err.splitlines() if line.startswith("kmcodec: error: ")]
    assert len(errors) == 2
    assert any(str(inputs["broken"]) in line for line in errors)
    assert any(str(inputs["missing"]) in line and "no such file" in line for line in errors)
    assert "Traceback" not in captured.err
    # the good files were encoded anyway, to the same bytes as the single-file API gives
    for name in ("china", "flower"):
        written = (out / f"{name}.kmq").read_bytes()
        assert written == api.encode(inputs[name], 8)
    assert sorted(p.name for p in out.iterdir()) == ["china.kmq", "flower.kmq"]
    summary = captured.out.strip().splitlines()[-1]
    bytes_in = inputs["china"].stat().st_size + inputs["flower"].stat().st_size
    bytes_out = (out / "china.kmq").stat().st_size + (out / "flower.kmq").stat().st_size
    assert summary.startswith("encoded 2 of 4 files (2 failed)")
    assert f"{bytes_in:,} bytes in, {bytes_out:,} bytes out = {bytes_out / bytes_in:.3f}x" in summary


def test_batch_never_overwrites_without_force(inputs, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "china.kmq").write_bytes(b"keep me")
    assert main(["encode", str(inputs["china"]), "-d", str(out), "-k", "4"]) == 1
    assert (out / "china.kmq").read_bytes() == b"keep me"
    assert "output exists" in capsys.readouterr().err
    assert main(["encode", str(inputs["china"]), "-d", str(out), "-k", "4", "--force", "-q"]) == 0
    assert api.read(out / "china.kmq").k == 4
    assert capsys.readouterr().out == ""  # -q: no per-file lines, no summary


def test_batch_recursive_on_two_processes_matches_this_process(inputs, tmp_path, capsys):
    folder = inputs["folder"]
    inputs["broken"].unlink()
    inputs["flower"].unlink()
    assert main(["encode", str(folder), "-d", str(tmp_path / "one"), "-k", "16"]) == 1  # a directory needs -r
    assert "is a directory (use --recursive)" in capsys.readouterr().err
    assert main(["encode", str(folder), "-r", "-d", str(tmp_path / "parallel"), "-k", "16", "-j", "2"]) == 0
    out = capsys.readouterr().out
    assert "encoded 2 of 2 files" in out and "on 2 processes" in out.splitlines()[-1]
    written = sorted(p.relative_to(tmp_path / "parallel") for p in (tmp_path / "parallel").rglob("*.kmq"))
    assert written == [Path("china.kmq"), Path("sub/astronaut.kmq")]
    for relative, source in zip(written, [inputs["china"], inputs["astronaut"]]):
        # the worker processes give exactly the bytes this process gives
        assert (tmp_path / "parallel" / relative).read_bytes() == api.encode(source, 16)


def test_a_large_png_in_a_batch_is_read_with_its_colour_counts(tmp_path, capsys, monkeypatch):
    """A batch worker reads a plain RGB PNG over 2^20 pixels as the single-file command does (pngread, whose
    colour counts the quantizer then uses): the same bytes as encoding the pixels themselves."""
    from kmcodec import quantizer

    pixels = np.tile(sklearn_image("china.jpg"), (3, 2, 1))  # 1.6 MP
    source = tmp_path / "in" / "big.png"
    source.parent.mkdir()
    Image.fromarray(pixels).save(source)
    counted = []
    real_count = quantizer.colour_histogram
    monkeypatch.setattr(quantizer, "colour_histogram", lambda image: counted.append(image.shape) or real_count(image))
    assert main(["encode", str(source), "-d", str(tmp_path / "out"), "-k", "32", "-q", "-j", "1"]) == 0
    assert counted == []  # -j 1 encodes in this process: the reader's counts were used
    assert (tmp_path / "out" / "big.kmq").read_bytes() == api.encode(pixels, 32)


def test_batch_decode_writes_the_decoded_pixels(inputs, tmp_path, capsys):
    kmq = tmp_path / "kmq"
    assert (
        main(["encode", str(inputs["china"]), str(inputs["astronaut"]), "-d", str(kmq), "-k", "8", "-q", "-j", "1"])
        == 0
    )
    damaged = kmq / "damaged.kmq"
    data = bytearray((kmq / "china.kmq").read_bytes())
    data[60] ^= 0xFF
    damaged.write_bytes(bytes(data))
    out = tmp_path / "png"
    code = main(["decode", str(kmq), "-r", "-d", str(out), "--format", "png", "-j", "1"])
    captured = capsys.readouterr()
    assert code == 1
    assert f"kmcodec: error: {damaged}: trailer: CRC-32 mismatch" in captured.err
    assert captured.out.strip().splitlines()[-1].startswith("decoded 2 of 3 files (1 failed)")
    for name in ("china", "astronaut"):
        with Image.open(out / f"{name}.png") as picture:
            assert np.array_equal(np.asarray(picture.convert("RGB")), api.read(kmq / f"{name}.kmq").to_array())
    assert not (out / "damaged.png").exists()


def test_single_file_forms_are_unchanged(inputs, tmp_path, capsys):
    kmq, png = tmp_path / "a.kmq", tmp_path / "a.png"
    assert main(["encode", str(inputs["flower"]), str(kmq), "-k", "8"]) == 0
    assert main(["decode", str(kmq), str(png)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"{inputs['flower']} -> {kmq}: 96x64 RGB, k=8, 3 bits/pixel")
    assert lines[1] == f"{kmq} -> {png}: 96x64 RGB, k=8"
    assert kmq.read_bytes() == api.encode(inputs["flower"], 8)


@pytest.mark.parametrize(
    "argv",
    [
        ["encode", "a.png", "b.png", "c.kmq", "-k", "4"],  # three paths without -d
        ["encode", "a.png", "a.kmq", "-k", "4", "-j", "2"],  # -j without -d
        ["decode", "a.kmq", "a.png", "--format", "webp"],  # --format without -d
        ["encode", "a.png", "-d", "out"],  # no k, no target
        ["encode", "a.png", "-d", "out", "-k", "4", "--quality", "30"],  # both k and a target
    ],
)
def test_usage_errors_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2


@pytest.mark.parametrize(
    "argv, message",
    [
        (["decode", "a.kmq", "a.png", "--format", "webp"], "decode: --format needs -d OUTDIR (batch mode)"),
        (["encode", "a.png", "a.kmq", "-k", "4", "-r", "-j", "2"], "encode: --recursive, --jobs need -d OUTDIR"),
    ],
)
def test_batch_only_options_without_outdir_are_named(argv, message, capsys):
    """The usage error names the batch-only options given, in a sentence that reads right for one or several."""
    with pytest.raises(SystemExit):
        main(argv)
    assert message in capsys.readouterr().err


def _run_decode_batch(kmq: Path, out: Path, stderr_tty: bool) -> tuple[int, bytes, str]:
    """Run the real command in a child process, with stderr on a pseudo-terminal or on a pipe."""
    argv = [sys.executable, "-m", "kmcodec", "decode", str(kmq), "-r", "-d", str(out), "-j", "1"]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    if not stderr_tty:
        done = subprocess.run(argv, capture_output=True, env=env, timeout=60)
        return done.returncode, done.stderr, done.stdout.decode()
    leader, follower = pty.openpty()
    try:
        child = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=follower, env=env)
        os.close(follower)
        stdout = child.stdout.read().decode()
        chunks = []
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            chunks.append(chunk)
        return child.wait(timeout=60), b"".join(chunks), stdout
    finally:
        os.close(leader)


def test_progress_bar_only_on_a_terminal(inputs, tmp_path):
    kmq = tmp_path / "kmq"
    assert (
        main(["encode", str(inputs["china"]), str(inputs["flower"]), "-d", str(kmq), "-k", "4", "-q", "-j", "1"]) == 0
    )
    code, stderr, stdout = _run_decode_batch(kmq, tmp_path / "piped", stderr_tty=False)
    assert code == 0 and stderr == b""
    assert "decoded 2 of 2 files" in stdout
    code, stderr, stdout = _run_decode_batch(kmq, tmp_path / "tty", stderr_tty=True)
    assert code == 0
    assert b"\r" in stderr and b"decode 2/2 100%" in stderr  # the bar, drawn and finished
    assert "decoded 2 of 2 files" in stdout


def test_plan_names_outputs_and_refuses_clashes(inputs, tmp_path):
    from kmcodec.batch import EncodeOptions, plan

    folder = inputs["folder"]
    (folder / "china.jpg").write_bytes(inputs["china"].read_bytes())  # would also become china.kmq
    (folder / ".hidden.png").write_bytes(inputs["china"].read_bytes())
    (folder / "notes.txt").write_text("not an image")
    out = folder / "out"  # an output folder inside the input folder is not walked
    out.mkdir()
    (out / "old.png").write_bytes(inputs["china"].read_bytes())
    tasks, refused = plan([folder, inputs["china"]], out, suffix=".kmq", options=EncodeOptions(k=4), recursive=True)
    names = [task.target.relative_to(out.resolve()).as_posix() for task in tasks]
    assert names == ["broken.kmq", "flower.kmq", "sub/astronaut.kmq"]
    # china.jpg and china.png would both write china.kmq: both are refused (naming china.png again adds nothing)
    assert [r.error for r in refused] == [
        f"{folder / 'china.jpg'}: output {out / 'china.kmq'} is also the output of {folder / 'china.png'}; "
        "neither is written",
        f"{folder / 'china.png'}: output {out / 'china.kmq'} is also the output of {folder / 'china.jpg'}; "
        "neither is written",
    ]
    assert all(task.source.is_absolute() and task.target.is_absolute() for task in tasks)  # what remote workers need


@pytest.mark.parametrize("recursive", [False, True])
def test_inputs_sharing_an_output_are_all_refused_in_any_order(inputs, tmp_path, capsys, recursive):
    """README: two inputs that would write the same output are refused; none of them may win by its place."""
    folder = tmp_path / "same"
    folder.mkdir()
    png, jpg, tif = folder / "a.png", folder / "a.jpg", folder / "a.tif"
    png.write_bytes(inputs["china"].read_bytes())
    Image.open(inputs["flower"]).save(jpg)
    Image.open(inputs["flower"]).save(tif)
    other = inputs["astronaut"]
    for order in ([png, jpg, other], [other, jpg, png], [tif, other, png, jpg]):
        out = tmp_path / f"out-{'-'.join(p.suffix[1:] for p in order)}-{recursive}"
        argv = [str(folder), str(other), "-r"] if recursive else list(map(str, order))
        code = main(["encode", *argv, "-d", str(out), "-k", "4", "-j", "1", "-q"])
        err = capsys.readouterr().err
        assert code == 1
        sharing = [p for p in (png, jpg, tif) if p in order or recursive]
        errors = err.splitlines()
        assert len(errors) == len(sharing), err
        for path in sharing:
            line = next(line for line in errors if line.startswith(f"kmcodec: error: {path}: "))
            assert f"output {out / 'a.kmq'} is also the output of" in line
            assert all(str(others) in line for others in sharing if others != path)
        assert sorted(p.name for p in out.iterdir()) == ["astronaut.kmq"]  # none of the a.* is written
        if recursive:
            break  # the walk has one order


def test_an_out_dir_that_is_a_file_is_refused_in_one_line(inputs, tmp_path, capsys):
    taken = tmp_path / "three.png"
    taken.write_bytes(b"a file")
    for out_dir, expected in ((taken, f"{taken}: is a file, not a directory"),
                              (taken / "sub", f"{taken / 'sub'}: {taken} is a file, not a directory")):
        code = main(["encode", str(inputs["china"]), "-d", str(out_dir), "-k", "4"])
        captured = capsys.readouterr()
        assert code == 1
        assert captured.err == f"kmcodec: error: {expected}\n"
        assert captured.out == ""
    assert taken.read_bytes() == b"a file" and sorted(p.name for p in tmp_path.iterdir()) == ["in", "three.png"]


def test_an_unknown_batch_format_is_a_usage_error(inputs, tmp_path, capsys):
    kmq = tmp_path / "kmq"
    assert main(["encode", str(inputs["china"]), "-d", str(kmq), "-k", "4", "-q"]) == 0
    with pytest.raises(SystemExit) as exit_info:
        main(["decode", str(kmq), "-r", "-d", str(tmp_path / "png"), "--format", "bogus"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "usage:" in err
    assert err.splitlines()[-1] == (
        "kmcodec: error: decode: --format: cannot write images with extension '.bogus' (try .png or .webp)"
    )
    assert not (tmp_path / "png").exists()  # refused before anything was made
