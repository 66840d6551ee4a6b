"""A one-line progress bar for batch work, drawn on a terminal only.

A dependency would buy little here: the bar is redrawn once per finished file (and at
most ten times a second), and messages are printed above it so it never garbles output.
"""

from __future__ import annotations

import shutil
import time
from typing import TextIO


def _format_bytes(count: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if abs(count) < 1000 or unit == "GB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1000
    return f"{count:.1f} GB"


def _format_seconds(seconds: float) -> str:
    seconds = max(0, int(seconds))
    return (
        f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
        if seconds >= 3600
        else f"{seconds // 60}:{seconds % 60:02d}"
    )


class ProgressBar:
    """Shows `done/total`, a bar, throughput and an ETA on one terminal line; does nothing when disabled."""

    def __init__(self, total: int, stream: TextIO, *, enabled: bool, label: str = "") -> None:
        self.total = total
        self.stream = stream
        self.enabled = enabled
        self.label = label
        self.done = 0
        self.failed = 0
        self.bytes_in = 0
        self.started = time.monotonic()
        self._last_draw = 0.0
        self._drawn = False
        self._name = ""

    @staticmethod
    def wanted(stream: TextIO, quiet: bool) -> bool:
        """A bar is drawn only on an interactive terminal, and never in quiet mode."""
        if quiet:
            return False
        isatty = getattr(stream, "isatty", None)
        return bool(isatty and isatty())

    def advance(self, *, bytes_in: int = 0, failed: bool = False, name: str = "") -> None:
        """Count one finished file and redraw (throttled, except for the last file)."""
        self.done += 1
        self.failed += int(failed)
        self.bytes_in += bytes_in
        now = time.monotonic()
        self._name = name
        if self.enabled and (self.done == self.total or now - self._last_draw >= 0.1):
            self._draw()
            self._last_draw = now

    def message(self, text: str, stream: TextIO | None = None) -> None:
        """Print a line above the bar (to `stream`, default the bar's), then redraw the bar."""
        out = stream or self.stream
        if self.enabled and self._drawn:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
        print(text, file=out, flush=True)
        if self.enabled and self._drawn:
            self._draw()

    def close(self) -> None:
        """Erase the bar so the summary starts on a clean line."""
        if self.enabled and self._drawn:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self._drawn = False

    def _draw(self) -> None:
        elapsed = time.monotonic() - self.started
        columns = shutil.get_terminal_size((80, 24)).columns
        fraction = self.done / self.total if self.total else 1.0
        rate = self.bytes_in / elapsed if elapsed > 0 else 0.0
        eta = elapsed / self.done * (self.total - self.done) if self.done else 0.0
        failed = f" {self.failed} failed" if self.failed else ""
        text = (
            f"{self.label} {self.done}/{self.total}{failed} {fraction:4.0%} {_format_bytes(rate)}/s "
            f"{_format_seconds(elapsed)} eta {_format_seconds(eta)}"
        )
        bar_width = max(10, min(30, columns - len(text) - 4))
        filled = int(round(bar_width * fraction))
        line = f"[{'#' * filled}{'.' * (bar_width - filled)}] {text} {self._name}"
        self.stream.write("\r\x1b[K" + line[: max(1, columns - 1)])
        self.stream.flush()
        self._drawn = True
