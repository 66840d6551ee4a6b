"""Running independent jobs on the cores: threads that each take the next job not yet started.

The jobs are C loops that release the GIL (the context coder's bands, auto's candidate codings,
the quantizer's k-means starts), so threads run them in parallel. Terminated is SIGTERM as an
exception, so that a terminated command or batch worker unwinds as Ctrl-C makes it unwind.
"""

from __future__ import annotations

import os
import signal
import threading
from typing import Callable, Sequence, TypeVar

T = TypeVar("T")


class Terminated(BaseException):
    """SIGTERM, raised in the main thread by the handler the command line (or a batch worker) installs.

    A BaseException, as KeyboardInterrupt is, so that no `except Exception` swallows it: the code it passes
    through unwinds (temporary outputs are removed, worker processes stopped) and the command ends.
    """


def raise_terminated(signum: int, frame: object) -> None:
    """A signal handler that raises Terminated (install it for SIGTERM, in the main thread). Further SIGTERMs
    are ignored from then on: one arriving while the first unwinds would break off its clean-up (a temporary
    file left behind) for a command that is stopping anyway."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise Terminated


def available_cores() -> int:
    """How many cores this process may run on (its affinity mask where the OS has one): the default number of
    threads for the bands, auto's codings, the C loops and xz blocks, and of worker processes for batch work."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def run_in_threads(tasks: Sequence[Callable[[], T]], workers: int) -> list[T]:
    """Run the tasks on up to `workers` threads; return their results in order, or raise the first task's error.

    Each thread takes the next task not yet started, so a band that codes slowly does not leave the
    other threads idle while tasks wait in its queue.
    """
    results: list = [None] * len(tasks)
    errors: list[BaseException | None] = [None] * len(tasks)
    lock = threading.Lock()
    started = 0

    def claim() -> int:
        nonlocal started
        with lock:
            index, started = started, started + 1
        return index

    def work() -> None:
        while (index := claim()) < len(tasks):
            try:
                results[index] = tasks[index]()
            except BaseException as exc:  # re-raised below, in task order, on the calling thread
                errors[index] = exc

    workers = max(1, min(workers, len(tasks)))
    threads = [threading.Thread(target=work, daemon=True) for _ in range(1, workers)]
    for thread in threads:
        thread.start()
    work()
    for thread in threads:
        thread.join()
    for error in errors:
        if error is not None:
            raise error
    return results
