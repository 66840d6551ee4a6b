"""The kmcodec command's entry point: the console script and `python -m kmcodec` call run() here.

This module imports nothing that is not loaded already (os, sys), so that a Ctrl-C while the command
line's modules load, or while its arguments are read (before kmcodec.cli handles interrupts itself), ends
as one during a command does: one line, `kmcodec: error: interrupted`, and exit code 130, no traceback.
A Ctrl-C during the import of the kmcodec package itself (Pillow, to register .kmq) or of Python's own
modules comes before any of this code runs.
"""

from __future__ import annotations

import os
import sys
from typing import NoReturn  # loaded already, by the kmcodec package

#: 128 + SIGINT, as a shell reports it (kmcodec.cli.EXIT_INTERRUPTED, not imported: this module stays light)
EXIT_INTERRUPTED = 130


def run() -> None:
    """Run the kmcodec command (kmcodec.cli.run, which ends the process), reporting an early Ctrl-C."""
    try:
        from .cli import run as run_command

        run_command()
    except KeyboardInterrupt:
        _exit_interrupted()


def _exit_interrupted() -> NoReturn:
    """Say `interrupted` in one line and end the process at once with code 130 (half-loaded modules have
    nothing to tear down that matters, and the command line ends without teardown anyway)."""
    for stream, text in ((sys.stdout, ""), (sys.stderr, "kmcodec: error: interrupted\n")):
        try:
            stream.write(text)
            stream.flush()
        except (OSError, ValueError, AttributeError):  # closed, or None (pythonw)
            pass
    os._exit(EXIT_INTERRUPTED)
