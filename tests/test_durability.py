"""Durability: `kmcodec encode` and `kmcodec decode` processes SIGKILLed mid-run, and the no-clobber race.

Some runs go through tests/throttled_cli.py, the real CLI with its output writes
slowed down, so the kill lands inside the write for certain; the others are
killed after plain delays. After every kill the target must be absent (or the
old file, byte for byte) or complete and valid, and nothing but a hidden
`.NAME.PID.*.part` temporary may be left, which the next write removes.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from kmcodec import api

ROOT = Path(__file__).resolve().parent.parent
THROTTLED = [sys.executable, str(ROOT / "tests" / "throttled_cli.py")]
PLAIN = [sys.executable, "-m", "kmcodec"]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, china) -> dict:
    """An input photo crop, its .kmq (the reference result), and that file's decoded pixels."""
    base = tmp_path_factory.mktemp("durability")
    source = base / "crop.png"
    Image.fromarray(china[120:312, 180:436]).save(source)
    reference = base / "reference.kmq"
    api.write(reference, source, 8)  # what the CLI writes: same image, k and (default) seed
    return {"base": base, "source": source, "reference": reference.read_bytes(),
            "pixels": api.read(reference).to_array()}


def in_parallel(function, items) -> list:
    """Handle every run in its own thread, so each is killed at its own moment however slow the others are."""
    with ThreadPoolExecutor(max_workers=len(items)) as pool:
        return list(pool.map(function, items))


class Run:
    """One CLI process writing `target` in its own directory."""

    def __init__(self, directory: Path, command: list[str], target: Path) -> None:
        self.directory = directory
        self.target = target
        self.process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def wait_for_write(self) -> None:
        line = self.process.stdout.readline()
        assert line.strip() == "writing", (line, self.process.stderr.read())

    def kill(self) -> bool:
        """SIGKILL the process; True if it was still running."""
        running = self.process.poll() is None
        if running:
            os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait()
        return running

    def leftovers(self) -> list[str]:
        return sorted(p.name for p in self.directory.iterdir() if p != self.target and p.name != "old")


def prepare(workspace, name: str, *, old: bytes | None = None) -> tuple[Path, Path]:
    directory = workspace["base"] / name
    directory.mkdir()
    target = directory / (name + (".kmq" if name.startswith("encode") else ".png"))
    if old is not None:
        target.write_bytes(old)
    return directory, target


def check_target(run: Run, workspace, *, old: bytes | None) -> str:
    """The target is the old bytes / absent, or complete and valid; return which."""
    if not run.target.exists() or (old is not None and run.target.read_bytes() == old):
        state = "old" if old is not None else "absent"
        if old is None:
            assert not run.target.exists()
    else:
        if run.target.suffix == ".kmq":
            assert run.target.read_bytes() == workspace["reference"]
        else:
            assert np.array_equal(np.asarray(Image.open(run.target).convert("RGB")), workspace["pixels"])
        state = "complete"
    for name in run.leftovers():  # only the killed process's hidden temporary may remain
        assert name.startswith(f".{run.target.name}.{run.process.pid}.") and name.endswith(".part"), name
    return state


def encode_command(base: list[str], workspace, target: Path, *extra: str) -> list[str]:
    return base + ["encode", str(workspace["source"]), str(target), "-k", "8", "-q", *extra]


def decode_command(base: list[str], workspace, target: Path, *extra: str) -> list[str]:
    source = workspace["base"] / "reference.kmq"
    return base + ["decode", str(source), str(target), "-q", *extra]


def test_killed_mid_write_leaves_nothing_or_the_old_file(workspace) -> None:
    runs = []
    for verb, command in (("encode", encode_command), ("decode", decode_command)):
        chunk = "256" if verb == "encode" else "2048"
        for index, (pause, old) in enumerate(((0.1, None), (0.05, b"old contents"))):
            directory, target = prepare(workspace, f"{verb}-throttled-{index}", old=old)
            extra = ("--force",) if old is not None else ()
            runs.append((Run(directory, command(THROTTLED + [chunk, "0.01"], workspace, target, *extra), target),
                         pause, old))

    def kill_mid_write(item) -> None:
        run, pause, old = item
        run.wait_for_write()
        time.sleep(pause)
        assert run.kill(), "the throttled write finished before the kill"

    in_parallel(kill_mid_write, runs)
    for run, pause, old in runs:
        assert check_target(run, workspace, old=old) == ("old" if old is not None else "absent")
        partial = run.leftovers()
        assert len(partial) == 1 and (run.directory / partial[0]).stat().st_size > 0  # killed inside the write
    # the next write to the same target cleans up the dead process's temporary
    run, _, _ = runs[0]
    api.write(run.target, workspace["source"], 8)
    assert run.target.read_bytes() == workspace["reference"]
    assert run.leftovers() == []


def test_killed_at_random_moments_leaves_old_or_complete(workspace) -> None:
    rng = np.random.default_rng(7)
    runs = []
    for verb, command in (("encode", encode_command), ("decode", decode_command)):
        for index in range(2):
            old = b"old contents" if index == 1 else None
            directory, target = prepare(workspace, f"{verb}-plain-{index}", old=old)
            extra = ("--force",) if old is not None else ()
            runs.append((Run(directory, command(PLAIN, workspace, target, *extra), target), old,
                         rng.uniform(0.4, 2.5)))

    def kill_later(item) -> str:
        run, old, delay = item
        time.sleep(delay)
        run.kill()
        return check_target(run, workspace, old=old)

    assert set(in_parallel(kill_later, runs)) <= {"absent", "old", "complete"}


def test_an_output_that_appears_during_the_run_is_never_overwritten(workspace) -> None:
    runs = []
    for verb, command in (("encode", encode_command), ("decode", decode_command)):
        directory, target = prepare(workspace, f"{verb}-race")
        runs.append(Run(directory, command(THROTTLED + ["4096", "0.02"], workspace, target), target))

    def race(run: Run) -> None:
        run.wait_for_write()
        run.target.write_bytes(b"someone else's file")  # appears after the start-up check, before the rename
        _, err = run.process.communicate(timeout=120)
        assert run.process.returncode == 1, err
        assert err.startswith("kmcodec: error: ") and "output exists" in err and err.count("\n") == 1
        assert run.target.read_bytes() == b"someone else's file"
        assert run.leftovers() == []

    in_parallel(race, runs)


def open_descriptors() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="counts descriptors through /proc")
@pytest.mark.parametrize("moment", ["before the body", "in the body"])
def test_an_interrupt_at_the_start_of_a_write_leaves_no_file_and_no_descriptor(tmp_path, monkeypatch,
                                                                              moment) -> None:
    """A Ctrl-C (KeyboardInterrupt) raised just after the temporary file is created, before the write has
    begun, or inside the writer's body: the temporary file is removed and its descriptor closed."""
    from kmcodec import atomic

    if moment == "before the body":
        def interrupted(target):
            raise KeyboardInterrupt
        monkeypatch.setattr(atomic, "_named_errors", interrupted)  # the first call after the file exists
    before = open_descriptors()
    with pytest.raises(KeyboardInterrupt):
        with atomic.atomic_output(tmp_path / "out.kmq") as handle:
            handle.write(b"partial")
            raise KeyboardInterrupt
    assert open_descriptors() == before
    assert list(tmp_path.iterdir()) == []
