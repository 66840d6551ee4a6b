"""Ctrl-C and SIGTERM: the command stops, removes its temporary files, stops every process it started,
prints one line (`kmcodec: error: interrupted` / `terminated`) and exits 130 / 143.

The signal goes to the main process alone (`kill PID`) or to its whole process group, as a terminal's
Ctrl-C and `timeout` send it. Every run carries a marker in its environment, which every process it
starts inherits (forkserver, workers, resource tracker, Dask's worker processes), so a helper left
behind is found even after it has lost its parent.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
THROTTLED = [sys.executable, str(ROOT / "tests" / "throttled_cli.py")]
MARKER = "KMCODEC_SIGNAL_TEST_RUN"

pytestmark = pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="finds the helpers through /proc")


def marked_processes(run_id: str) -> list[int]:
    """Live processes whose environment carries this run's marker (a zombie's environment reads as empty)."""
    needle = f"{MARKER}={run_id}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:  # gone meanwhile, or not ours
            continue
        if needle in environ.split(b"\0"):
            found.append(int(entry.name))
    return found


def wait_until(condition, timeout: float, step: float = 0.005) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(step)
    return condition()


class Batch:
    """`kmcodec encode PHOTOS -d OUT -k 256 -j 2` in its own process group, stderr to a file."""

    def __init__(self, photos: list[Path], out: Path, stderr: Path, *extra: str) -> None:
        self.run_id = uuid.uuid4().hex
        self.out = out
        env = dict(os.environ, PYTHONPATH=str(ROOT), **{MARKER: self.run_id})
        env.pop("PYTHONUNBUFFERED", None)
        self.stderr_path = stderr
        with open(stderr, "wb") as sink:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "kmcodec", "encode", *map(str, photos), "-d", str(out), "-k", "256",
                 "-j", "2", "-q", *extra],
                stdout=subprocess.DEVNULL, stderr=sink, env=env, start_new_session=True,
            )

    def listing(self) -> list[str]:
        return sorted(p.name for p in self.out.iterdir()) if self.out.is_dir() else []

    def signal(self, signum: int, to_group: bool) -> None:
        if to_group:
            os.killpg(self.process.pid, signum)  # its own session: the group id is its pid
        else:
            os.kill(self.process.pid, signum)

    def stop(self) -> None:
        """Leave nothing running if a test failed half-way (only this run's own processes)."""
        for pid in marked_processes(self.run_id):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.process.wait(timeout=30)


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory, china) -> list[Path]:
    """48 small photos (china.jpg at 160x107, each shifted, so every file is its own work)."""
    import numpy as np

    directory = tmp_path_factory.mktemp("signals")
    small = np.asarray(Image.fromarray(china).resize((160, 107), Image.Resampling.LANCZOS))
    paths = []
    for index in range(48):
        path = directory / f"photo{index:02d}.png"
        Image.fromarray(np.roll(small, index, axis=1)).save(path)
        paths.append(path)
    return paths


def interrupt_batch(photos: list[Path], tmp_path: Path, signum: int, *, to_group: bool, moment: str,
                    extra: tuple[str, ...] = ()) -> tuple[Batch, list[str]]:
    """Start batches of 12, then 24, then 48 photos until one is still running when the moment comes
    (`starting`: OUTDIR exists, the helpers are starting; `running`: a first output or temporary file is
    there) and signal it then; return the run and the listing of OUTDIR when it had exited."""
    for count in (12, 24, 48):
        out = tmp_path / f"out-{count}"
        batch = Batch(photos[:count], out, tmp_path / f"stderr-{count}.txt", *extra)
        try:
            if moment == "starting":
                came = wait_until(lambda: out.is_dir() or batch.process.poll() is not None, 60)
            else:
                came = wait_until(lambda: batch.listing() != [] or batch.process.poll() is not None, 60, 0.002)
            assert came, "the batch neither started nor ended within a minute"
            if batch.process.poll() is not None:  # finished before the moment came: more work, and again
                continue
            batch.signal(signum, to_group)
            batch.process.wait(timeout=60)
            return batch, batch.listing()
        except BaseException:
            batch.stop()
            raise
    pytest.fail("every batch, even of 48 photos, ended before it could be signalled")


def check_stopped_cleanly(batch: Batch, listing: list[str], expected_code: int, message: str) -> None:
    try:
        _check_stopped_cleanly(batch, listing, expected_code, message)
    finally:
        batch.stop()  # whatever failed, leave none of this run's processes behind


def _check_stopped_cleanly(batch: Batch, listing: list[str], expected_code: int, message: str) -> None:
    assert batch.process.returncode == expected_code
    time.sleep(1.0)
    assert batch.listing() == listing, "outputs appeared after the command had exited"
    assert not [name for name in listing if name.endswith(".part")], listing
    assert all(name.endswith(".kmq") and not name.startswith(".") for name in listing), listing
    if not wait_until(lambda: not marked_processes(batch.run_id), 5, 0.05):
        pytest.fail(f"helper processes outlived the command: {marked_processes(batch.run_id)}")
    stderr = batch.stderr_path.read_text()  # complete: every process that could write to it has ended
    assert stderr == f"kmcodec: error: {message}\n", stderr


CASES = [
    pytest.param(signal.SIGINT, False, "running", 130, "interrupted", id="SIGINT-to-main"),
    pytest.param(signal.SIGTERM, False, "running", 143, "terminated", id="SIGTERM-to-main"),
    pytest.param(signal.SIGINT, True, "running", 130, "interrupted", id="SIGINT-to-group-running"),
    pytest.param(signal.SIGINT, True, "starting", 130, "interrupted", id="SIGINT-to-group-starting"),
    pytest.param(signal.SIGTERM, True, "running", 143, "terminated", id="SIGTERM-to-group-running"),
]


@pytest.mark.parametrize("signum, to_group, moment, expected_code, message", CASES)
def test_a_signalled_batch_stops_its_workers_and_says_one_line(photos, tmp_path, signum, to_group, moment,
                                                               expected_code, message) -> None:
    batch, listing = interrupt_batch(photos, tmp_path, signum, to_group=to_group, moment=moment)
    check_stopped_cleanly(batch, listing, expected_code, message)


def test_ctrl_c_on_a_dask_batch_says_one_line(photos, tmp_path) -> None:
    pytest.importorskip("distributed")
    batch, listing = interrupt_batch(photos, tmp_path, signal.SIGINT, to_group=True, moment="running",
                                     extra=("--scheduler", "local"))
    check_stopped_cleanly(batch, listing, 130, "interrupted")


@pytest.mark.parametrize("signum, expected_code, message", [(signal.SIGTERM, 143, "terminated"),
                                                            (signal.SIGINT, 130, "interrupted")])
@pytest.mark.parametrize("verb", ["encode", "decode"])
def test_a_signal_mid_write_leaves_no_temporary_file(photos, tmp_path, verb, signum, expected_code,
                                                     message) -> None:
    """The output is being written (slowly, through tests/throttled_cli.py) when the signal comes."""
    source = photos[0]
    if verb == "decode":
        source = tmp_path / "photo.kmq"
        subprocess.run([sys.executable, "-m", "kmcodec", "encode", str(photos[0]), str(source), "-k", "16", "-q"],
                       check=True, env=dict(os.environ, PYTHONPATH=str(ROOT)), timeout=120)
    out = tmp_path / "out"
    out.mkdir()
    target = out / ("photo.kmq" if verb == "encode" else "photo.png")
    options = ["-k", "16"] if verb == "encode" else []
    process = subprocess.Popen(THROTTLED + ["256", "0.02", verb, str(source), str(target), "-q", *options],
                               cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout.readline().strip() == "writing"
        assert [p.name for p in out.iterdir()][0].endswith(".part")
        process.send_signal(signum)
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == expected_code
    assert stderr == f"kmcodec: error: {message}\n"
    assert list(out.iterdir()) == []


def test_sigterm_handler_is_restored_after_an_in_process_run(tmp_path, capsys) -> None:
    """main() installs its SIGTERM handler for the life of the command only."""
    from kmcodec.cli import main

    before = signal.getsignal(signal.SIGTERM)
    assert main(["info", str(ROOT / "spec" / "vectors" / "ok-k0001-b0-rgb-70000x1.kmq")]) == 0
    assert signal.getsignal(signal.SIGTERM) is before
