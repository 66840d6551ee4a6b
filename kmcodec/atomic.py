"""Write files atomically: to a temporary file in the target directory, fsync, then rename into place.

A run killed at any moment (even by SIGKILL) leaves either the old file (or none)
or the complete new one at the target path. The temporary file is a hidden
`.NAME.PID.RANDOM.part` beside the target; one left behind by a killed process
is removed by the next write to the same target once that process is gone.

With overwrite, a target that exists is treated as the shell's `>` treats it: a
symbolic link is followed (the file it points to is replaced, the link stays), and
a device or FIFO (/dev/null, /dev/stdout, a named pipe) is written into, not
replaced by a regular file; there is nothing to make atomic there.
"""

from __future__ import annotations

import contextlib
import errno
import os
from pathlib import Path
from typing import BinaryIO, Iterator


class OutputExistsError(FileExistsError):
    """The output exists and overwriting was not allowed."""


def _exists_error(target: Path) -> OutputExistsError:
    return OutputExistsError(f"{target}: output exists (use --force / overwrite=True to replace it)")


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike, *, overwrite: bool = False) -> Iterator[BinaryIO]:
    """Yield a binary file to write; on success it replaces `path` atomically, on error it vanishes.

    Without `overwrite`, the file is published with link(), which fails if the
    target appeared meanwhile, so a file created by someone else during the run
    is never clobbered. Errors name the target, never the temporary file.
    """
    named = Path(path)
    if not overwrite and (named.exists() or named.is_symlink()):
        raise _exists_error(named)
    if is_special_file(named):  # written into through the name given, not replaced
        with _named_errors(named), open(named, "wb") as handle:
            yield handle
        return
    target = _followed(named) if named.is_symlink() else named
    if target.is_dir():
        raise IsADirectoryError(errno.EISDIR, "is a directory", str(named))
    directory = target.parent
    _remove_stale_temporaries(directory, target.name)
    tmp = directory / f".{target.name}.{os.getpid()}.{os.urandom(4).hex()}.part"
    # One try from before the temporary file exists: a Ctrl-C or SIGTERM (raised as an exception) right after
    # the file is created, before a later try could begin, must remove the file too. open() creates it
    # (O_CREAT | O_EXCL, close-on-exec) and wraps the descriptor in one C call, so no interruption can fall
    # between a bare descriptor and the file object that closes it.
    ours = True
    handle = None
    try:
        try:
            handle = open(tmp, "xb")  # noqa: SIM115 - closed below, on every path
        except OSError as exc:
            ours = False  # nothing was created (or, EEXIST, the name is someone else's)
            missing = exc.errno in (errno.ENOENT, errno.ENOTDIR) and not directory.is_dir()
            reason = "directory does not exist" if missing else exc.strerror
            raise OSError(exc.errno, f"cannot create the output: {reason}", str(named)) from None
        with _named_errors(named), handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        _publish(tmp, target, overwrite)
        _fsync_directory(directory)
    except BaseException:
        if handle is not None:
            with contextlib.suppress(OSError):
                handle.close()
        if ours:
            with contextlib.suppress(OSError):
                tmp.unlink()
        raise


def is_special_file(path: Path) -> bool:
    """Whether `path` (through any links) is a device or FIFO, which an output is written into, as `>` writes:
    /dev/null, a named pipe, /dev/stdout on a pipe (which resolves to /proc/PID/fd/pipe:[N], no path at all)."""
    return path.exists() and not path.is_file() and not path.is_dir()


def _followed(link: Path) -> Path:
    """Where a symbolic link leads (a link to nothing leads to the file it names, which is then created, as `>`
    creates it); a loop of links is refused as the shell refuses it, rather than replaced by a regular file."""
    try:
        return link.resolve(strict=True)
    except FileNotFoundError:
        return Path(os.path.realpath(link))
    except (RuntimeError, OSError) as exc:  # RuntimeError: Python < 3.13's "Symlink loop"
        if isinstance(exc, OSError) and exc.errno != errno.ELOOP:
            raise
        raise OSError(errno.ELOOP, "too many levels of symbolic links", str(link)) from None


@contextlib.contextmanager
def _named_errors(target: Path) -> Iterator[None]:
    """Give an OSError without a file name (a write that found the disk full or the size limit reached) the
    target's name, so the message says which output failed."""
    try:
        yield
    except OSError as exc:
        if exc.filename is not None or isinstance(exc, OutputExistsError):
            raise
        raise type(exc)(exc.errno, f"cannot write the output: {exc.strerror or exc}", str(target)) from None


def _publish(tmp: Path, target: Path, overwrite: bool) -> None:
    """Move the finished temporary file to the target: replace, or link (no clobber) then unlink."""
    try:
        if overwrite:
            os.replace(tmp, target)
            return
        try:
            os.link(tmp, target)
        except FileExistsError:
            raise _exists_error(target) from None
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.EMLINK, errno.ENOSYS):
                raise
            # a file system without hard links: check, then rename (a narrow race remains there only)
            if target.exists():
                raise _exists_error(target) from None
            os.replace(tmp, target)
        else:
            tmp.unlink()
    except OSError as exc:
        if isinstance(exc, OutputExistsError):
            raise
        raise OSError(exc.errno, f"cannot write the output: {exc.strerror}", str(target)) from None


def _remove_stale_temporaries(directory: Path, name: str) -> None:
    """Delete temporaries of `name` left by processes that no longer exist (a SIGKILLed earlier run)."""
    prefix = f".{name}."
    with contextlib.suppress(OSError):
        for entry in os.scandir(directory):
            if not (entry.name.startswith(prefix) and entry.name.endswith(".part")):
                continue
            pid_text = entry.name[len(prefix) : -len(".part")].split(".")[0]
            if pid_text.isdigit() and not _process_alive(int(pid_text)):
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, OSError):
        return True
    return True


def _fsync_directory(directory: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
