"""The command line's arguments and streams at their edges: `--` before paths that start with '-', no
abbreviated options, demo's --out, inputs and outputs that are named pipes, picture names refused for .kmq
outputs, and a Ctrl-C before the command's own handling starts."""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import kmcodec
from kmcodec.cli import PICTURE_SUFFIXES, _dither_alone

from test_cli import ROOT, assert_one_line_error, run_cli

needs_fifo = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes are POSIX")


@pytest.fixture(scope="module")
def photo(tmp_path_factory: pytest.TempPathFactory, china: np.ndarray) -> Path:
    """A 160x107 PNG downscaled from china.jpg."""
    path = tmp_path_factory.mktemp("edges") / "china-small.png"
    Image.fromarray(china).resize((160, 107), Image.Resampling.LANCZOS).save(path)
    return path


def listing(directory: Path) -> list[str]:
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*"))


def child_env() -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("PYTHONUNBUFFERED", None)
    return env


# --- `--`: everything after it is a path -----------------------------------------------------------------


@pytest.mark.parametrize("argv, outputs", [
    (["encode", "-k", "4", "-q", "--", "-in.png", "-out.kmq"], ["-out.kmq"]),
    (["encode", "plain.png", "-k", "4", "-q", "--", "-out.kmq"], ["-out.kmq"]),
    (["encode", "-k", "4", "-q", "plain.png", "--", "-out.kmq"], ["-out.kmq"]),
    (["encode", "plain.png", "-k", "4", "--dither", "--", "-out.kmq"], ["-out.kmq"]),
    (["encode", "-k", "4", "-q", "-d", "batch", "--", "-in.png", "-dash.png"], ["batch/-dash.kmq", "batch/-in.kmq"]),
    (["decode", "--", "-in.kmq", "-out.png"], ["-out.png"]),
    (["decode", "-q", "--", "-in.kmq", "-out.png"], ["-out.png"]),
    (["decode", "-q", "-d", "batch", "--", "-in.kmq"], ["batch/-in.png"]),
])
def test_a_double_dash_makes_every_later_word_a_path(argv: list[str], outputs: list[str], photo: Path,
                                                     tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    for name in ("-in.png", "-dash.png", "plain.png"):
        Path(name).write_bytes(photo.read_bytes())
    Path("-in.kmq").write_bytes(kmcodec.encode(photo, 4))
    before = set(listing(tmp_path))
    code, _, stderr = run_cli(capsys, *argv)
    assert code == 0, stderr
    assert sorted(set(listing(tmp_path)) - before) == sorted({*outputs, *(["batch"] if "-d" in argv else [])})
    for output in outputs:
        written = tmp_path / output
        if written.suffix == ".kmq":
            assert written.read_bytes() == kmcodec.encode(photo, 4, dither=1.0 if "--dither" in argv else 0.0)
        else:
            with Image.open(written) as picture:
                assert np.array_equal(np.asarray(picture.convert("RGB")), kmcodec.read("-in.kmq").to_array())


@pytest.mark.parametrize("extra", [[], ["--json"]])
def test_info_takes_a_path_after_a_double_dash(extra: list[str], photo: Path, tmp_path: Path, capsys,
                                               monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    Path("-in.kmq").write_bytes(kmcodec.encode(photo, 4))
    code, stdout, stderr = run_cli(capsys, "info", *extra, "--", "-in.kmq")
    assert code == 0, stderr
    assert "-in.kmq" in stdout and "160" in stdout


def test_after_a_double_dash_an_option_is_a_path_too(photo: Path, tmp_path: Path, capsys, monkeypatch) -> None:
    """`-q` after `--` is a third path, not the option (POSIX: the first `--` ends the options)."""
    monkeypatch.chdir(tmp_path)
    code, _, stderr = run_cli(capsys, "encode", "-k", "4", str(photo), "--", "x.kmq", "-q")
    assert code == 2 and "got 3 paths" in stderr
    assert listing(tmp_path) == []


def test_dither_alone_leaves_the_words_after_a_double_dash_alone() -> None:
    assert _dither_alone(["encode", "-k", "4", "--", "--dither", "in.png"]) == [
        "encode", "-k", "4", "--", "--dither", "in.png"]
    assert _dither_alone(["encode", "--dither", "in.png", "--", "--dither", "x"])[:2] == ["encode", "--dither=1"]


# --- no abbreviated options ------------------------------------------------------------------------------


@pytest.mark.parametrize("argv, unknown", [
    (["encode", "IN", "--out", "o.kmq", "-k", "4"], "--out"),  # was taken as --out-dir: a directory o.kmq/
    (["decode", "KMQ", "--out", "o.png"], "--out"),
    (["encode", "IN", "o.kmq", "-k", "4", "--dith"], "--dith"),
    (["encode", "IN", "o.kmq", "-k", "4", "--col=8"], "--col=8"),
    (["info", "KMQ", "--js"], "--js"),
    (["demo", "--o", "demo-out"], "--o"),
    (["compare", "IN", "-k", "4", "-o", "r.html", "--prev=64"], "--prev=64"),
])
def test_abbreviated_options_are_usage_errors(argv: list[str], unknown: str, photo: Path, tmp_path: Path,
                                              capsys, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    kmq = tmp_path / "in.kmq"
    kmq.write_bytes(kmcodec.encode(photo, 4))
    argv = [str(photo) if word == "IN" else str(kmq) if word == "KMQ" else word for word in argv]
    code, stdout, stderr = run_cli(capsys, *argv)
    assert code == 2
    assert f"unrecognized arguments: {unknown}" in stderr and "Traceback" not in stderr
    assert stdout == ""
    assert listing(tmp_path) == ["in.kmq"]


def test_the_top_level_takes_no_abbreviations(capsys) -> None:
    code, stdout, stderr = run_cli(capsys, "--vers")
    assert code == 2 and stdout == "" and "usage:" in stderr


# --- demo --out ------------------------------------------------------------------------------------------


def test_demo_makes_a_new_out_directory_with_its_parents(tmp_path: Path, capsys) -> None:
    out = tmp_path / "new" / "deeper"
    code, _, stderr = run_cli(capsys, "demo", "-k", "2", "--out", str(out))
    assert code == 0, stderr
    assert sorted(p.name for p in out.iterdir()) == ["china-k2.kmq", "china-k2.png"]
    assert kmcodec.read(out / "china-k2.kmq").k == 2


@pytest.mark.parametrize("where", ["itself", "parent"])
def test_demo_refuses_an_out_that_is_a_file(where: str, tmp_path: Path, capsys) -> None:
    blocker = tmp_path / "taken"
    blocker.write_bytes(b"mine")
    out = blocker if where == "itself" else blocker / "sub"
    code, stdout, stderr = run_cli(capsys, "demo", "-k", "2", "--out", str(out))
    assert code == 1
    assert stdout == ""  # refused before any work
    expected = "taken: is a file, not a directory" if where == "itself" else f"{blocker} is a file, not a directory"
    assert_one_line_error(stderr, expected)
    assert "does not exist" not in stderr
    assert listing(tmp_path) == ["taken"] and blocker.read_bytes() == b"mine"


# --- picture names for encode's output -------------------------------------------------------------------


def test_every_extension_pillow_writes_is_a_picture_name() -> None:
    """PICTURE_SUFFIXES is static (the command line does not import Pillow before its prefetch starts);
    this keeps it in step with the Pillow installed."""
    Image.init()
    missing = sorted(extension for extension, name in Image.registered_extensions().items()
                     if name in Image.SAVE and extension != ".kmq" and extension not in PICTURE_SUFFIXES)
    assert missing == []
    assert ".kmq" not in PICTURE_SUFFIXES


@pytest.mark.parametrize("suffix", [".jfif", ".jpe", ".pdf", ".qoi", ".j2k", ".dib", ".icns", ".eps", ".JFIF"])
def test_encode_refuses_more_picture_names(suffix: str, photo: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / f"quantized{suffix}"
    code, _, stderr = run_cli(capsys, "encode", str(photo), str(out), "-k", "4")
    assert code == 1
    assert_one_line_error(stderr, out.name, "encode writes a .kmq file", "quantized.kmq")
    assert listing(tmp_path) == []


# --- named pipes: outputs whose reader leaves, inputs that can be read once -------------------------------


def exact_colours_png(path: Path, side: int = 400) -> Path:
    """A side x side PNG of 256 exact colours in noise: encode -k 256 keeps them (no k-means to run), and its
    raw labels (side² bytes) are larger than a pipe's buffer."""
    rng = np.random.default_rng(5)
    palette = rng.integers(0, 256, size=(256, 3), dtype=np.uint8)
    palette[:, 0] = np.arange(256)  # all distinct
    Image.fromarray(palette[rng.integers(0, 256, size=(side, side))]).save(path)
    return path


def read_a_little_then_close(fifo: Path, received: list[bytes]) -> threading.Thread:
    """A reader that takes the first bytes written into the named pipe and then goes away, as `head -c 100`."""

    def reader() -> None:
        with open(fifo, "rb", buffering=0) as handle:
            received.append(handle.read(100))

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    return thread


@needs_fifo
@pytest.mark.parametrize("verb", ["encode", "decode"])
def test_an_output_pipe_whose_reader_leaves_is_a_failed_output(verb: str, tmp_path: Path, capsys) -> None:
    source = exact_colours_png(tmp_path / "noise.png")
    if verb == "decode":
        raw = tmp_path / "noise.kmq"
        raw.write_bytes(kmcodec.encode(source, 256, coding="raw"))
        source = raw
    fifo = tmp_path / "p.kmq"
    os.mkfifo(fifo)
    received: list[bytes] = []
    reader = read_a_little_then_close(fifo, received)
    options = ["-k", "256", "--coding", "raw"] if verb == "encode" else []
    code, stdout, stderr = run_cli(capsys, verb, str(source), str(fifo), "-f", *options)
    reader.join(timeout=60)
    assert received and received[0].startswith(b"\x89KMQ")
    assert code == 1
    assert stdout == ""
    assert_one_line_error(stderr, f"{fifo}: cannot write the output: Broken pipe")
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    expected = {"p.kmq", "noise.png"} | ({"noise.kmq"} if verb == "decode" else set())
    assert set(listing(tmp_path)) == expected  # no temporary file left beside the pipe


def test_stdout_whose_reader_left_is_not_an_error(tmp_path: Path) -> None:
    """`kmcodec info x.kmq | head -1`: the reader going away is not the command's failure."""
    vector = ROOT / "spec" / "vectors" / "ok-k0001-b0-rgb-70000x1.kmq"
    read_end, write_end = os.pipe()
    os.close(read_end)  # gone before the first line is written
    try:
        done = subprocess.run([sys.executable, "-m", "kmcodec", "info", str(vector)], stdout=write_end,
                              stderr=subprocess.PIPE, text=True, env=child_env(), timeout=60)
    finally:
        os.close(write_end)
    assert done.returncode == 0
    assert done.stderr == ""


def feed_fifo(fifo: Path, data: Path) -> subprocess.Popen:
    """`cat data > fifo` in the background: the pipe can be opened and read once."""
    return subprocess.Popen(["sh", "-c", 'exec cat "$1" > "$2"', "sh", str(data), str(fifo)])


def run_child(argv: list[str], fifo: Path, data: Path) -> subprocess.CompletedProcess:
    """The real command reading a named pipe that `cat` fills; a command that hangs fails the test, not the run."""
    writer = feed_fifo(fifo, data)
    try:
        return subprocess.run([sys.executable, "-m", "kmcodec", *argv], capture_output=True, text=True,
                              env=child_env(), timeout=30)
    finally:
        writer.kill()
        writer.wait()


@needs_fifo
@pytest.mark.parametrize("extra", [[], ["--max-pixels", "200000000"]])  # the second: above Pillow's own limit
def test_encode_reads_a_named_pipe_once(extra: list[str], photo: Path, tmp_path: Path) -> None:
    fifo = tmp_path / "in.fifo"
    os.mkfifo(fifo)
    out = tmp_path / "out.kmq"
    done = run_child(["encode", str(fifo), str(out), "-k", "4", *extra], fifo, photo)
    assert done.returncode == 0, done.stderr
    data = out.read_bytes()
    assert data == kmcodec.encode(photo, 4)
    size = photo.stat().st_size  # the bytes that came through the pipe, not its st_size of 0
    assert f"{len(data) / size:.3f}x input)" in done.stdout
    assert done.stderr == ""


@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="needs /dev/zero")
@pytest.mark.parametrize("verb", ["encode", "info"])
def test_an_endless_device_input_is_not_read_whole(verb: str, tmp_path: Path) -> None:
    """A pipe is read whole, once; a device is left to the readers, which take only what they need to refuse
    it (memory is bounded here, so reading /dev/zero whole fails fast instead of filling it)."""
    import resource

    def bounded() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))

    argv = ["encode", "/dev/zero", str(tmp_path / "out.kmq"), "-k", "4"] if verb == "encode" else ["info", "/dev/zero"]
    done = subprocess.run([sys.executable, "-m", "kmcodec", *argv], capture_output=True, text=True,
                          env=child_env(), timeout=60, preexec_fn=bounded)
    assert done.returncode == 1
    assert_one_line_error(done.stderr, "/dev/zero", "not an image format" if verb == "encode" else "not a KMQ file")
    assert listing(tmp_path) == []


@needs_fifo
@pytest.mark.parametrize("extra", [[], ["--json"]])
def test_info_reads_a_named_pipe_once(extra: list[str], photo: Path, tmp_path: Path) -> None:
    kmq = tmp_path / "x.kmq"
    kmq.write_bytes(kmcodec.encode(photo, 8, coding="raw"))
    fifo = tmp_path / "in.fifo"
    os.mkfifo(fifo)
    done = run_child(["info", str(fifo), *extra], fifo, kmq)
    assert done.returncode == 0, done.stderr
    size = kmq.stat().st_size
    if extra:
        assert '"file_bytes": %d' % size in done.stdout
    else:
        assert f"file:           {size:,} bytes" in done.stdout
    assert done.stderr == ""


@needs_fifo
def test_a_named_pipe_is_not_prefetched(tmp_path: Path, photo: Path) -> None:
    """Reading the pipe's header on the prefetch thread would take bytes the real read never gets back."""
    from kmcodec.prefetch import PicturePrefetch

    fifo = tmp_path / "in.fifo"
    os.mkfifo(fifo)
    head = photo.read_bytes()[:24]
    holder = os.open(fifo, os.O_RDWR | os.O_NONBLOCK)  # a writer and a reader, so opening does not block
    try:
        os.write(holder, head)
        prefetch = PicturePrefetch(fifo, max_pixels=None)
        assert os.read(holder, 100) == head  # nothing was read from the pipe
        assert prefetch.result() is None
    finally:
        os.close(holder)


# --- Ctrl-C before the command handles it ----------------------------------------------------------------

INTERRUPT_AT_IMPORT = """
import os, signal, sys
class InterruptAt:
    def find_spec(self, name, path=None, target=None):
        if name == {module!r}:
            os.kill(os.getpid(), signal.SIGINT)  # as a Ctrl-C while this module is being imported
        return None
sys.meta_path.insert(0, InterruptAt())
sys.argv = ["kmcodec", "--version"]
{start}
"""

STARTS = {
    "python -m kmcodec": "import runpy; runpy.run_module('kmcodec', run_name='__main__', alter_sys=True)",
    "console script": "from kmcodec.console import run; sys.exit(run())",  # what pip's wrapper does
}


@pytest.mark.parametrize("start", sorted(STARTS))
@pytest.mark.parametrize("module", ["kmcodec.cli", "kmcodec.atomic", "argparse"])
def test_ctrl_c_while_the_command_line_loads_is_one_line(module: str, start: str) -> None:
    code = INTERRUPT_AT_IMPORT.format(module=module, start=STARTS[start])
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=child_env(), timeout=60)
    assert done.returncode == 130
    assert done.stderr == "kmcodec: error: interrupted\n"
    assert done.stdout == ""


def test_ctrl_c_while_the_arguments_are_read_is_one_line(tmp_path: Path) -> None:
    code = (
        "import os, signal, sys\n"
        "import kmcodec.cli as cli\n"
        "build = cli.build_parser\n"
        "def interrupted():\n"
        "    os.kill(os.getpid(), signal.SIGINT)\n"
        "    return build()\n"
        "cli.build_parser = interrupted\n"
        f"sys.argv = ['kmcodec', 'info', {str(ROOT / 'spec' / 'vectors' / 'ok-k0001-b0-rgb-70000x1.kmq')!r}]\n"
        "from kmcodec.console import run\n"
        "run()\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=child_env(), timeout=60)
    assert done.returncode == 130
    assert done.stderr == "kmcodec: error: interrupted\n"
    assert done.stdout == ""


def test_the_console_script_starts_at_the_light_entry_point() -> None:
    text = (ROOT / "pyproject.toml").read_text()
    assert re.search(r'^kmcodec = "kmcodec\.console:run"$', text, re.MULTILINE)
    done = subprocess.run([sys.executable, "-c", "import sys, kmcodec.console; print('kmcodec.cli' in sys.modules)"],
                          capture_output=True, text=True, env=child_env(), timeout=60)
    assert done.stdout.strip() == "False", done.stderr


def test_double_dash_does_not_depend_on_how_argparse_parses_intermixed_options(monkeypatch, photo: Path,
                                                                                tmp_path: Path, capsys) -> None:
    """Python 3.12.8 and 3.13.1 rewrote intermixed parsing (it no longer calls parse_known_args back): the words
    after `--` must reach the paths either way. Simulated here by an intermixed parse that never calls back."""
    import argparse

    from kmcodec import cli

    def without_callbacks(self, args=None, namespace=None):
        self._parsing = False  # whatever the override does on a call back, it is not called back now
        namespace, extras = argparse.ArgumentParser.parse_known_args(self, args, namespace)  # one plain pass
        return namespace, extras

    monkeypatch.setattr(cli._IntermixedParser, "parse_known_intermixed_args", without_callbacks)
    (tmp_path / "-in.png").write_bytes(photo.read_bytes())
    monkeypatch.chdir(tmp_path)
    code, _, stderr = run_cli(capsys, "encode", "-k", "4", "-q", "--", "-in.png", "-out.kmq")
    assert code == 0, stderr
    assert kmcodec.read(tmp_path / "-out.kmq") == kmcodec.quantize(photo, 4)


def test_dev_stdout_on_a_pipe_is_written_into(photo: Path) -> None:
    """/dev/stdout on a pipe resolves to /proc/PID/fd/pipe:[N] on Linux, no path at all: it is written through
    the name given, as `>` would."""
    if not Path("/dev/stdout").exists():
        pytest.skip("no /dev/stdout here")
    done = subprocess.run([sys.executable, "-m", "kmcodec", "encode", str(photo), "/dev/stdout", "-k", "4", "-f", "-q"],
                          capture_output=True, env=child_env(), timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout == kmcodec.encode(photo, 4)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes are POSIX")
def test_a_piped_input_is_read_only_as_far_as_the_pixel_limit_allows(photo: Path, tmp_path: Path, capsys) -> None:
    """`<(cat /dev/zero)` would otherwise fill the memory before any header is seen."""
    from kmcodec.cli import PIPED_BYTES_PER_PIXEL, PIPED_SLACK_BYTES

    fifo = tmp_path / "endless"
    os.mkfifo(fifo)
    limit = PIPED_BYTES_PER_PIXEL * 1000 + PIPED_SLACK_BYTES

    def feed() -> None:
        with open(fifo, "wb") as writer:
            try:
                for _ in range(limit // (1 << 20) + 2):
                    writer.write(bytes(1 << 20))
            except BrokenPipeError:
                pass

    writer = threading.Thread(target=feed)
    writer.start()
    code, _, stderr = run_cli(capsys, "encode", str(fifo), str(tmp_path / "o.kmq"), "-k", "4", "--max-pixels", "1000")
    writer.join(timeout=60)
    assert code == 1
    assert_one_line_error(stderr, "endless", f"past {limit:,} bytes")


def test_a_reader_that_cannot_seek_is_read_whole_as_image_open_does() -> None:
    """The open without Pillow's bomb check (a raised max_pixels) takes what Image.open takes."""
    import io

    from kmcodec.imageio import load_pixels

    buffer = io.BytesIO()
    pixels = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    Image.fromarray(pixels).save(buffer, format="PNG")

    class ReadOnly:
        def __init__(self) -> None:
            self.data = io.BytesIO(buffer.getvalue())

        def read(self, size: int = -1) -> bytes:
            return self.data.read(size)

    assert np.array_equal(load_pixels(ReadOnly()), pixels)
    assert np.array_equal(load_pixels(ReadOnly(), max_pixels=10**12), pixels)
