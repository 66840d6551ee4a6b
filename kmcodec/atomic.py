"""Write files atomically: to a temporary file in the target directory, fsync, then rename into place.

A run killed at any moment leaves either the old file (or none) or the complete new one.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Iterator


class OutputExistsError(FileExistsError):
    """The output exists and overwriting was not allowed."""


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike, *, overwrite: bool = False) -> Iterator[BinaryIO]:
    """Yield a binary file to write; on success it replaces `path` atomically, on error it vanishes."""
    target = Path(path)
    if not overwrite and target.exists():
        raise OutputExistsError(f"{target}: output exists (use --force / overwrite=True to replace it)")
    directory = target.parent if str(target.parent) else Path(".")
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=directory)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        if overwrite:
            os.replace(tmp, target)
        else:
            # link() fails if the target appeared meanwhile, so a concurrent writer is never clobbered
            try:
                os.link(tmp, target)
            except FileExistsError:
                raise OutputExistsError(f"{target}: output exists (use --force / overwrite=True to replace it)") from None
            except OSError:
                os.replace(tmp, target)  # file systems without hard links
            else:
                tmp.unlink()
        _fsync_directory(directory)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def _umask() -> int:
    """The process umask, read without changing it (os.umask would briefly alter process state)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    return 0o022


def _fsync_directory(directory: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
