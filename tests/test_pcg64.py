"""kmcodec.pcg64 draws exactly np.random.default_rng's numbers, and the encoder no longer imports numpy.random."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from kmcodec.kmeans import kmeans_plus_plus
from kmcodec.pcg64 import Pcg64Stream, seed_sequence_state

ROOT = Path(__file__).resolve().parent.parent

# one-word seeds at the edges, seeds past 32 bits (k-means++ adds the attempt number to a 32-bit seed), a long one
SEEDS = [0, 1, 2, 7, 12345, 2**31, 2**32 - 1, 2**32, 2**32 + 3, 2**64 - 1, 2**64 + 3, 2**130 + 99]


@pytest.mark.parametrize("seed", SEEDS)
def test_seed_sequence_state_matches_numpy(seed: int) -> None:
    expected = np.random.SeedSequence(seed).generate_state(4, np.uint64).tolist()
    assert seed_sequence_state(seed, 4) == expected


@pytest.mark.parametrize("seed", SEEDS)
def test_uniforms_match_default_rng(seed: int) -> None:
    expected = np.random.default_rng(seed).random(2000)
    drawn = np.array(Pcg64Stream(seed).random(2000))
    assert np.array_equal(drawn, expected)  # bit for bit, not approximately


def test_uniforms_match_default_rng_for_random_seeds() -> None:
    for seed in np.random.default_rng(11).integers(0, 2**63, 200).tolist():
        assert Pcg64Stream(seed).random(5) == np.random.default_rng(seed).random(5).tolist()


def test_a_stream_continues_where_it_stopped() -> None:
    stream = Pcg64Stream(42)
    assert stream.random(3) + stream.random(4) == np.random.default_rng(42).random(7).tolist()


def test_negative_seed_is_refused_like_numpy() -> None:
    with pytest.raises(ValueError):
        np.random.SeedSequence(-1)
    with pytest.raises(ValueError):
        Pcg64Stream(-1)


def _numpy_random_plus_plus_draws(weights: np.ndarray, k: int, seed: int) -> tuple[int, np.ndarray]:
    """What kmeans_plus_plus drew with numpy.random before: the first centre and the trial uniforms."""
    rng = np.random.default_rng(seed)
    first = int(rng.choice(weights.size, p=weights / weights.sum()))
    return first, rng.random((k - 1) * (2 + int(np.log(k))))


def test_kmeans_plus_plus_picks_the_centres_numpy_random_picked(monkeypatch: pytest.MonkeyPatch) -> None:
    from kmcodec import fastpath, kmeans

    generator = np.random.default_rng(3)
    for _ in range(40):
        n = int(generator.integers(50, 2000))
        k = int(generator.integers(2, 80))
        points = generator.random((n, 3)) * 255
        weights = generator.integers(1, 10 ** int(generator.integers(1, 7)), n).astype(np.float64)
        seed = int(generator.integers(0, 2**32))
        seen = {}

        def record(x, w, k_, first, uniforms, trials):
            seen["first"], seen["uniforms"] = first, uniforms
            return None  # then the numpy path picks the centres

        monkeypatch.setattr(fastpath, "kmeans_plus_plus", record)
        centres = kmeans.kmeans_plus_plus(points, weights, k, seed)
        first, uniforms = _numpy_random_plus_plus_draws(weights, k, seed)
        assert seen["first"] == first and np.array_equal(seen["uniforms"], uniforms)
        assert np.array_equal(centres[0], points[first])
        monkeypatch.undo()
        assert np.array_equal(kmeans_plus_plus(points, weights, k, seed), centres)  # the C path agrees


def _numpy_random_modules_after(code: str) -> str:
    report = "; import sys; sys.stdout.write(str(sorted(m for m in sys.modules if m.startswith('numpy.random'))))"
    done = subprocess.run([sys.executable, "-c", code + report], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_encoding_imports_no_more_of_numpy_random_than_numpy_itself(tmp_path: Path, china_path: Path) -> None:
    """numpy 2 loads numpy.random on first use, so an encode loads none of it; numpy 1 loads it with numpy."""
    after_encode = _numpy_random_modules_after(
        f"from kmcodec.cli import main; main(['encode', {str(china_path)!r}, {str(tmp_path / 'out.kmq')!r}, '-k', '16', '-q'])"
    )
    assert (tmp_path / "out.kmq").stat().st_size > 0
    assert after_encode == _numpy_random_modules_after("import numpy")
    if int(np.__version__.split(".")[0]) >= 2:
        assert after_encode == "[]"
