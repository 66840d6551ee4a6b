"""The kmcodec command line: a thin layer over kmcodec.api, batch, autok and report
(encode, decode, info, demo, compare).

Exit codes: 0 success, 1 a bad input or output (one line on stderr naming the
file and the problem), 2 a usage error, 130 interrupted (Ctrl-C), 143 terminated (SIGTERM).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import stat
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Callable, Iterator, NoReturn, Sequence

from . import __version__
from .atomic import OutputExistsError, atomic_output, is_special_file
from .errors import KMQError
from .names import (
    CODING_CHOICES,
    DEFAULT_CODING,
    DEFAULT_ENGINE,
    DEFAULT_MAX_K,
    DEFAULT_MAX_PIXELS,
    DEFAULT_SPEED,
    ENGINES,
    MAX_RDO_DB,
    MAX_SEED,
    SPACES,
)
from .parallel import Terminated, available_cores, raise_terminated

if TYPE_CHECKING:  # numpy itself is imported by the commands that need it (see below)
    import numpy as np

    from .container import Header
    from .image import KMQImage

# The codec (numpy) is imported inside each command, so that parsing arguments stays light and an
# encode can decode its input picture while numpy loads (prefetch.py).

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 128 + 2  # SIGINT, as a shell reports it
EXIT_TERMINATED = 128 + 15  # SIGTERM


class CommandError(Exception):
    """A failure the CLI reports as one line and exit code 1."""


def _ranged(convert: Callable[[str], float], what: str, low: float, high: float, describe: str) -> Callable[[str], float]:
    """An argparse type: `convert` the text and require low <= value <= high, else a usage error saying `describe`."""

    def parse(text: str) -> float:
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{what} must be {describe}, got {text!r}") from None
        if not low <= value <= high:
            shown = value if isinstance(value, int) else f"{value:g}"  # 10**23 as itself, not 1e+23
            raise argparse.ArgumentTypeError(f"{what} must be {describe}, got {shown}")
        return value

    return parse


_k_value = _ranged(int, "k", 1, 65536, "an integer 1 to 65536")
_positive_int = _ranged(int, "the value", 1, float("inf"), "a positive integer")
_seed_value = _ranged(int, "seed", 0, MAX_SEED, f"an integer 0 to {MAX_SEED}")
_psnr_value = _ranged(float, "PSNR", 1e-9, 199.999, "a number of dB between 0 and 200")
_speed_value = _ranged(int, "speed", 1, 10, "an integer 1 (best) to 10 (fastest)")
_strength = _ranged(float, "dither strength", 0.0, 1.0, "a number 0 to 1")
_rdo_budget = _ranged(float, "rdo", 0.0, MAX_RDO_DB, f"a number of dB, 0 to {MAX_RDO_DB:g}")


def _add_batch_options(command: argparse.ArgumentParser, what: str) -> None:
    """Options of the batch form (-d OUTDIR): recursion, processes, Dask."""
    batch = command.add_argument_group("batch (with -d OUTDIR)")
    batch.add_argument("-d", "--out-dir", type=Path, metavar="OUTDIR", help="batch mode: write outputs to OUTDIR")
    batch.add_argument("-r", "--recursive", action="store_true", help=f"take every {what} file under directory inputs")
    batch.add_argument("-j", "--jobs", type=_positive_int, default=None, help="worker processes (default: all cores)")
    batch.add_argument(
        "--scheduler", metavar="ADDR", help="run on Dask: tcp://HOST:PORT, or 'local' (pip install 'kmcodec[dask]')"
    )


def _split_paths(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Single-file form (IN OUT) unless -d OUTDIR is given; batch-only options need -d."""
    if args.out_dir is not None:
        return
    given = {
        "--recursive": args.recursive,
        "--jobs": args.jobs,
        "--scheduler": args.scheduler,
        "--format": getattr(args, "image_format", None),
    }
    batch_only = [flag for flag, value in given.items() if value]
    if batch_only:
        verb = "needs" if len(batch_only) == 1 else "need"
        parser.error(f"{args.command}: {', '.join(batch_only)} {verb} -d OUTDIR (batch mode)")
    if len(args.paths) != 2:
        parser.error(f"{args.command}: give IN OUT, or inputs with -d OUTDIR (got {len(args.paths)} paths)")
    args.input, args.output = args.paths


#: Stands in for the words after `--` while argparse parses (a NUL never comes from a command line).
_PATH_TOKEN = "\x00kmcodec-path-"


class _IntermixedParser(argparse.ArgumentParser):
    """A subcommand parser that takes options between its paths (`encode in.png -k 16 out.kmq`), as
    parse_intermixed_args does; plain argparse stops collecting positionals at the first option.

    Everything after the first `--` is a path, whatever it looks like (`encode -k 8 -- -in.png out.kmq`).
    argparse's intermixed mode has mishandled `--` (Python before 3.12.8 and 3.13.1 lost it in its options
    pass and read `-in.png` as options; later ones parse it themselves, through other internals), so no
    argparse ever sees those words: each is replaced by a stand-in that cannot look like an option, and put
    back once the paths are parsed. Abbreviated options are not taken (`--out` is not `--out-dir`).
    """

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)
        self._parsing = False  # set while parse_known_intermixed_args runs (older argparse calls back in)

    def parse_known_args(self, args=None, namespace=None):  # type: ignore[override]
        if self._parsing:
            return super().parse_known_args(args, namespace)
        words = list(sys.argv[1:] if args is None else args)
        split = words.index("--") if "--" in words else len(words)
        paths = {f"{_PATH_TOKEN}{index}": word for index, word in enumerate(words[split + 1 :])}
        self._parsing = True
        try:
            namespace, extras = self.parse_known_intermixed_args([*words[:split], *paths], namespace)
        finally:
            self._parsing = False
        for name, value in vars(namespace).items():
            setattr(namespace, name, _put_back(value, paths))
        return namespace, [paths.get(word, word) for word in extras]


def _put_back(value: object, paths: dict[str, str]) -> object:
    """A parsed value with the stand-ins for the words after `--` replaced by those words (as str or Path)."""
    if isinstance(value, list):
        return [_put_back(item, paths) for item in value]
    if isinstance(value, (str, Path)) and str(value) in paths:
        return type(value)(paths[str(value)])
    return value


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for all subcommands."""
    parser = argparse.ArgumentParser(
        prog="kmcodec", description="k-means palette images in ceil(log2 k) bits per pixel (.kmq).",
        allow_abbrev=False,
    )
    parser.add_argument("--version", action="version", version=f"kmcodec {__version__}")
    commands = parser.add_subparsers(
        dest="command", metavar="COMMAND", required=True, parser_class=_IntermixedParser
    )

    enc = commands.add_parser(
        "encode",
        help="quantize an image to k colours and write a .kmq file",
        usage="%(prog)s IN OUT (-k K | --quality PSNR | --max-bytes N) [options]\n"
        "       %(prog)s IN... -d OUTDIR (-k K | --quality PSNR | --max-bytes N) [-r] [-j N] [--scheduler S] [options]",
    )
    enc.add_argument("paths", type=Path, nargs="+", metavar="PATH", help="IN OUT, or with -d any number of inputs")
    choose = enc.add_mutually_exclusive_group(required=True)
    choose.add_argument("-k", "--colors", dest="k", type=_k_value, help="palette size, 1 to 65536")
    choose.add_argument("--quality", type=_psnr_value, metavar="PSNR", help="auto-k: smallest k reaching PSNR dB")
    choose.add_argument("--max-bytes", type=_positive_int, metavar="N", help="auto-k: largest k whose file fits")
    enc.add_argument(
        "--max-k", type=_k_value, default=None,
        help=f"with --quality or --max-bytes: largest k auto-k considers (default {DEFAULT_MAX_K})",
    )
    _add_batch_options(enc, "image")
    enc.add_argument("--seed", type=_seed_value, default=0, help="random seed; same input and seed give the same file")
    enc.add_argument(
        "--coding", choices=CODING_CHOICES, default=DEFAULT_CODING, help="label coding (default: auto, the smallest)"
    )
    enc.add_argument(
        "--engine", choices=ENGINES, default=DEFAULT_ENGINE,
        help="k-means engine: fast (default) or sklearn (scikit-learn KMeans, the slow textbook reference)",
    )
    enc.add_argument("--space", choices=SPACES, default="rgb", help="colour space to cluster in (oklab: perceptual)")
    enc.add_argument(
        "--dither", type=_strength, nargs="?", const=1.0, default=0.0, metavar="STRENGTH",
        help="Floyd-Steinberg dithering, strength 0-1 (1 if given alone or before a path; default off)",
    )
    enc.add_argument(
        "--rdo", type=_rdo_budget, default=0.0, metavar="DB",
        help="smaller file, same k: let pixels take a neighbour's colour where that costs little, "
        "giving up at most DB dB of PSNR (default 0: every pixel its nearest colour; not with --dither)",
    )
    enc.add_argument(
        "--speed", type=_speed_value, default=DEFAULT_SPEED, help=f"1 (best) to 10 (fastest), default {DEFAULT_SPEED}"
    )
    enc.add_argument(
        "--max-pixels",
        type=_positive_int,
        default=None,
        help="refuse larger input images (default: Pillow's decompression-bomb limit, "
        "about 89 MP); raise it for big trusted images",
    )
    enc.add_argument("-f", "--force", action="store_true", help="overwrite an existing output")
    enc.add_argument("-q", "--quiet", action="store_true", help="print nothing on success")

    dec = commands.add_parser(
        "decode",
        help="decode a .kmq file to any image format Pillow writes",
        usage="%(prog)s IN.kmq OUT.png [options]\n"
        "       %(prog)s IN.kmq... -d OUTDIR [--format png] [-r] [-j N] [--scheduler S] [options]",
    )
    dec.add_argument("paths", type=Path, nargs="+", metavar="PATH", help="IN.kmq OUT.png, or with -d many .kmq")
    dec.add_argument("--format", dest="image_format", metavar="EXT", help="with -d: output format (default png)")
    _add_batch_options(dec, ".kmq")
    dec.add_argument("--max-pixels", type=_positive_int, default=DEFAULT_MAX_PIXELS, help="refuse larger images")
    dec.add_argument("-f", "--force", action="store_true", help="overwrite an existing output")
    dec.add_argument("-q", "--quiet", action="store_true", help="print nothing on success")

    info = commands.add_parser("info", help="show a .kmq file's header, palette and storage figures")
    info.add_argument("input", type=Path, help="input .kmq file")
    info.add_argument("--source", type=Path, help="the original image, to compare sizes with")
    info.add_argument("--json", action="store_true", help="machine-readable output")
    info.add_argument("--max-pixels", type=_positive_int, default=DEFAULT_MAX_PIXELS, help="refuse larger images")

    demo = commands.add_parser("demo", help="encode scikit-learn's china.jpg sample and print the storage figures")
    demo.add_argument("-k", "--colors", dest="ks", type=_k_value, nargs="+", default=[2, 8, 16, 64, 256])
    demo.add_argument("--out", type=Path, help="also write the .kmq files and decoded PNGs to this directory")
    demo.add_argument("-f", "--force", action="store_true", help="with --out: overwrite files written before")

    compare = commands.add_parser(
        "compare", help="encode one image at several k and write a visual report (.html or .png)"
    )
    compare.add_argument("input", type=Path, help="input image")
    compare.add_argument("-k", "--colors", dest="ks", type=_k_value, nargs="+", default=[4, 8, 16, 64, 256])
    compare.add_argument("-o", "--output", type=Path, required=True, help="report file: .html (self-contained) or .png")
    compare.add_argument("--seed", type=_seed_value, default=0, help="random seed")
    compare.add_argument("--coding", choices=CODING_CHOICES, default=DEFAULT_CODING, help="label coding")
    compare.add_argument("--engine", choices=ENGINES, default=DEFAULT_ENGINE, help="k-means engine")
    compare.add_argument(
        "--rdo", type=_rdo_budget, default=0.0, metavar="DB",
        help="smooth every k's labels within DB dB of PSNR, as encode --rdo does (default 0)",
    )
    compare.add_argument("--preview", type=_positive_int, default=640, help="longest side of the pictures (pixels)")
    compare.add_argument("-f", "--force", action="store_true", help="overwrite an existing report")
    compare.add_argument("-q", "--quiet", action="store_true", help="print nothing on success")
    return parser


def _dither_alone(argv: Sequence[str]) -> list[str]:
    """`--dither` followed by something that is not a number is the flag alone (strength 1), so that
    `kmcodec encode --dither in.png out.kmq` works: argparse would take in.png for the optional strength.
    Words after `--` are paths and stay as they are (`--dither --` is the flag alone too: the subcommand
    parser hands argparse stand-ins for those paths, which it would take for the strength)."""
    words = list(argv)
    options = words.index("--") if "--" in words else len(words)
    for index, word in enumerate(words[:options]):
        if word == "--dither" and index + 1 < len(words):
            try:
                float(words[index + 1])
            except ValueError:
                words[index] = "--dither=1"
    return words


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI and return its exit code."""
    parser = build_parser()
    args = parser.parse_args(_dither_alone(sys.argv[1:] if argv is None else argv))
    if args.command in ("encode", "decode"):
        _split_paths(parser, args)
    if args.command == "encode":
        _check_encode_options(parser, args)
    if args.command == "decode" and args.out_dir is not None and args.image_format is not None:
        from .picture import picture_format

        try:
            picture_format(args.image_format)
        except KMQError as exc:  # an unknown --format is a usage error, found before any file is touched
            parser.error(f"decode: --format: {exc}")
    handlers = {"encode": cmd_encode, "decode": cmd_decode, "info": cmd_info, "demo": cmd_demo, "compare": cmd_compare}
    return _run_command(handlers[args.command], args)


def _check_encode_options(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Usage errors of encode options that do not go together; --max-k's default where auto-k uses it."""
    if args.dither and args.rdo:
        parser.error("encode: --rdo and --dither do not go together (rdo would smooth away the dithering's pattern)")
    if args.max_k is not None and args.k is not None:
        parser.error("encode: --max-k bounds auto-k (--quality or --max-bytes); with -k it would do nothing")
    if args.max_k is None:
        args.max_k = DEFAULT_MAX_K


@contextlib.contextmanager
def _sigterm_raises() -> Iterator[None]:
    """For the life of a command, SIGTERM raises Terminated in the main thread, as SIGINT raises
    KeyboardInterrupt: the command unwinds (temporary files removed, workers stopped) and says so in one
    line. The previous handler is restored after, for a main() called in-process."""
    if not hasattr(signal, "SIGTERM") or threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


def _run_command(handler: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """Run one subcommand; every failure becomes one line on stderr and an exit code."""
    try:
        with _sigterm_raises():
            return handler(args)
    except (KMQError, CommandError, OutputExistsError) as exc:
        _fail(str(exc))
    except BrokenPipeError as exc:
        if exc.filename is not None:  # an output file's reader went away (a named pipe): that output failed
            _fail(_os_error_message(exc))
            return EXIT_FAILURE
        # stdout's reader went away (e.g. `kmcodec info x.kmq | head`): not an error of ours, say nothing
        _silence_stdout()
        return EXIT_OK
    except OSError as exc:
        _fail(_os_error_message(exc))
    except KeyboardInterrupt:
        _fail("interrupted")
        return EXIT_INTERRUPTED
    except Terminated:
        _fail("terminated")
        return EXIT_TERMINATED
    except MemoryError:
        _fail("out of memory")
    return EXIT_FAILURE


def _silence_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush does not fail on the closed pipe again."""
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass


def _fail(message: str) -> None:
    print(f"kmcodec: error: {message}", file=sys.stderr)


def _os_error_message(exc: OSError) -> str:
    where = exc.filename if exc.filename is not None else ""
    reason = exc.strerror or str(exc)
    return f"{where}: {reason}" if where else reason


def _check_output(path: Path, force: bool) -> None:
    """Refuse an output that exists (without --force), is a directory, or has no writable directory. With
    --force a symbolic link is followed and a device or FIFO written into, as the shell's `>` does."""
    if (path.exists() or path.is_symlink()) and not force:
        raise CommandError(f"{path}: output exists (use --force to replace it)")
    if is_special_file(path):
        return  # written into (atomic_output), nothing is created beside it
    resolved = Path(os.path.realpath(path)) if path.is_symlink() else path
    if resolved.is_dir():
        raise CommandError(f"{path}: is a directory")
    parent = resolved.parent if str(resolved.parent) else Path(".")
    if not parent.is_dir():
        raise CommandError(f"{path}: directory {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise CommandError(f"{path}: directory {parent} is not writable")


def _with_name(path: Path, exc: KMQError) -> KMQError:
    text = str(exc)
    return exc if text.startswith(str(path)) else type(exc)(f"{path}: {text}")


#: Output names encode refuses: a .kmq file under a picture's name would fool every viewer (and the user).
#: Every extension of a format Pillow writes (tests/test_cli_paths_and_pipes.py keeps it in step with
#: Pillow's registry), and those of common plugins (HEIF, JPEG XL). Static, as importing Pillow to ask
#: would delay the input's decode (prefetch.py) by ~12 ms.
PICTURE_SUFFIXES = frozenset(
    (".png", ".apng", ".jpg", ".jpeg", ".jpe", ".jfif", ".mpo", ".gif", ".webp", ".bmp", ".dib", ".tif", ".tiff",
     ".ppm", ".pgm", ".pbm", ".pnm", ".pfm", ".tga", ".avif", ".avifs", ".heic", ".heif", ".jxl", ".jp2", ".j2k",
     ".j2c", ".jpc", ".jpf", ".jpx", ".ico", ".icns", ".pcx", ".sgi", ".bw", ".rgb", ".rgba", ".qoi", ".dds",
     ".blp", ".im", ".msp", ".palm", ".xbm", ".pdf", ".eps", ".ps", ".icb", ".vda", ".vst", ".emf",
     ".wmf", ".h5", ".hdf", ".grib", ".bufr")
)

#: The interpreter's thread switch interval (s) while encode's input is decoded beside the imports.
PREFETCH_SWITCH_INTERVAL = 0.0002


def cmd_encode(args: argparse.Namespace) -> int:
    """kmcodec encode IN OUT -k K (or --quality / --max-bytes), or the batch form with -d OUTDIR."""
    if args.out_dir is not None:
        return _run_batch(args, "encode")
    _check_output(args.output, args.force)
    suffix = args.output.suffix.lower()
    if suffix in PICTURE_SUFFIXES:
        raise CommandError(
            f"{args.output}: encode writes a .kmq file, not {suffix}: name it {args.output.stem}.kmq "
            f"(kmcodec decode then turns it into {suffix})"
        )
    if not args.input.exists():
        raise CommandError(f"{args.input}: no such file")
    if args.input.is_dir():
        raise CommandError(f"{args.input}: is a directory, not an image")
    # A named pipe or `<(...)` can be read once only: it is not prefetched (prefetch.py) but read whole
    # below. A device is left to Pillow, which reads just what it needs to say whether it is a picture.
    status = args.input.stat()
    read_once = stat.S_ISFIFO(status.st_mode) or stat.S_ISSOCK(status.st_mode)
    input_bytes = status.st_size if stat.S_ISREG(status.st_mode) else 0  # 0: not known, not shown
    started = time.perf_counter()
    from .prefetch import PicturePrefetch

    # While the imports run, the prefetch thread needs the GIL back between Pillow's decode calls (one per
    # 64 KB of PNG data); a 0.2 ms switch interval instead of 5 ms hands it over sooner (2-4 % of a 4 MP
    # encode, interleaved runs). This process's own setting, restored once the picture is in.
    switch_interval = sys.getswitchinterval()
    sys.setswitchinterval(PREFETCH_SWITCH_INTERVAL)
    try:
        prefetch = PicturePrefetch(args.input, args.max_pixels)  # decodes while the codec's imports run
        from .autok import quantize_and_encode
        from .codings import CODINGS
        from .imageio import load_pixels

        picture = prefetch.result()
    finally:
        sys.setswitchinterval(switch_interval)
    packed = prefetch.pixels()
    source = packed if packed is not None else picture if picture is not None else args.input
    if source is args.input and read_once:
        source = _read_once(args.input, args.max_pixels)
        input_bytes = len(source)
    try:
        image, data, choice = quantize_and_encode(
            load_pixels(source, name=str(args.input), max_pixels=args.max_pixels),
            k=args.k, quality=args.quality, max_bytes=args.max_bytes, max_k=args.max_k, coding=args.coding,
            seed=args.seed, engine=args.engine, quantize_options=_quantize_options(args),
            histogram=prefetch.histogram() if source is packed else None,
        )
    except KMQError as exc:
        raise _with_name(args.input, exc) from None
    finally:
        if picture is not None:
            picture.close()
    with atomic_output(args.output, overwrite=args.force) as handle:
        handle.write(data)
    if not args.quiet:
        elapsed = time.perf_counter() - started
        raw = image.width * image.height * image.channels
        print(
            f"{args.input} -> {args.output}: {image.width}x{image.height} {image.mode}, k={image.k}, "
            f"{image.label_bits} bits/pixel raw, coding {CODINGS[data[10]].name}, {len(data):,} bytes "
            f"({len(data) / raw:.3f}x {8 * image.channels}-bit raw"
            + (f", {len(data) / input_bytes:.3f}x input" if input_bytes else "")
            + f"), {elapsed:.2f} s"
        )
        if choice is not None:
            print(f"auto-k: {choice.describe()}")
    return EXIT_OK


#: A piped input may hold at most this many bytes a pixel of the pixel limit (16-bit RGBA is 8), plus room for
#: metadata: more cannot be a picture within the limit, and the pipe might never end.
PIPED_BYTES_PER_PIXEL = 8
PIPED_SLACK_BYTES = 64 << 20


def _read_once(path: Path, max_pixels: int | None) -> bytes:
    """The whole of an input that can be read only once (a named pipe, `<(...)`, a socket): read here into
    memory, rather than opened again by each reader (the second open would wait for a writer forever), and
    only up to what a picture within the pixel limit can take (`<(cat /dev/zero)` must not fill the memory)."""
    if max_pixels is None:
        from PIL import Image

        max_pixels = Image.MAX_IMAGE_PIXELS or DEFAULT_MAX_PIXELS
    limit = PIPED_BYTES_PER_PIXEL * max_pixels + PIPED_SLACK_BYTES
    try:
        with open(path, "rb") as handle:
            data = handle.read(limit + 1)
    except OSError as exc:
        raise CommandError(f"{path}: cannot read the input: {exc.strerror or exc}") from None
    if len(data) > limit:
        raise CommandError(
            f"{path}: the piped input goes on past {limit:,} bytes, more than a picture of at most {max_pixels:,} "
            "pixels takes (raise --max-pixels for a trusted larger image)"
        )
    return data


def cmd_decode(args: argparse.Namespace) -> int:
    """kmcodec decode IN.kmq OUT.png, or the batch form with -d OUTDIR."""
    if args.out_dir is not None:
        return _run_batch(args, "decode")
    _check_output(args.output, args.force)
    from . import api
    from .picture import picture_format, save_picture

    is_kmq = args.output.suffix.lower() == ".kmq"
    try:
        image_format = None if is_kmq else picture_format(args.output.suffix)
    except KMQError as exc:
        raise _with_name(args.output, exc) from None
    try:
        image = api.read(args.input, max_pixels=args.max_pixels)
    except KMQError as exc:
        raise _with_name(args.input, exc) from None
    if image_format is None:
        with atomic_output(args.output, overwrite=args.force) as handle:
            handle.write(api.encode(image))
    else:
        save_picture(image, args.output, image_format, overwrite=args.force)
    if not args.quiet:
        print(f"{args.input} -> {args.output}: {image.width}x{image.height} {image.mode}, k={image.k}")
    return EXIT_OK


def _run_batch(args: argparse.Namespace, kind: str) -> int:
    """The batch form: plan outputs, run them with a progress bar, print per-file lines and a summary."""
    from . import batch  # multiprocessing and concurrent.futures: only the batch form pays for them
    from .picture import picture_format
    from .progress import ProgressBar

    if kind == "encode":
        options: batch.EncodeOptions | batch.DecodeOptions = batch.EncodeOptions(
            k=args.k, quality=args.quality, max_bytes=args.max_bytes, max_k=args.max_k, coding=args.coding,
            seed=args.seed, engine=args.engine, force=args.force, max_pixels=args.max_pixels,
            quantize_options=tuple(_quantize_options(args).items()),
        )
        suffix, wanted, verb = ".kmq", batch.encodable, "encoded"
    else:
        extension = (args.image_format or "png").lower().lstrip(".")
        picture_format(extension)  # main() has refused an unknown --format as a usage error
        options = batch.DecodeOptions(image_format=extension, max_pixels=args.max_pixels, force=args.force)
        suffix, wanted, verb = "." + extension, batch.decodable, "decoded"
    jobs = args.jobs or available_cores()
    _make_out_dir(args.out_dir)
    tasks, refused = batch.plan(
        args.paths, args.out_dir, suffix=suffix, options=options, recursive=args.recursive, wanted=wanted
    )
    bar = ProgressBar(len(tasks), sys.stderr, enabled=ProgressBar.wanted(sys.stderr, args.quiet), label=kind)
    for result in refused:
        _fail(result.error)

    def report(result: batch.FileResult) -> None:
        bar.advance(bytes_in=result.bytes_in, failed=not result.ok, name=Path(result.source_name).name)
        if not result.ok:
            bar.message(f"kmcodec: error: {result.error}", sys.stderr)
        elif not args.quiet:
            bar.message(result.detail, sys.stdout)

    started = time.perf_counter()
    try:
        results = batch.run_tasks(tasks, report, jobs=jobs, scheduler=args.scheduler)
    finally:
        bar.close()
    summary = batch.summarize(refused + results, time.perf_counter() - started)
    if not args.quiet:
        workers = 1 if jobs <= 1 or len(tasks) <= 1 else min(jobs, len(tasks))
        where = f"Dask ({args.scheduler})" if args.scheduler else f"{workers} process{'es' if workers > 1 else ''}"
        print(summary.describe(verb, where))
    return EXIT_FAILURE if summary.failed else EXIT_OK


def _make_out_dir(out_dir: Path) -> None:
    """Create an output directory (a batch's OUTDIR, demo's --out) and its parents unless it is a directory
    already; refuse it, or one of its parents, existing as something else (os.mkdir would say only 'File
    exists')."""
    for place in (out_dir, *out_dir.parents):
        if place.is_dir():
            break
        if place.is_file():
            problem = "is a file, not a directory"
        elif place.exists():
            problem = "is not a directory"  # a device, a named pipe, a socket
        elif place.is_symlink():
            problem = "is a symbolic link to nothing, not a directory"
        else:
            continue  # to be created
        raise CommandError(f"{out_dir}: {problem}" if place == out_dir else f"{out_dir}: {place} {problem}")
    out_dir.mkdir(parents=True, exist_ok=True)


#: encode options that go to the quantizer as they are, when the parser has them
QUANTIZER_OPTIONS = ("space", "speed", "dither", "rdo")


def _quantize_options(args: argparse.Namespace) -> dict[str, object]:
    """The quantizer's own options (colour space, speed, dithering, rdo) given on the command line, if any."""
    return {name: getattr(args, name) for name in QUANTIZER_OPTIONS if hasattr(args, name)}


def cmd_compare(args: argparse.Namespace) -> int:
    """kmcodec compare IN -k 4 8 16 -o report.html|.png: pictures, palettes, a table and a rate-distortion plot."""
    from . import report

    kind = args.output.suffix.lower()
    if kind not in (".html", ".htm", ".png"):
        raise CommandError(f"{args.output}: the report is .html or .png")
    _check_output(args.output, args.force)
    if not args.input.exists():
        raise CommandError(f"{args.input}: no such file")
    if kind == ".png" and not report.plotting_available():
        raise CommandError(f"{args.output}: a PNG report needs matplotlib: {report.PLOT_HINT}")
    try:
        comparison = report.compare(
            args.input, sorted(set(args.ks)), coding=args.coding, seed=args.seed, engine=args.engine, rdo=args.rdo
        )
    except KMQError as exc:
        raise _with_name(args.input, exc) from None
    if kind == ".png":
        report.write_png(comparison, args.output, preview=args.preview, overwrite=args.force)
    else:
        report.write_html(comparison, args.output, preview=args.preview, overwrite=args.force)
        if not report.plotting_available():
            print(f"kmcodec: note: the report has no rate-distortion plot; {report.PLOT_HINT}", file=sys.stderr)
    if not args.quiet:
        print(report.text_table(comparison))
        print(f"report: {args.output}")
    return EXIT_OK


def storage_figures(header: Header, file_size: int, source_size: int | None = None) -> dict[str, float | int]:
    """The storage argument: bits per pixel and the file's size against raw pixels and the source."""
    pixels = header.width * header.height
    raw24 = pixels * 3
    raw_native = pixels * header.channels
    figures: dict[str, float | int] = {
        "file_bytes": file_size,
        "bits_per_pixel_labels": header.label_bits,
        "bits_per_pixel_file": 8 * file_size / pixels,
        "raw_rgb_bytes": raw24,
        "ratio_to_raw_rgb": file_size / raw24,
        f"raw_{8 * header.channels}bit_bytes": raw_native,
    }
    if header.channels == 4:
        figures["ratio_to_raw_rgba"] = file_size / raw_native
    if source_size is not None:
        figures["source_bytes"] = source_size
        figures["ratio_to_source"] = file_size / source_size
    return figures


def cmd_info(args: argparse.Namespace) -> int:
    """kmcodec info FILE.kmq: header, palette and storage figures (after a full integrity check).

    A file of a coding this decoder does not know (a later revision's) is checked as far as it can be (its
    length and CRCs); an intact one has its header reported, as spec section 5 promises, then info fails,
    since its labels cannot be decoded. Damage is reported as damage, whatever the coding.
    """
    from .codings import CODINGS
    from .image import label_counts

    source_size = _source_size(args.source) if args.source is not None else None
    header, image = _read_kmq_once(args.input, args.max_pixels)
    known = header.coding in CODINGS
    coding = CODINGS[header.coding].name if known else "unknown"
    mode = "RGBA" if header.channels == 4 else "RGB"
    header_record: dict[str, object] = {
        "file": str(args.input),
        "version": header.version,
        "width": header.width,
        "height": header.height,
        "channels": header.channels,
        "mode": mode,
        "k": header.k,
        "label_bits": header.label_bits,
        "coding": coding,
        "coding_id": header.coding,
        "payload_bytes": header.payload_length,
    }
    header_lines = [
        f"file:           {args.input}",
        f"format:         KMQ version {header.version}, coding {header.coding} ({coding})",
        f"size:           {header.width} x {header.height} = {header.width * header.height:,} pixels, {mode}",
        f"palette:        k = {header.k}, {header.label_bits} bits per label",
        f"payload:        {header.payload_length:,} bytes",
    ]
    if image is None:
        _print_info(header_record if args.json else header_lines)
        sys.stdout.flush()  # the header before the error line, where both go to one file
        codings = ", ".join(f"{number} ({each.name})" for number, each in sorted(CODINGS.items()))
        raise CommandError(
            f"{args.input}: the container is intact (its length and CRCs check), but coding {header.coding} "
            f"is unknown to this decoder (it knows {codings}), so the labels cannot be decoded"
        )
    file_size = header.file_size  # what was read: decoding refuses a file shorter or longer
    figures = storage_figures(header, file_size, source_size)
    layout = _band_layout(args.input, header)
    if layout is not None:
        header_record["layout"] = layout
        header_lines.append(_layout_line(layout))
    used = label_counts(image.labels, image.k)
    palette_hex = ["#" + entry.tobytes().hex() for entry in image.palette]
    if args.json:
        _print_info({**header_record, "palette": palette_hex, "palette_pixel_counts": used.tolist(), **figures})
        return EXIT_OK
    lines = [
        *header_lines,
        f"file:           {file_size:,} bytes = {figures['bits_per_pixel_file']:.3f} bits per pixel",
        f"vs 24-bit raw:  {figures['raw_rgb_bytes']:,} bytes -> {figures['ratio_to_raw_rgb']:.4f}x "
        f"({1 / figures['ratio_to_raw_rgb']:.1f}:1)",
    ]
    if header.channels == 4:
        lines.append(
            f"vs 32-bit raw:  {figures['raw_32bit_bytes']:,} bytes -> {figures['ratio_to_raw_rgba']:.4f}x"
        )
    if source_size is not None:
        lines.append(f"vs source:      {source_size:,} bytes ({args.source}) -> {figures['ratio_to_source']:.4f}x")
    lines.append("palette entries (colour: pixels):")
    for index, (colour, count) in enumerate(zip(palette_hex, used.tolist())):
        lines.append(f"  {index:5d} {colour}: {count:,}")
    _print_info(lines)
    return EXIT_OK


def _band_layout(path: Path, header: Header) -> dict | None:
    """The bands of a banded context payload (codings.band_layout), read again from a regular file: a named
    pipe, read once, gives none."""
    from .codings import LAYOUT_PREFIX_BYTES, band_layout
    from .container import HEADER_SIZE

    if not path.is_file():
        return None
    with open(path, "rb") as handle:
        handle.seek(HEADER_SIZE + header.k * header.channels)
        return band_layout(handle.read(min(LAYOUT_PREFIX_BYTES, header.payload_length)), header)


def _layout_line(layout: dict) -> str:
    """'layout: 2 bands by columns (1123 + 925 columns), model 6': how the decoder's threads share the image."""
    heights, unit = layout["band_heights"], layout["orientation"]
    count = f"{len(heights)} band{'s' if len(heights) > 1 else ''} by {unit}"
    if len(heights) > 1:
        shown = " + ".join(map(str, heights[:8])) + (f" + … ({len(heights) - 8} more)" if len(heights) > 8 else "")
        count += f" ({shown} {unit})"
    return f"layout:         {count}, model {layout['model']}"


#: No limit on the pixel count a header may declare, where nothing is decoded (api.read_header's own).
_NO_PIXEL_LIMIT = 2**64


def _read_kmq_once(path: Path, max_pixels: int) -> tuple[Header, KMQImage | None]:
    """The header and the decoded image of a .kmq file, read through one open (a named pipe can be read once).

    A coding this decoder does not know gives no image (None), only after its container has been read and
    checked (length, trailer CRC, nothing after the end), which needs no knowledge of the coding.
    """
    from . import api
    from .codings import CODINGS
    from .container import HEADER_SIZE, read_container, read_up_to

    with open(path, "rb") as handle:
        head = read_up_to(handle, HEADER_SIZE)
        stream = _Replayed(head, handle)
        try:
            header = api.read_header(head)
            if header.coding in CODINGS:
                return header, api.decode(stream, max_pixels=max_pixels)
            # no payload-length check: an unknown coding's payload may have any length
            read_container(stream, max_pixels=_NO_PIXEL_LIMIT, check_payload_length=None)
            return header, None
        except KMQError as exc:
            raise _with_name(path, exc) from None


class _Replayed:
    """A binary reader giving `head`, bytes already read from `rest`, again and then the rest of `rest`: a
    file that can be read once is parsed from its start after its header was looked at."""

    def __init__(self, head: bytes, rest: BinaryIO) -> None:
        self._head = head
        self._rest = rest

    def read(self, size: int | None = -1) -> bytes:
        """Up to `size` bytes (all that is left if size is None or negative); short reads are allowed."""
        if not self._head:
            return self._rest.read(size)
        if size is None or size < 0:
            data, self._head = self._head + self._rest.read(), b""
        else:
            data, self._head = self._head[:size], self._head[size:]
        return data


def _print_info(report: dict[str, object] | list[str]) -> None:
    """info's output: a JSON record, or lines for people."""
    if isinstance(report, dict):
        import json  # only --json needs it

        print(json.dumps(report, indent=2))
    else:
        print("\n".join(report))


def _source_size(source: Path) -> int:
    """The size of info's --source, which must be a regular file (a directory's size says nothing of an image)."""
    if not source.exists():
        raise CommandError(f"{source}: no such file (--source)")
    if source.is_dir():
        raise CommandError(f"{source}: is a directory, not a file (--source)")
    if not source.is_file():
        raise CommandError(f"{source}: is not a regular file (--source)")
    return source.stat().st_size


def cmd_demo(args: argparse.Namespace) -> int:
    """Encode scikit-learn's china.jpg at several k and print the storage argument with real numbers."""
    if args.out:  # checked before any work or output, as encode does; a new directory (and its parents) is made
        if args.out.is_dir():
            for k in args.ks:
                for suffix in (".kmq", ".png"):
                    _check_output(args.out / f"china-k{k}{suffix}", args.force)
        _make_out_dir(args.out)
    import numpy as np
    import sklearn.datasets
    from sklearn.datasets import load_sample_image

    from . import api

    source = Path(sklearn.datasets.__file__).parent / "images" / "china.jpg"
    pixels = load_sample_image("china.jpg")
    height, width, _ = pixels.shape
    raw = width * height * 3
    source_size = source.stat().st_size if source.exists() else None
    print(f"china.jpg (scikit-learn sample): {width} x {height} = {width * height:,} pixels")
    print(f"24-bit raw pixels: {raw:,} bytes" + (f"; the JPEG: {source_size:,} bytes" if source_size else ""))
    print()
    print(
        f"{'k':>6} {'bits/px':>7} {'raw .kmq':>11} {'vs raw':>7} {'vs JPEG':>8} "
        f"{'compact .kmq':>13} {'bits/px':>7} {'PSNR dB':>8} {'time s':>7}"
    )
    for k in args.ks:
        started = time.perf_counter()
        image = api.quantize(pixels, k)
        data = api.encode(image, coding="raw")  # the storage argument of the bit-packed labels
        elapsed = time.perf_counter() - started
        decoded = api.decode(data).to_array()
        mse = float(np.mean((decoded.astype(np.float64) - pixels) ** 2))
        psnr = float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)
        compact = api.encode(image)  # the default coding (auto): what `kmcodec encode` writes
        vs_jpeg = f"{len(data) / source_size:8.3f}" if source_size else f"{'-':>8}"
        print(
            f"{k:>6} {image.label_bits:>7} {len(data):>11,} {len(data) / raw:>7.3f} {vs_jpeg} "
            f"{len(compact):>13,} {8 * len(compact) / (width * height):>7.2f} {psnr:>8.2f} {elapsed:>7.2f}"
        )
        if args.out:
            with atomic_output(args.out / f"china-k{k}.kmq", overwrite=args.force) as handle:
                handle.write(data)
            with atomic_output(args.out / f"china-k{k}.png", overwrite=args.force) as handle:
                image.to_pil().save(handle, format="PNG")
    print()
    print("Each pixel costs exactly ceil(log2 k) bits: 24-bit colour at k = 8 is 3 bits, an 8:1 saving before any")
    print("entropy coding; the palette (3k bytes) and the 40-byte header and trailer are the only overhead.")
    print("The compact column is the default coding (auto: the context coder here), which `kmcodec encode` writes.")
    return EXIT_OK


def limit_blas_threads(environ: dict | None = None) -> None:
    """Ask numpy's OpenBLAS for one thread, unless the user chose a number: the command line never calls BLAS.

    At import OpenBLAS starts a thread per core that spins for ~80 ms of CPU; on two cores that competes
    with the input decode and the quantizer's threads (4 MP encodes: 90-100 ms less CPU, 5-7 % less wall
    time with one BLAS thread). Must run before numpy is imported, so run() calls it first.
    """
    (os.environ if environ is None else environ).setdefault("OPENBLAS_NUM_THREADS", "1")


def run() -> None:
    """Run the command and end the process; the console script and `python -m kmcodec` call it through
    kmcodec.console.run, which also reports a Ctrl-C that comes before main() handles it."""
    limit_blas_threads()
    exit_without_teardown(main())


def exit_without_teardown(code: int) -> NoReturn:
    """Flush stdout and stderr, then end the process at once, skipping the interpreter's teardown.

    Tearing down numpy, Pillow and the codec's modules takes about 20 ms, 4 % of a 4 MP encode, and
    the command line needs none of it: main has closed and renamed its outputs and joined its threads
    before it returns. A reader that closed the pipe early is not an error (as in main); a stdout that
    cannot take the last of the output (a full disk) is.
    """
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        pass
    except OSError as exc:
        _fail(f"stdout: {_os_error_message(exc)}")
        code = code or EXIT_FAILURE
    except ValueError:  # stdout was closed
        pass
    try:
        sys.stderr.flush()
    except (OSError, ValueError):
        pass
    os._exit(code)
