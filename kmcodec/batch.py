"""Batch encoding and decoding: plan input -> output pairs, run them on local processes or a Dask
cluster, and collect one result per file, so that a bad file is reported without stopping the rest.

Every task is a small picklable value and `run_task` a top-level function, so the same work runs
in this process, in a process pool, or on remote Dask workers. Paths are made absolute when the
batch is planned: workers must see the same paths (a shared file system) and run the same kmcodec.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
import signal
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, Callable, Iterator, Sequence

from . import __version__, api
from .atomic import OutputExistsError, atomic_output
from .autok import DEFAULT_MAX_K, quantize_and_encode
from .errors import BatchError, KMQError
from .imageio import read_pixels
from .names import DEFAULT_MAX_PIXELS
from .parallel import Terminated
from .picture import picture_format, save_picture
from .quantizer import DEFAULT_ENGINE

DASK_HINT = "--scheduler needs Dask: pip install 'kmcodec[dask]' (dask and distributed)"


@dataclass(frozen=True)
class EncodeOptions:
    """How every file of an encode batch is encoded: a fixed k, or a PSNR or size target for auto-k."""

    k: int | None = None
    quality: float | None = None
    max_bytes: int | None = None
    max_k: int = DEFAULT_MAX_K
    coding: str = api.DEFAULT_CODING
    seed: int = 0
    engine: str = DEFAULT_ENGINE
    force: bool = False
    #: refuse input images of more pixels (None: Pillow's decompression-bomb limit)
    max_pixels: int | None = None
    #: further keyword arguments of the quantizer (colour space, dithering, ...), as (name, value) pairs
    quantize_options: tuple[tuple[str, Any], ...] = ()


@dataclass(frozen=True)
class DecodeOptions:
    """How every file of a decode batch is written: the output format (an extension Pillow writes)."""

    image_format: str = "png"
    max_pixels: int = DEFAULT_MAX_PIXELS
    force: bool = False


@dataclass(frozen=True)
class Task:
    """One file to process: absolute source and target paths, the names to show, and the options."""

    source: Path
    target: Path
    source_name: str
    target_name: str
    options: EncodeOptions | DecodeOptions


@dataclass(frozen=True)
class FileResult:
    """What happened to one file: ok with sizes and a one-line description, or the error message."""

    source_name: str
    target_name: str
    ok: bool
    bytes_in: int = 0
    bytes_out: int = 0
    seconds: float = 0.0
    k: int | None = None
    detail: str = ""
    error: str = ""


@dataclass(frozen=True)
class Summary:
    """Totals over a batch: files, failures, bytes in and out of the files that succeeded, wall time."""

    files: int
    failed: int
    bytes_in: int
    bytes_out: int
    seconds: float
    chosen_k: tuple[int, ...] = field(default=())

    @property
    def ratio(self) -> float:
        """Output bytes per input byte (0 when nothing succeeded)."""
        return self.bytes_out / self.bytes_in if self.bytes_in else 0.0

    def describe(self, verb: str, workers: str) -> str:
        """One line for people, e.g. 'encoded 9 of 10 files (1 failed): ...'."""
        done = self.files - self.failed
        failed = f" ({self.failed} failed)" if self.failed else ""
        ratio = f" = {self.ratio:.3f}x ({1 / self.ratio:.1f}:1)" if self.ratio else ""
        line = (
            f"{verb} {done} of {self.files} files{failed}: {self.bytes_in:,} bytes in, {self.bytes_out:,} bytes out"
            f"{ratio}, {self.seconds:.2f} s on {workers}"
        )
        if self.chosen_k:
            ks = sorted(self.chosen_k)
            line += f"; auto k from {ks[0]} to {ks[-1]} (median {ks[len(ks) // 2]})"
        return line


def summarize(results: Sequence[FileResult], seconds: float) -> Summary:
    """Add up a batch's results."""
    good = [r for r in results if r.ok]
    return Summary(
        files=len(results),
        failed=len(results) - len(good),
        bytes_in=sum(r.bytes_in for r in good),
        bytes_out=sum(r.bytes_out for r in good),
        seconds=seconds,
        chosen_k=tuple(r.k for r in good if r.k is not None),
    )


# ---------------------------------------------------------------- planning


def encodable(path: Path) -> bool:
    """Whether a file found in a directory looks like an image Pillow can open (and is not a .kmq)."""
    from PIL import Image

    image_format = Image.registered_extensions().get(path.suffix.lower())
    return image_format is not None and image_format != "KMQ" and image_format in Image.OPEN


def decodable(path: Path) -> bool:
    """Whether a file found in a directory is a .kmq file."""
    return path.suffix.lower() == ".kmq"


def plan(
    inputs: Sequence[Path],
    out_dir: Path,
    *,
    suffix: str,
    options: EncodeOptions | DecodeOptions,
    recursive: bool = False,
    wanted: Callable[[Path], bool] = encodable,
) -> tuple[list[Task], list[FileResult]]:
    """Pair every input with its output in out_dir; return the tasks and the inputs refused up front.

    A file named on the command line is always tried (so a bad one is reported); a directory
    needs `recursive` and contributes the files `wanted` accepts, skipping hidden ones and
    out_dir itself, with their paths relative to it kept under out_dir. Inputs that would write
    the same output are all refused (none is written), whatever their order.
    """
    out_abs = Path(os.path.abspath(out_dir))
    planned: list[Task | FileResult] = []  # in the order of the inputs: a task, or an input refused up front
    seen_sources: set[Path] = set()

    def add(source: Path, relative: Path) -> None:
        source_abs = Path(os.path.abspath(source))
        if source_abs in seen_sources:
            return
        seen_sources.add(source_abs)
        target_rel = relative.with_suffix(suffix)
        planned.append(Task(source_abs, out_abs / target_rel, str(source), str(out_dir / target_rel), options))

    for item in inputs:
        if item.is_dir():
            if not recursive:
                planned.append(FileResult(str(item), "", False, error=f"{item}: is a directory (use --recursive)"))
                continue
            for path in _walk(item, out_abs):
                if wanted(path):
                    add(path, path.relative_to(item))
        else:
            add(item, Path(item.name))
    return _refuse_shared_outputs(planned)


def _refuse_shared_outputs(planned: Sequence[Task | FileResult]) -> tuple[list[Task], list[FileResult]]:
    """Split the plan into tasks and refusals, refusing every input whose output another input would also
    write: all of them, so that which one is written never depends on the order of the inputs."""
    writers: dict[Path, list[str]] = {}
    for entry in planned:
        if isinstance(entry, Task):
            writers.setdefault(entry.target, []).append(entry.source_name)
    tasks: list[Task] = []
    refused: list[FileResult] = []
    for entry in planned:
        if isinstance(entry, FileResult):
            refused.append(entry)
            continue
        sharing = writers[entry.target]
        if len(sharing) == 1:
            tasks.append(entry)
            continue
        others = [name for name in sharing if name != entry.source_name]
        listed = others[0] if len(others) == 1 else f"{', '.join(others[:-1])} and {others[-1]}"
        nobody = "neither is written" if len(sharing) == 2 else f"none of the {len(sharing)} is written"
        refused.append(
            FileResult(
                entry.source_name,
                entry.target_name,
                False,
                error=f"{entry.source_name}: output {entry.target_name} is also the output of {listed}; {nobody}",
            )
        )
    return tasks, refused


def _walk(directory: Path, skip: Path) -> Iterator[Path]:
    """Files under directory in sorted order, without hidden entries or the skip directory."""
    for root, dirs, files in os.walk(directory):
        root_path = Path(root)
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and Path(os.path.abspath(root_path / d)) != skip)
        for name in sorted(files):
            if not name.startswith("."):
                yield root_path / name


# ---------------------------------------------------------------- the work on one file


def run_task(task: Task) -> FileResult:
    """Encode or decode one file and return its result; errors become a failed result, never an exception."""
    started = time.perf_counter()
    try:
        if isinstance(task.options, EncodeOptions):
            bytes_out, k, detail = _encode_one(task, task.options)
        else:
            bytes_out, k, detail = _decode_one(task, task.options)
        bytes_in = task.source.stat().st_size
    except MemoryError:
        return _failure(task, f"{task.source_name}: out of memory")
    except (KMQError, OSError) as exc:
        return _failure(task, _message(task, exc))
    except Exception as exc:  # a bug must not stop the other files; say what it was
        return _failure(task, f"{task.source_name}: internal error: {type(exc).__name__}: {exc}")
    elapsed = time.perf_counter() - started
    return FileResult(
        task.source_name, task.target_name, True, bytes_in, bytes_out, elapsed, k, f"{detail}, {elapsed:.2f} s"
    )


def _failure(task: Task, message: str) -> FileResult:
    return FileResult(task.source_name, task.target_name, False, error=message)


def _message(task: Task, exc: BaseException) -> str:
    """The error as one line that names the file the user gave (not the absolute path a worker saw)."""
    if isinstance(exc, OSError) and not isinstance(exc, OutputExistsError) and exc.strerror:
        where = exc.filename if exc.filename is not None else task.source
        text = f"{where}: {exc.strerror}"
    else:
        text = str(exc)
    text = text.replace(str(task.target), task.target_name).replace(str(task.source), task.source_name)
    return text if text.startswith((task.source_name, task.target_name)) else f"{task.source_name}: {text}"


def _check_target(task: Task, force: bool) -> None:
    if task.target.exists() and not force:
        raise OutputExistsError(f"{task.target_name}: output exists (use --force to replace it)")
    task.target.parent.mkdir(parents=True, exist_ok=True)


def _encode_one(task: Task, options: EncodeOptions) -> tuple[int, int | None, str]:
    _check_target(task, options.force)
    pixels, histogram = read_pixels(task.source, name=task.source_name, max_pixels=options.max_pixels)
    image, data, choice = quantize_and_encode(
        pixels, k=options.k, quality=options.quality, max_bytes=options.max_bytes, max_k=options.max_k,
        coding=options.coding, seed=options.seed, engine=options.engine,
        quantize_options=dict(options.quantize_options), histogram=histogram,
    )
    chosen_k = choice.k if choice is not None else None
    how = f" ({choice.describe()})" if choice is not None else ""
    with atomic_output(task.target, overwrite=options.force) as handle:
        handle.write(data)
    detail = (
        f"{task.source_name} -> {task.target_name}: {image.width}x{image.height} {image.mode}, k={image.k}, "
        f"{image.label_bits} bits/pixel, {len(data):,} bytes{how}"
    )
    return len(data), chosen_k, detail


def _decode_one(task: Task, options: DecodeOptions) -> tuple[int, None, str]:
    _check_target(task, options.force)
    image = api.read(task.source, max_pixels=options.max_pixels)
    size = save_picture(image, task.target, picture_format(options.image_format), overwrite=options.force)
    detail = f"{task.source_name} -> {task.target_name}: {image.width}x{image.height} {image.mode}, k={image.k}"
    return size, None, detail


# ---------------------------------------------------------------- running many


def run_tasks(
    tasks: Sequence[Task],
    on_result: Callable[[FileResult], None],
    *,
    jobs: int = 1,
    scheduler: str | None = None,
) -> list[FileResult]:
    """Run every task (here, on `jobs` processes, or on a Dask scheduler) and call on_result as each ends.

    Interrupted (Ctrl-C, or SIGTERM as parallel.Terminated), it stops its worker processes before the
    exception goes on, so that no worker outlives the batch or writes a file after it.
    """
    if scheduler is not None:
        return _run_on_dask(tasks, on_result, scheduler=scheduler, workers=jobs)
    results: list[FileResult] = []
    if jobs <= 1 or len(tasks) <= 1:
        for task in tasks:
            results.append(run_task(task))
            on_result(results[-1])
        return results
    context = _process_context()
    pool = None
    try:
        with _starting_helpers():
            pool = concurrent.futures.ProcessPoolExecutor(
                max_workers=min(jobs, len(tasks)), mp_context=context, initializer=_start_worker
            )
            futures = {pool.submit(_run_in_worker, task): task for task in tasks}  # starts the processes
        for future in concurrent.futures.as_completed(futures):
            results.append(_collect(future, futures[future]))
            on_result(results[-1])
        pool.shutdown()
    except BaseException:  # interrupted: stop the workers now rather than let them finish their queue
        if pool is not None:
            with _signals_held():  # a second Ctrl-C must not leave the workers half stopped
                _stop_pool(pool)
        raise
    return results


#: The signals a batch's helper processes leave to the main process. The terminal sends Ctrl-C's SIGINT
#: to its whole process group, and `timeout` or a service manager may send SIGTERM to all of it: the
#: forkserver and the workers would each print a traceback or die in the middle of a file. Only the main
#: process reacts, and it stops the helpers itself (_stop_pool, or closing the Dask cluster).
HELD_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM") if hasattr(signal, name))

#: Seconds the workers of an interrupted batch get to unwind after SIGTERM (a file being written is removed)
#: before they are killed; a worker in a long C loop of the quantizer holds no temporary file.
STOP_GRACE = 5.0


@contextmanager
def _signals_held() -> Iterator[None]:
    """Block SIGINT and SIGTERM in this thread for the duration; one that arrives meanwhile is delivered after."""
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, HELD_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


@contextmanager
def _starting_helpers() -> Iterator[None]:
    """Start helper processes (and threads) inside: they inherit SIGINT and SIGTERM blocked, so only this
    process hears the terminal's Ctrl-C. A signal that arrives meanwhile reaches this process at the end.

    The resource tracker is started first: starting it unblocks both signals in the thread that does.
    """
    if hasattr(signal, "pthread_sigmask"):
        from multiprocessing import resource_tracker

        resource_tracker.ensure_running()
    with _signals_held():
        yield


def _start_worker() -> None:
    """Initializer of a pool's worker process: one thread for BLAS/OpenMP, Ctrl-C left to the main process,
    and SIGTERM (the main process stopping the batch) ending the worker without leaving a temporary file."""
    limit_threads()
    if hasattr(signal, "pthread_sigmask"):
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, _stop_worker)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, HELD_SIGNALS)  # blocked since the process started


def _stop_worker(signum: int, frame: FrameType | None) -> None:
    """SIGTERM in a worker: a file in hand is unwound by Terminated (the atomic writer removes its temporary
    file, then _run_in_worker ends the process); between files the worker ends at once."""
    while frame is not None:
        if frame.f_code is _run_in_worker.__code__:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM must not break off the clean-up
            raise Terminated
        frame = frame.f_back
    os._exit(128 + signum)


def _run_in_worker(task: Task) -> FileResult:
    """run_task in a pool's worker process; ended by SIGTERM, the process exits once the task has unwound."""
    try:
        return run_task(task)
    except Terminated:
        os._exit(128 + signal.SIGTERM)


def _stop_pool(pool: concurrent.futures.ProcessPoolExecutor) -> None:
    """End this pool's worker processes (SIGTERM; SIGKILL after STOP_GRACE seconds), cancel what has not
    started, and release the pool's queues (else the resource tracker reports leaked semaphores)."""
    processes = list((getattr(pool, "_processes", None) or {}).values())  # no public way before 3.14
    for process in processes:
        if process.is_alive():
            process.terminate()
    deadline = time.monotonic() + STOP_GRACE
    for process in processes:
        process.join(timeout=max(0.0, deadline - time.monotonic()))
    for process in processes:
        if process.is_alive():
            process.kill()
            process.join()
    pool.shutdown(wait=True, cancel_futures=True)  # joins the pool's thread, which drops the queues


def _process_context() -> multiprocessing.context.BaseContext:
    """Fresh worker processes that do not inherit this process's threads (fork after OpenMP can hang):
    forkserver where available, with kmcodec imported once in the server instead of in every worker."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["kmcodec.batch"])
    return context


def _collect(future, task: Task) -> FileResult:
    """A finished future's result, or a failed result if its worker died (killed, out of memory)."""
    try:
        return future.result()
    except Exception as exc:
        first_line = (str(exc).strip().splitlines() or [""])[0]
        return _failure(task, f"{task.source_name}: worker failed: {type(exc).__name__}: {first_line}")


def limit_threads() -> None:
    """In a worker process: one thread per process for BLAS/OpenMP, since the processes already fill the cores."""
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        os.environ[name] = "1"
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)
    except ImportError:  # threadpoolctl comes with scikit-learn; without it the variables above still apply
        pass


def worker_version() -> str:
    """The kmcodec version a worker runs (checked against the client's before a Dask batch)."""
    return __version__


@contextmanager
def dask_client(scheduler: str, workers: int) -> Iterator[object]:
    """A Dask client: on a new local cluster of `workers` processes (loopback only) or on a running scheduler."""
    try:
        import logging

        from distributed import Client, LocalCluster
    except ImportError:
        raise BatchError(DASK_HINT) from None
    if scheduler == "local":
        cluster = client = None
        try:
            with _starting_helpers():  # the cluster's worker processes leave Ctrl-C to this process
                cluster = LocalCluster(
                    n_workers=max(1, workers),
                    threads_per_worker=1,
                    processes=True,
                    host="127.0.0.1",
                    dashboard_address=":0",  # None still serves HTTP on 8787, and a second batch warns
                    # every file's outcome is reported from its result; Dask's own ERROR lines (a worker's
                    # heartbeat to a scheduler closing under an interrupted batch) would only add noise
                    silence_logs=logging.CRITICAL,
                )
                client = Client(cluster)
            yield client
        finally:
            with _signals_held():  # interrupted or not, the workers are stopped and joined before we go on
                if client is not None:
                    client.close()
                if cluster is not None:
                    cluster.close()
        return
    try:
        client = Client(scheduler, timeout="10s")
    except (OSError, TimeoutError) as exc:
        raise BatchError(f"cannot reach the Dask scheduler {scheduler}: {exc}") from None
    try:
        yield client
    finally:
        client.close()


def _run_on_dask(
    tasks: Sequence[Task], on_result: Callable[[FileResult], None], *, scheduler: str, workers: int
) -> list[FileResult]:
    with dask_client(scheduler, workers) as client:
        from distributed import as_completed

        # Interrupted just as it starts a call, distributed's sync() logs a NameError traceback: hold Ctrl-C
        # through the checks on a local cluster (up already, so they take moments) and while each result is
        # fetched (the future is done by then).
        with _signals_held() if scheduler == "local" else nullcontext():
            futures = _start_on_dask(client, tasks, scheduler)
        results: list[FileResult] = []
        for future in as_completed(list(futures)):
            with _signals_held():
                result = _collect(future, futures[future])
            results.append(result)
            on_result(result)
        return results


def _start_on_dask(client: Any, tasks: Sequence[Task], scheduler: str) -> dict[Any, Task]:
    """Check that the scheduler and the workers run this kmcodec, then submit every task."""
    try:
        client.wait_for_workers(1, timeout=60)
        versions = client.run(worker_version)
    except Exception as exc:
        raise BatchError(
            f"Dask workers at {scheduler} cannot run kmcodec ({type(exc).__name__}: {exc}); "
            f"install kmcodec {__version__} on every worker"
        ) from None
    wrong = {worker: version for worker, version in versions.items() if version != __version__}
    if wrong:
        raise BatchError(f"Dask workers run another kmcodec version than this client ({__version__}): {wrong}")
    try:  # recent Dask schedulers unpickle the tasks too, so they need kmcodec as well
        scheduler_version = client.run_on_scheduler(worker_version)
    except Exception as exc:
        first_line = (str(exc).strip().splitlines() or [""])[0]
        raise BatchError(
            f"the Dask scheduler at {scheduler} cannot run kmcodec ({type(exc).__name__}: {first_line}); "
            f"install kmcodec {__version__} where the scheduler runs too"
        ) from None
    if scheduler_version != __version__:
        raise BatchError(f"the Dask scheduler runs kmcodec {scheduler_version}, this client {__version__}")
    return {client.submit(run_task, task, pure=False): task for task in tasks}


__all__ = [
    "EncodeOptions",
    "DecodeOptions",
    "Task",
    "FileResult",
    "Summary",
    "plan",
    "run_task",
    "run_tasks",
    "summarize",
    "encodable",
    "decodable",
]
