#!/usr/bin/env python3
"""Long fuzzing campaign against the .kmq decoder: reports inputs tried, crashes, hangs and peak memory.

    python tools/fuzz.py --runs 100000                 # atheris (libFuzzer, coverage-guided) if installed
    python tools/fuzz.py --runs 100000 --engine mutate # seeded mutation loop, no extra dependency

Seeds are valid files of every registered coding (kmcodec.codings.CODINGS), built
from scikit-learn's china.jpg and synthetic palettes. Mutations: libFuzzer's own
(atheris) mixed with structure-aware ones from tests/fuzzing.py (bit flips,
truncations, insertions, deletions, header field edits with a recomputed header
CRC, palette/payload edits with a recomputed trailer CRC).

A *crash* is any exception that is not a KMQError; a *safety-net catch* is a
KMQError that api.decode made out of a foreign exception a coding raised (the
coding should raise a KMQError itself); a *hang* is an input that took longer
than 1 s per MB of input plus declared image (n x channels bytes; at least HANG_FLOOR seconds) in the median of three
more timings (a single slow run on a busy machine is counted as a stall). Crashing and hanging
inputs are saved to --out. Memory: the process's peak RSS, and the tracemalloc
peak of every --trace-every'th decode against its input plus declared image bytes.
Time figures of inputs that were re-timed are the re-timed median.
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import json
import random
import resource
import sys
import time
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

HANG_FLOOR = 0.1


def _message_shape(message: str) -> str:
    """'header: channels is 7 at offset 9' -> 'header-channels': the section and the first word of the problem."""
    section, _, rest = message.partition(": ")
    words = [w for w in rest.replace("(", " ").split() if w.isalpha() or "_" in w]
    return "-".join([section.split()[0] if section else "?", *(words[:1])])


class Campaign:
    """Runs inputs through the decoder and keeps the tallies the report prints."""

    def __init__(self, out: Path, max_pixels: int, trace_every: int) -> None:
        from kmcodec import api
        from kmcodec.errors import KMQError

        self.api = api
        self.KMQError = KMQError
        self.out = out
        self.max_pixels = max_pixels
        self.trace_every = trace_every
        self.tried = 0
        self.outcomes: collections.Counter[str] = collections.Counter()
        self.by_coding: collections.Counter[int] = collections.Counter()
        self.crashes: dict[str, bytes] = {}
        self.crash_count = 0
        self.net_catches: dict[str, bytes] = {}
        self.net_count = 0
        self.hangs: list[tuple[float, int]] = []
        self.stalls = 0  # over the bound once, well under it when timed again
        self.slowest = (0.0, 0)  # seconds, input size
        self.worst_rate = 0.0  # seconds per MB, inputs of at least 64 KB
        self.traced = 0
        self.trace_peak = 0
        self.trace_worst_ratio = 0.0  # peak / (input + declared image) bytes
        self.examples: dict[str, bytes] = {}  # first input per error kind and section, for the conformance suite
        self.started = time.perf_counter()
        self.report_at = 0  # atheris: report when this many inputs have run
        self.baseline_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    def run(self, data: bytes) -> None:
        """Decode one input and record what happened."""
        self.tried += 1
        if len(data) > 10:
            self.by_coding[data[10]] += 1
        trace = self.trace_every and self.tried % self.trace_every == 0
        if trace:
            tracemalloc.start()
        began = time.perf_counter()
        pixels = 0
        try:
            image = self.api.decode(data, max_pixels=self.max_pixels)
            pixels = image.width * image.height * image.channels
            self.outcomes["decoded"] += 1
        except self.KMQError as exc:
            self.outcomes[exc.kind] += 1
            cause = exc.__cause__
            if cause is not None and not isinstance(cause, self.KMQError):
                self.net_count += 1
                self.net_catches.setdefault(f"{type(cause).__name__}: {str(cause)[:80]}", data)
            self.examples.setdefault(f"{exc.kind}/{_message_shape(str(exc))}", data)
        except Exception as exc:  # noqa: BLE001 - a crash is what we are looking for
            self.crash_count += 1
            key = f"{type(exc).__name__}: {str(exc)[:100]}"
            if key not in self.crashes:
                self.crashes[key] = data
                self.save("crash", data)
        elapsed = time.perf_counter() - began
        work = self.work_bytes(data)
        if trace:
            _, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
            self.traced += 1
            self.trace_peak = max(self.trace_peak, peak)
            self.trace_worst_ratio = max(self.trace_worst_ratio, peak / (work + 65536))
        bound = max(HANG_FLOOR, work / 1e6)
        if elapsed > bound:
            # on a busy machine a scheduler stall looks like a hang: confirm by timing the input again
            elapsed = sorted(self._time_once(data) for _ in range(3))[1]
            if elapsed > bound:
                self.hangs.append((elapsed, len(data)))
                self.save("hang", data)
            else:
                self.stalls += 1
        if elapsed > self.slowest[0]:
            self.slowest = (elapsed, len(data))
        if work >= 65536:
            self.worst_rate = max(self.worst_rate, elapsed / (work / 1e6))
        if self.tried == self.report_at:  # libFuzzer exits without running atexit handlers: report here
            self.report()

    def work_bytes(self, data: bytes) -> int:
        """Input plus declared image bytes: the time bound is 1 s per MB of both (see tests/fuzzing.py)."""
        import fuzzing

        return fuzzing.work_bytes(data, self.max_pixels)

    def _time_once(self, data: bytes) -> float:
        began = time.perf_counter()
        try:
            self.api.decode(data, max_pixels=self.max_pixels)
        except Exception:  # noqa: BLE001 - only the time matters here; the first run classified it
            pass
        return time.perf_counter() - began

    def save(self, what: str, data: bytes) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / f"{what}-{hashlib.sha256(data).hexdigest()[:16]}.kmq").write_bytes(data)

    def report(self) -> dict:
        """The figures of the campaign, as a dict (also printed)."""
        from kmcodec.codings import CODINGS

        usage = resource.getrusage(resource.RUSAGE_SELF)
        figures = {
            "inputs": self.tried,
            "seconds": round(time.perf_counter() - self.started, 1),
            "inputs_per_coding": {CODINGS[c].name if c in CODINGS else f"id {c}": n
                                  for c, n in sorted(self.by_coding.items()) if c in CODINGS},
            "outcomes": dict(self.outcomes.most_common()),
            "crashes": self.crash_count,
            "distinct_crashes": list(self.crashes),
            "safety_net_catches": self.net_count,
            "distinct_safety_net_catches": list(self.net_catches),
            "hangs": len(self.hangs),
            "stalls_not_reproduced": self.stalls,
            "slowest_input_seconds": round(self.slowest[0], 4),
            "slowest_input_bytes": self.slowest[1],
            "worst_seconds_per_mb_of_input_and_image_over_64kb": round(self.worst_rate, 4),
            "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
            "rss_before_first_input_mb": round(self.baseline_rss_mb, 1),
            "traced_inputs": self.traced,
            "traced_peak_bytes": self.trace_peak,
            "traced_worst_peak_over_input_plus_declared_image": round(self.trace_worst_ratio, 3),
            "max_pixels": self.max_pixels,
        }
        self.out.mkdir(parents=True, exist_ok=True)
        examples = self.out / "examples"
        examples.mkdir(exist_ok=True)
        for key, data in self.examples.items():
            (examples / (key.replace("/", "-") + ".kmq")).write_bytes(data)
        (self.out / "report.json").write_text(json.dumps(figures, indent=2))
        print(json.dumps(figures, indent=2), flush=True)
        return figures


def seed_corpus() -> list[bytes]:
    import fuzzing
    from sklearn.datasets import load_sample_image

    return [data for _, data in fuzzing.seed_files(load_sample_image("china.jpg"), large=True)]


def run_mutate(campaign: Campaign, seeds: list[bytes], runs: int, seed: int) -> None:
    """Seeded mutation loop: each input is a seed with 1-4 structure-aware mutations."""
    import fuzzing

    rng = random.Random(seed)
    for _ in range(runs):
        _, data = fuzzing.mutate(rng.choice(seeds), rng)
        campaign.run(data)


def run_atheris(campaign: Campaign, seeds: list[bytes], runs: int, seed: int, corpus: Path) -> None:
    """libFuzzer via atheris: coverage-guided, with the structure-aware mutations mixed into its own."""
    import atheris

    import fuzzing

    corpus.mkdir(parents=True, exist_ok=True)
    for data in seeds:
        (corpus / f"seed-{hashlib.sha256(data).hexdigest()[:16]}").write_bytes(data)

    def mutator(data: bytes, max_size: int, mutation_seed: int) -> bytes:
        rng = random.Random(mutation_seed)
        choice = rng.random()
        if choice < 0.05 or not data:
            data = rng.choice(seeds)
        if choice < 0.45:
            return atheris.Mutate(data, max_size)
        _, mutated = fuzzing.mutate(data, rng)
        return mutated[:max_size]

    campaign.report_at = runs
    argv = [sys.argv[0], f"-runs={runs}", f"-seed={seed}", "-max_len=262144", "-rss_limit_mb=4096",
            "-print_final_stats=1", str(corpus)]
    atheris.Setup(argv, campaign.run, custom_mutator=mutator)
    atheris.Fuzz()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=100_000, help="inputs to try")
    parser.add_argument("--engine", choices=("auto", "atheris", "mutate"), default="auto")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--max-pixels", type=int, default=1 << 22, help="decoder limit during the campaign")
    parser.add_argument("--trace-every", type=int, default=50, help="tracemalloc every N-th input (0: never)")
    parser.add_argument("--out", type=Path, default=Path("fuzz-findings"), help="crashes, hangs, report.json")
    args = parser.parse_args()
    engine = args.engine
    if engine == "auto":
        try:
            import atheris  # noqa: F401

            engine = "atheris"
        except ImportError:
            engine = "mutate"
            print("fuzz: atheris is not installed; using the seeded mutation loop", file=sys.stderr)
    if engine == "atheris":
        import atheris

        with atheris.instrument_imports(include=["kmcodec"]):  # before anything imports kmcodec
            import kmcodec  # noqa: F401
    seeds = seed_corpus()
    campaign = Campaign(args.out, args.max_pixels, args.trace_every)
    print(f"fuzz: engine {engine}, {len(seeds)} seed files, {args.runs} runs, max_pixels {args.max_pixels}",
          file=sys.stderr, flush=True)
    if engine == "atheris":
        run_atheris(campaign, seeds, args.runs, args.seed, args.out / "corpus")
        return 0  # not reached: libFuzzer exits, the report runs at exit
    run_mutate(campaign, seeds, args.runs, args.seed)
    figures = campaign.report()
    return 1 if figures["crashes"] or figures["hangs"] else 0


if __name__ == "__main__":
    sys.exit(main())
