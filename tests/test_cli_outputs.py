"""Where the command line's outputs go and how its arguments are read: symbolic links and devices are treated
as the shell's `>` treats them, options may sit between the paths, and misuse is one clear line."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import kmcodec
from kmcodec.quantizer import QuantizeOptionError

from test_cli import ROOT, assert_one_line_error, run_cli


@pytest.fixture(scope="module")
def photo(tmp_path_factory: pytest.TempPathFactory, china: np.ndarray) -> Path:
    """A 160x107 PNG downscaled from china.jpg."""
    path = tmp_path_factory.mktemp("outputs") / "china-small.png"
    Image.fromarray(china).resize((160, 107), Image.Resampling.LANCZOS).save(path)
    return path


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes are POSIX")
def test_force_writes_into_a_named_pipe_instead_of_replacing_it(photo: Path, tmp_path: Path, capsys) -> None:
    """`-f` onto a FIFO (or /dev/null) must not turn it into a regular file: the reader gets the file."""
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    received: list[bytes] = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_bytes()))
    reader.start()
    code, _, stderr = run_cli(capsys, "encode", str(photo), str(fifo), "-k", "4", "-f", "-q")
    reader.join(timeout=60)
    assert code == 0, stderr
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert received == [kmcodec.encode(photo, 4)]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pipe"]  # no temporary file beside it


def test_force_follows_a_symbolic_link(photo: Path, tmp_path: Path, capsys) -> None:
    """The link stays a link; the file it points to gets the new contents (as `>` would)."""
    real = tmp_path / "real.kmq"
    real.write_bytes(b"old")
    link = tmp_path / "link.kmq"
    link.symlink_to(real)
    code, _, stderr = run_cli(capsys, "encode", str(photo), str(link), "-k", "4", "-f", "-q")
    assert code == 0, stderr
    assert link.is_symlink() and os.readlink(link) == str(real)
    assert real.read_bytes() == kmcodec.encode(photo, 4)


def test_a_dangling_link_is_an_existing_output(photo: Path, tmp_path: Path, capsys) -> None:
    """Without -f it is refused in the command line's own words; with -f the file it names is created."""
    link = tmp_path / "link.kmq"
    link.symlink_to(tmp_path / "missing.kmq")
    code, _, stderr = run_cli(capsys, "encode", str(photo), str(link), "-k", "4")
    assert code == 1
    assert_one_line_error(stderr, "link.kmq", "output exists (use --force to replace it)")
    assert "overwrite=True" not in stderr
    code, _, stderr = run_cli(capsys, "encode", str(photo), str(link), "-k", "4", "-f", "-q")
    assert code == 0, stderr
    assert link.is_symlink() and (tmp_path / "missing.kmq").read_bytes() == kmcodec.encode(photo, 4)


def test_options_may_sit_between_the_paths(photo: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "x.kmq"
    code, _, stderr = run_cli(capsys, "encode", str(photo), "-k", "4", "--seed", "3", str(out), "-q")
    assert code == 0, stderr
    assert out.read_bytes() == kmcodec.encode(photo, 4, seed=3)
    half = tmp_path / "half.kmq"
    assert run_cli(capsys, "encode", str(photo), "--dither", "0.5", str(half), "-k", "4", "-q")[0] == 0
    assert half.read_bytes() == kmcodec.encode(photo, 4, dither=0.5)
    png = tmp_path / "x.png"
    code, _, stderr = run_cli(capsys, "decode", str(out), "-f", str(png), "-q")
    assert code == 0, stderr
    with Image.open(png) as decoded:
        assert np.array_equal(np.asarray(decoded.convert("RGB")), kmcodec.read(out).to_array())


def test_encode_refuses_a_picture_name_for_its_kmq_output(photo: Path, tmp_path: Path, capsys) -> None:
    """`encode in.png out.png` would write .kmq bytes under a PNG's name; the user meant something else."""
    out = tmp_path / "quantized.png"
    code, _, stderr = run_cli(capsys, "encode", str(photo), str(out), "-k", "4")
    assert code == 1
    assert_one_line_error(stderr, "quantized.png", "encode writes a .kmq file", "quantized.kmq")
    assert not out.exists()


def test_seeds_out_of_range_are_refused_alike_by_the_command_line_and_the_api(photo: Path, capsys) -> None:
    code, _, stderr = run_cli(capsys, "encode", str(photo), "x.kmq", "-k", "4", "--seed", str(10**23))
    assert code == 2 and f"got {10**23}" in stderr and "e+" not in stderr
    with pytest.raises(QuantizeOptionError, match="seed must be an integer 0 to 4294967295"):
        kmcodec.quantize(photo, 4, seed=2**32)
    with pytest.raises(QuantizeOptionError, match="seed"):
        kmcodec.quantize(photo, 4, seed=1.5)  # type: ignore[arg-type]
    same = kmcodec.quantize(photo, 4, seed=np.int64(2**32 - 1))  # numpy integers are integers too
    assert np.array_equal(same.palette, kmcodec.quantize(photo, 4, seed=2**32 - 1).palette)


def test_demo_keeps_earlier_files_unless_forced(tmp_path: Path, capsys) -> None:
    earlier = tmp_path / "china-k2.kmq"
    earlier.write_bytes(b"mine")
    code, _, stderr = run_cli(capsys, "demo", "-k", "2", "--out", str(tmp_path))
    assert code == 1
    assert_one_line_error(stderr, "china-k2.kmq", "output exists")
    assert earlier.read_bytes() == b"mine" and not (tmp_path / "china-k2.png").exists()
    code, _, stderr = run_cli(capsys, "demo", "-k", "2", "--out", str(tmp_path), "-f")
    assert code == 0, stderr
    assert kmcodec.read(earlier).k == 2


@pytest.mark.skipif(sys.platform == "win32", reason="RLIMIT_FSIZE is POSIX")
def test_a_failed_write_names_the_output_and_leaves_nothing(photo: Path, tmp_path: Path) -> None:
    """A write the file-size limit stops (as a full disk would) is one line naming the output; no file stays."""
    import resource

    out = tmp_path / "big.kmq"

    def small_files() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))

    done = subprocess.run(
        [sys.executable, "-m", "kmcodec", "encode", str(photo), str(out), "-k", "256", "--coding", "raw"],
        capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)), preexec_fn=small_files,
        timeout=120,
    )
    assert done.returncode == 1
    assert_one_line_error(done.stderr, "big.kmq", "cannot write the output")
    assert list(tmp_path.iterdir()) == []


def test_a_loop_of_links_is_refused_as_the_shell_refuses_it(photo: Path, tmp_path: Path, capsys) -> None:
    """`>` fails with 'Too many levels of symbolic links'; -f must not replace the link with a regular file."""
    first, second = tmp_path / "l1.kmq", tmp_path / "l2.kmq"
    first.symlink_to(second)
    second.symlink_to(first)
    code, _, stderr = run_cli(capsys, "encode", str(photo), str(first), "-k", "4", "-f")
    assert code == 1
    assert_one_line_error(stderr, "l1.kmq", "too many levels of symbolic links")
    assert first.is_symlink() and second.is_symlink()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["l1.kmq", "l2.kmq"]
