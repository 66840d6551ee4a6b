"""Run the real kmcodec CLI with its output writes slowed down, so a test can SIGKILL it mid-write.

Usage: python tests/throttled_cli.py CHUNK_BYTES DELAY_SECONDS kmcodec-args...

Every write to an atomic output goes out in CHUNK_BYTES pieces with DELAY_SECONDS
between them; "writing" is printed to stdout (flushed) when the first byte goes
out, so the test knows the write has begun. Nothing else is changed.
"""

from __future__ import annotations

import contextlib
import io
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import kmcodec.atomic  # noqa: E402
from kmcodec import cli  # noqa: E402


class ThrottledFile:
    """Wraps the temporary output file: writes in small chunks with a pause between them."""

    def __init__(self, handle, chunk: int, delay: float) -> None:
        self._handle = handle
        self._chunk = chunk
        self._delay = delay
        self._announced = False

    def write(self, data) -> int:
        view = memoryview(data).cast("B")
        if not self._announced:
            print("writing", flush=True)
            self._announced = True
        for start in range(0, len(view), self._chunk):
            self._handle.write(view[start : start + self._chunk])
            self._handle.flush()
            time.sleep(self._delay)
        return len(view)

    def fileno(self) -> int:  # Pillow would write straight to the descriptor and bypass the throttle
        raise io.UnsupportedOperation("throttled file has no descriptor for Pillow")

    def __getattr__(self, name):
        return getattr(self._handle, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self._handle.__exit__(*exc)


def main() -> int:
    chunk, delay, *args = sys.argv[1:]
    real_output = kmcodec.atomic.atomic_output

    @contextlib.contextmanager
    def throttled_output(*output_args, **output_kwargs):
        with real_output(*output_args, **output_kwargs) as handle:
            yield ThrottledFile(handle, int(chunk), float(delay))

    # Modules imported later bind the throttled writer when they import it; rebind those already imported.
    kmcodec.atomic.atomic_output = throttled_output
    for module in list(sys.modules.values()):
        if getattr(module, "__name__", "").startswith("kmcodec.") and getattr(module, "atomic_output", None) is real_output:
            module.atomic_output = throttled_output
    return cli.main(args)


if __name__ == "__main__":
    sys.exit(main())
