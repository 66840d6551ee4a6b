"""Run a .kmq decoder against the conformance vectors (spec/vectors/) and print a pass/fail table.

    python tools/conformance.py                                   # kmcodec's CLI: python -m kmcodec decode {in} {out}
    python tools/conformance.py --decoder "./mydec {in} {out}" --output-format raw
    python tools/conformance.py --python                          # kmcodec's API in-process, error kinds must match

A decoder command gets a vector path for {in} and an output path for {out}. A
valid vector (ok-…) passes when the command exits 0 and the output's pixels hash
to the manifest: with --output-format png (default) the output is any image
Pillow reads (compared as RGB or RGBA, as the file declares), with raw it is the
decoded bytes of spec section 7 step 9 (channels bytes per pixel, row-major).
A corrupt vector (bad-…) passes when the command exits non-zero (not by a signal
or timeout) and leaves no file behind. Only --python can check the error kind.
Exit code 0 when everything passes, 1 on any failure, 2 on a usage error or a decoder that cannot start.
"""

from __future__ import annotations

import argparse
import contextlib
import fnmatch
import hashlib
import io
import json
import os
import shlex
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence, TextIO

ROOT = Path(__file__).resolve().parent.parent
VECTORS_DIR = ROOT / "spec" / "vectors"
DEFAULT_DECODER = f"{shlex.quote(sys.executable)} -m kmcodec decode {{in}} {{out}}"
DEFAULT_TIMEOUT = 60.0


class DecoderUnavailable(Exception):
    """The decoder command cannot be started at all (not found, not executable)."""


@dataclass(frozen=True)
class Outcome:
    """The result of one vector: what the manifest expects, what the decoder did, and whether that passes."""

    name: str
    expected: str
    got: str
    passed: bool


def load_manifest(vectors_dir: Path) -> dict[str, dict]:
    """The manifest: file name -> {description, pixels_sha256/width/height/channels or error}."""
    return json.loads((vectors_dir / "manifest.json").read_text())


def expected_text(entry: Mapping[str, object]) -> str:
    """A short text for the table's 'expected' column."""
    if "error" in entry:
        return f"error {entry['error']}"
    return f"pixels {entry['width']}x{entry['height']}x{entry['channels']}"


def pixels_match(pixels: bytes, entry: Mapping[str, object]) -> bool:
    """True if decoded pixel bytes hash to the manifest's SHA-256."""
    return hashlib.sha256(pixels).hexdigest() == entry["pixels_sha256"]


def output_pixels(path: Path, output_format: str, entry: Mapping[str, object]) -> tuple[bytes | None, str]:
    """Read a decoder's output as section-7 pixel bytes; return (pixels, problem) with pixels None on a problem."""
    if output_format == "raw":
        return path.read_bytes(), ""
    from PIL import Image

    try:
        with Image.open(path) as image:
            size = image.size
            mode = "RGBA" if entry["channels"] == 4 else "RGB"
            pixels = image.convert(mode).tobytes()
    except Exception as exc:  # whatever the decoder wrote, an unreadable output is a failure, not a crash
        return None, f"unreadable output ({type(exc).__name__}: {exc})"
    if size != (entry["width"], entry["height"]):
        return None, f"output is {size[0]}x{size[1]}"
    return pixels, ""


def judge_output(returncode: int | None, stderr: str, workdir: Path, out: Path, entry: Mapping, output_format: str) -> tuple[str, bool]:
    """Judge one decoder run from its exit status and what it left in its (otherwise empty) directory."""
    leftovers = sorted(p.name for p in workdir.iterdir())
    if returncode is None:
        return "timeout", False
    if returncode < 0:
        return f"killed by signal {-returncode}", False
    if "error" in entry:
        if returncode == 0:
            return "exit 0 (accepted a corrupt file)", False
        if leftovers:
            return f"exit {returncode} but left {', '.join(leftovers)}", False
        return f"exit {returncode}", True
    if returncode != 0:
        reason = stderr.strip().splitlines()[-1] if stderr.strip() else ""
        return f"exit {returncode}" + (f": {reason[:70]}" if reason else ""), False
    if not out.exists():
        return "exit 0, no output file", False
    pixels, problem = output_pixels(out, output_format, entry)
    if pixels is None:
        return problem, False
    if not pixels_match(pixels, entry):
        return f"pixels differ ({len(pixels)} bytes)", False
    return "pixels match", True


def command_runner(template: str, *, shell: bool = False, timeout: float = DEFAULT_TIMEOUT) -> Callable[[Path, Path], tuple[int | None, str]]:
    """Run a decoder command with {in} and {out} replaced by the paths; return (exit code or None on timeout, stderr)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))

    def run(source: Path, out: Path) -> tuple[int | None, str]:
        if shell:
            argv: str | list[str] = template.replace("{in}", shlex.quote(str(source))).replace("{out}", shlex.quote(str(out)))
        else:
            argv = [part.replace("{in}", str(source)).replace("{out}", str(out)) for part in shlex.split(template)]
        try:
            done = subprocess.run(argv, shell=shell, env=env, capture_output=True, text=True, errors="replace", timeout=timeout)
        except subprocess.TimeoutExpired:
            return None, ""
        except OSError as exc:  # the command itself cannot run: no point in trying the other vectors
            raise DecoderUnavailable(f"cannot run {template!r}: {exc.strerror or exc}") from None
        return done.returncode, done.stderr

    return run


def _import_from_checkout() -> None:
    """Make this checkout's kmcodec importable (it is run from the source tree, not installed)."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))


def in_process_cli_runner() -> Callable[[Path, Path], tuple[int | None, str]]:
    """kmcodec's CLI (`kmcodec decode IN OUT`) called in this process: the same code path, without a Python start-up per file."""
    _import_from_checkout()
    from kmcodec.cli import main as cli_main

    def run(source: Path, out: Path) -> tuple[int | None, str]:
        stderr, stdout = io.StringIO(), io.StringIO()
        with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(stdout):
            try:
                code = cli_main(["decode", "--quiet", str(source), str(out)])
            except SystemExit as exc:  # argparse
                code = exc.code if isinstance(exc.code, int) else 1
        return code, stderr.getvalue()

    return run


def run_decoder_suite(
    runner: Callable[[Path, Path], tuple[int | None, str]],
    vectors_dir: Path,
    manifest: Mapping[str, Mapping],
    output_format: str = "png",
) -> list[Outcome]:
    """Run a decoder over the vectors, each in a fresh empty directory."""
    outcomes = []
    with tempfile.TemporaryDirectory(prefix="kmq-conformance-") as scratch:
        for index, (name, entry) in enumerate(manifest.items()):
            workdir = Path(scratch) / f"{index:04d}"
            workdir.mkdir()
            out = workdir / f"{Path(name).stem}.{output_format}"
            returncode, stderr = runner(vectors_dir / name, out)
            got, passed = judge_output(returncode, stderr, workdir, out, entry, output_format)
            outcomes.append(Outcome(name, expected_text(entry), got, passed))
    return outcomes


def run_python_suite(vectors_dir: Path, manifest: Mapping[str, Mapping]) -> list[Outcome]:
    """kmcodec's API in-process: valid vectors must decode to the manifest's pixels, corrupt ones must raise
    the KMQError subclass of exactly the manifest's kind."""
    _import_from_checkout()
    import kmcodec

    outcomes = []
    for name, entry in manifest.items():
        data = (vectors_dir / name).read_bytes()
        expected = expected_text(entry)
        try:
            image = kmcodec.decode(data)
        except kmcodec.KMQError as exc:
            got = f"error {exc.kind}"
            passed = entry.get("error") == exc.kind
            outcomes.append(Outcome(name, expected, got if passed else f"{got}: {str(exc)[:60]}", passed))
            continue
        except Exception as exc:  # anything but a KMQError is a bug in the decoder
            outcomes.append(Outcome(name, expected, f"{type(exc).__name__}: {str(exc)[:60]}", False))
            continue
        if "error" in entry:
            outcomes.append(Outcome(name, expected, "decoded (accepted a corrupt file)", False))
            continue
        geometry = (image.width, image.height, image.channels)
        if geometry != (entry["width"], entry["height"], entry["channels"]):
            outcomes.append(Outcome(name, expected, "pixels {}x{}x{}".format(*geometry), False))
            continue
        passed = pixels_match(image.to_array().tobytes(), entry)
        outcomes.append(Outcome(name, expected, "pixels match" if passed else "pixels differ", passed))
    return outcomes


def summary_line(outcomes: Sequence[Outcome]) -> str:
    """'N passed, N failed'."""
    passed = sum(o.passed for o in outcomes)
    return f"{passed} passed, {len(outcomes) - passed} failed"


def print_table(outcomes: Sequence[Outcome], stream: TextIO, *, failures_only: bool = False) -> None:
    """The pass/fail table (name, expected, got, PASS/FAIL) and the summary line."""
    shown = [o for o in outcomes if not (failures_only and o.passed)]
    name_width = max([len("vector")] + [len(o.name) for o in shown])
    expected_width = max([len("expected")] + [len(o.expected) for o in shown])
    got_width = max([len("got")] + [len(o.got) for o in shown])
    print(f"{'vector':<{name_width}}  {'expected':<{expected_width}}  {'got':<{got_width}}  result", file=stream)
    for o in shown:
        verdict = "PASS" if o.passed else "FAIL"
        print(f"{o.name:<{name_width}}  {o.expected:<{expected_width}}  {o.got:<{got_width}}  {verdict}", file=stream)
    print(summary_line(outcomes), file=stream)


def select(manifest: Mapping[str, Mapping], patterns: Sequence[str]) -> dict[str, Mapping]:
    """The manifest entries whose names match any of the glob patterns (all when there are none)."""
    return {n: e for n, e in manifest.items() if not patterns or any(fnmatch.fnmatch(n, p) for p in patterns)}


SIGNATURE = b"\x89KMQ\r\n\x1a\n"


def vector_coding(path: Path) -> int | None:
    """The coding byte of a vector whose signature and version are intact, else None (it tests the container)."""
    head = path.read_bytes()[:11]
    if len(head) < 11 or head[:8] != SIGNATURE or head[8] != 1:
        return None
    return head[10]


def select_codings(manifest: Mapping[str, Mapping], vectors: Path, codings: Sequence[int]) -> dict[str, Mapping]:
    """Drop the vectors of the codings a decoder does not implement (those it must reject as unknown stay:
    a coding byte outside every defined coding is still in the suite)."""
    if not codings:
        return dict(manifest)
    kept = {}
    for name, entry in manifest.items():
        coding = vector_coding(vectors / name)
        if coding is None or coding in codings or coding not in DEFINED_CODINGS:
            kept[name] = entry
    return kept


#: The codings spec/kmq.md defines; a vector with any other coding byte tests rejection of unknown codings.
DEFINED_CODINGS = (0, 1, 2, 3, 4, 5, 6, 7)


def main(argv: Sequence[str] | None = None, stream: TextIO = sys.stdout) -> int:
    """Parse arguments, run the chosen decoder over the vectors, print the table; 0 if all pass, else 1."""
    parser = argparse.ArgumentParser(description="Run a .kmq decoder against the conformance vectors.")
    how = parser.add_mutually_exclusive_group()
    how.add_argument("--decoder", metavar="CMD", help='decoder command with {in} and {out}, e.g. "./kmqdec {in} {out}"')
    how.add_argument("--python", action="store_true", help="test kmcodec's Python API in-process (error kinds must match)")
    how.add_argument("--in-process", action="store_true", help="run kmcodec's CLI decode in this process (fast)")
    parser.add_argument("--output-format", choices=("png", "raw"), default="png", help="what the decoder writes to {out}")
    parser.add_argument("--shell", action="store_true", help="run the decoder command through the shell")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, help="seconds per vector (default 60)")
    parser.add_argument("--vectors", type=Path, default=VECTORS_DIR, help="vector directory (default spec/vectors)")
    parser.add_argument("--select", action="append", default=[], metavar="GLOB", help="only vectors matching (repeatable)")
    parser.add_argument("--failures-only", action="store_true", help="list only the failing vectors")
    parser.add_argument(
        "--codings", type=int, nargs="+", default=[], metavar="ID",
        help="a decoder that implements only these codings (e.g. --codings 0) skips the other codings' vectors",
    )
    args = parser.parse_args(argv)
    if (args.python or args.in_process) and args.output_format != "png":
        parser.error("--output-format applies to --decoder only")
    manifest = select_codings(select(load_manifest(args.vectors), args.select), args.vectors, args.codings)
    if not manifest:
        parser.error("no vector matches --select")
    if args.python:
        outcomes = run_python_suite(args.vectors, manifest)
    else:
        if args.in_process:
            runner = in_process_cli_runner()
        else:
            runner = command_runner(args.decoder or DEFAULT_DECODER, shell=args.shell, timeout=args.timeout)
        try:
            outcomes = run_decoder_suite(runner, args.vectors, manifest, args.output_format)
        except DecoderUnavailable as exc:
            print(f"conformance: error: {exc}", file=sys.stderr)
            return 2
    print_table(outcomes, stream, failures_only=args.failures_only)
    return 0 if all(o.passed for o in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
